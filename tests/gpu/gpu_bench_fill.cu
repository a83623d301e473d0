// Device-side random fill for the benchmark's dense peer weights and
// activations (hundreds of MB: generating them on the host would dominate
// the run).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tests/gpu/gpu_bench_fill.h"

namespace qlayer::gputest {
namespace {

__device__ __forceinline__ uint32_t Hash(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

__global__ void FillKernel(uint16_t* p, size_t n, uint64_t seed, float scale, bool bf16) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const float u = (Hash(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f);
    const float v = (2.f * u - 1.f) * scale;
    if (bf16) {
      const __nv_bfloat16 b = __float2bfloat16_rn(v);
      p[i] = *reinterpret_cast<const uint16_t*>(&b);
    } else {
      const __half h = __float2half_rn(v);
      p[i] = *reinterpret_cast<const uint16_t*>(&h);
    }
  }
}

// Grid-stride 16-byte copy: the SM-driven copy rate (often above what the
// copy engines give for cudaMemcpy device-to-device).
__global__ void CopyKernel(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = __ldcs(src + i);
  }
}

}  // namespace

cudaError_t CopyWithSms(const void* src, void* dst, size_t bytes, int sms, cudaStream_t stream) {
  CopyKernel<<<sms * 8, 256, 0, stream>>>(static_cast<const uint4*>(src), static_cast<uint4*>(dst),
                                          bytes / 16);
  return cudaGetLastError();
}

cudaError_t FillRandom16(void* p, size_t n, uint64_t seed, float scale, bool bf16,
                         cudaStream_t stream) {
  FillKernel<<<1024, 256, 0, stream>>>(static_cast<uint16_t*>(p), n, seed, scale, bf16);
  return cudaGetLastError();
}

}  // namespace qlayer::gputest
