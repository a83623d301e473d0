// Dequantize-once kernels for the dense GEMM path: canonical weight ->
// dense [N, K] f16/bf16 (PyTorch Linear.weight layout, which cuBLAS reads as
// the transposed operand of its preferred "TN" GEMM), and a bias epilogue.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/device_ops.h"
#include "cuda/scale_load.cuh"

namespace qlayer::cuda {
namespace {

constexpr int kTile = 32;

// A 32 (k) x 32 (n) tile per block: read along n (the canonical layout's
// contiguous axis), transpose through shared memory, write along k.
template <typename T>
__global__ void DequantToDenseKernel(const DequantArgs a, T* dense) {
  __shared__ float tile[kTile][kTile + 1];
  const int k0 = blockIdx.x * kTile, n0 = blockIdx.y * kTile;
  const int pack = 32 / a.bits;
  const uint32_t mask = (1u << a.bits) - 1u;
  for (int kk = threadIdx.y; kk < kTile; kk += blockDim.y) {
    const int k = k0 + kk, n = n0 + threadIdx.x;
    float v = 0.f;
    if (k < a.K && n < a.N) {
      const int grp = a.g_idx != nullptr ? a.g_idx[k] : k / a.group_size;
      const size_t gi = static_cast<size_t>(grp) * a.N + n;
      const uint32_t word =
          static_cast<uint32_t>(a.qweight[static_cast<size_t>(k / pack) * a.N + n]);
      const int q = static_cast<int>((word >> (a.bits * (k % pack))) & mask);
      const int z = a.zeros != nullptr ? a.zeros[gi] : a.sym_zero;
      v = static_cast<float>(q - z) * LoadScale(a.scales, a.scale_kind, gi);
    }
    tile[threadIdx.x][kk] = v;
  }
  __syncthreads();
  for (int nn = threadIdx.y; nn < kTile; nn += blockDim.y) {
    const int n = n0 + nn, k = k0 + threadIdx.x;
    if (n < a.N && k < a.K) {
      const float v = tile[nn][threadIdx.x];
      if constexpr (sizeof(T) == 2 && std::is_same<T, __half>::value) {
        dense[static_cast<size_t>(n) * a.K + k] = __float2half_rn(v);
      } else {
        dense[static_cast<size_t>(n) * a.K + k] = __float2bfloat16_rn(v);
      }
    }
  }
}

template <typename T>
__global__ void AddBiasKernel(T* y, int M, int N, const float* bias) {
  const int64_t total = static_cast<int64_t>(M) * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = static_cast<float>(y[i]) + bias[i % N];
    if constexpr (std::is_same<T, __half>::value) {
      y[i] = __float2half_rn(v);
    } else {
      y[i] = __float2bfloat16_rn(v);
    }
  }
}

}  // namespace

cudaError_t LaunchDequantToDense(const DequantArgs& a, bool bf16, void* dense,
                                 cudaStream_t stream) {
  const dim3 grid((a.K + kTile - 1) / kTile, (a.N + kTile - 1) / kTile);
  const dim3 block(kTile, 8);
  if (bf16) {
    DequantToDenseKernel<<<grid, block, 0, stream>>>(a, static_cast<__nv_bfloat16*>(dense));
  } else {
    DequantToDenseKernel<<<grid, block, 0, stream>>>(a, static_cast<__half*>(dense));
  }
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(void* y, int M, int N, const float* bias, bool bf16,
                          cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(M) * N;
  const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 65535));
  if (total == 0) return cudaSuccess;
  if (bf16) {
    AddBiasKernel<<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(y), M, N, bias);
  } else {
    AddBiasKernel<<<blocks, 256, 0, stream>>>(static_cast<__half*>(y), M, N, bias);
  }
  return cudaGetLastError();
}

}  // namespace qlayer::cuda
