// Prepare-time repack for the mma decode kernel, on the GPU: canonical
// qweight [K/pack, N] -> tiles in the per-lane fragment order documented in
// mma_decode.cu, and canonical scales/zeros -> one record per (group, n16
// tile). Plus the run-time gather of activation columns (act-order, padding).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/device_ops.h"

namespace qlayer::cuda {
namespace {

// Canonical q of (permuted row kp, column n); 0 for padding.
__device__ __forceinline__ uint32_t FetchQ(const MmaLayoutArgs& l, const int32_t* qw,
                                           const int32_t* perm, int kp, int n) {
  if (n >= l.N || kp >= l.Kp) return 0;
  const int k = perm != nullptr ? perm[kp] : (kp < l.K ? kp : -1);
  if (k < 0) return 0;
  const int pack = 32 / l.bits;
  const uint32_t v = static_cast<uint32_t>(qw[static_cast<size_t>(k / pack) * l.N + n]);
  return (v >> (l.bits * (k % pack))) & ((1u << l.bits) - 1u);
}

// Tile index t in the packed order -> (nt, c): groups of 16 n16 tiles, each
// group's tiles side by side per chunk, chunks one after another.
__device__ __forceinline__ void TileAt(const MmaLayoutArgs& l, int64_t t, int* nt, int* c) {
  const int64_t per_group = static_cast<int64_t>(l.C) * kMmaGroupTiles;
  const int ng = static_cast<int>(t / per_group), rem = static_cast<int>(t % per_group);
  *c = rem / kMmaGroupTiles;
  *nt = ng * kMmaGroupTiles + rem % kMmaGroupTiles;
}

__global__ void RepackMmaWeightsKernel(const MmaLayoutArgs l, const int32_t* qw,
                                       const int32_t* perm, uint32_t* out, int64_t total) {
  for (int64_t wi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; wi < total;
       wi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t word = 0;
    if (l.bits == 4) {
      const int64_t tile = wi / 128;
      const int lane = static_cast<int>((wi / 4) % 32), j = static_cast<int>(wi % 4);
      int nt, c;
      TileAt(l, tile, &nt, &c);
      const int g = lane / 4, t = lane % 4;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        // Nibble i: odd nibbles are row g + 8; nibbles 4..7 are the k + 1
        // partner of nibbles 0..3; nibbles 2,3,6,7 are the k + 8 half.
        const int n = nt * 16 + g + (i & 1) * 8;
        const int kp = c * 64 + j * 16 + 2 * t + ((i >> 2) & 1) + ((i >> 1) & 1) * 8;
        word |= FetchQ(l, qw, perm, kp, n) << (4 * i);
      }
    } else {
      const int64_t tile = wi / 256;
      const int h = static_cast<int>((wi / 128) % 2);
      const int lane = static_cast<int>((wi / 4) % 32), w = static_cast<int>(wi % 4);
      const int j = 2 * h + w / 2, p = w % 2;
      int nt, c;
      TileAt(l, tile, &nt, &c);
      const int g = lane / 4, t = lane % 4;
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        // Byte b: odd bytes are row g + 8; bytes 2,3 the k + 1 partner; word
        // parity p selects the k + 8 half of the k16 step.
        const int n = nt * 16 + g + (b & 1) * 8;
        const int kp = c * 64 + j * 16 + 2 * t + (b >> 1) + 8 * p;
        word |= FetchQ(l, qw, perm, kp, n) << (8 * b);
      }
    }
    out[wi] = word;
  }
}

__global__ void BuildMmaRecordsKernel(const MmaLayoutArgs l, const void* scales,
                                      const int32_t* zeros, uint8_t* out) {
  const int64_t total = static_cast<int64_t>(l.ngroups) * l.NT * 16;
  const int ssz = l.scale_kind == kScaleF32 ? 4 : 2;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int r = static_cast<int>(i % 16);
    const int64_t rec = i / 16;  // = group * NT + nt
    const int grp = static_cast<int>(rec / l.NT), nt = static_cast<int>(rec % l.NT);
    const int n = nt * 16 + r;
    uint8_t* dst = out + rec * l.rec_bytes;
    const size_t src = static_cast<size_t>(grp) * l.N + n;
    if (ssz == 4) {
      reinterpret_cast<float*>(dst)[r] = n < l.N ? static_cast<const float*>(scales)[src] : 0.f;
    } else {
      reinterpret_cast<uint16_t*>(dst)[r] =
          n < l.N ? static_cast<const uint16_t*>(scales)[src] : uint16_t{0};
    }
    if (l.zeros) {
      reinterpret_cast<int16_t*>(dst + 16 * ssz)[r] =
          n < l.N ? static_cast<int16_t>(zeros[src]) : int16_t{0};
    }
  }
}

__global__ void GatherColumnsKernel(const uint16_t* x, int ldx, const int32_t* perm, int Kp,
                                    uint16_t* out) {
  const int m = blockIdx.y;
  for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < Kp; k += gridDim.x * blockDim.x) {
    const int src = perm[k];
    out[static_cast<size_t>(m) * Kp + k] =
        src >= 0 ? x[static_cast<size_t>(m) * ldx + src] : uint16_t{0};
  }
}

int GridFor(int64_t items, int threads) {
  return static_cast<int>(std::min<int64_t>((items + threads - 1) / threads, 65535 * 8));
}

}  // namespace

cudaError_t LaunchRepackMmaWeights(const MmaLayoutArgs& l, const int32_t* qweight,
                                   const int32_t* perm, void* packed, cudaStream_t stream) {
  const int64_t words = MmaPackedTiles(l) * 128 * (l.bits / 4);
  RepackMmaWeightsKernel<<<GridFor(words, 256), 256, 0, stream>>>(
      l, qweight, perm, static_cast<uint32_t*>(packed), words);
  return cudaGetLastError();
}

cudaError_t LaunchBuildMmaRecords(const MmaLayoutArgs& l, const void* scales, const int32_t* zeros,
                                  void* records, cudaStream_t stream) {
  const int64_t items = static_cast<int64_t>(l.ngroups) * l.NT * 16;
  BuildMmaRecordsKernel<<<GridFor(items, 256), 256, 0, stream>>>(l, scales, zeros,
                                                                 static_cast<uint8_t*>(records));
  return cudaGetLastError();
}

cudaError_t LaunchGatherColumns(const uint16_t* x, int ldx, const int32_t* perm, int Kp, int M,
                                uint16_t* out, cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  const int blocks_x = std::min((Kp + 255) / 256, 64);
  GatherColumnsKernel<<<dim3(blocks_x, M), 256, 0, stream>>>(x, ldx, perm, Kp, out);
  return cudaGetLastError();
}

}  // namespace qlayer::cuda
