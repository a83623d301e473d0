// The GEMV decode kernel (cuda_gemv_w4a16 / cuda_gemv_w8a16) for M <= 2.
//
// At M = 1 a tensor-core tile is 15/16 padding, and what a small layer costs
// is latency: the launch, one DRAM round trip, and any cross-block reduction.
// This kernel has none of the latter: each block owns whole output rows.
//
//   - A block's threads split K': thread t owns 16-byte chunk t (and t + T
//     when K' needs two per thread) of every weight row, i.e. 32 (int4) or 16
//     (int8) consecutive K' rows. Its activations for those rows are loaded
//     once, converted to fp32 and kept in registers for the whole kernel, so
//     the only per-weight memory traffic is the weight itself (reading x per
//     weight chunk from L1 would cost 4-8x the weight's bytes in L1 bandwidth).
//   - One resident wave of blocks walks row batches of NR output rows. A
//     block issues the next batch's NR x CPT 16-byte weight loads (a warp
//     reads 512 contiguous bytes per row) and its scales before it
//     dequantizes and multiplies this batch, so loads stay in flight during
//     the arithmetic; the activations are loaded once per block.
//   - Dequantization in fp32 without conversion instructions: a byte q placed
//     in the mantissa of 2^23 (one PRMT) is the float 2^23 + q, and
//     subtracting 2^23 + z (one FADD) gives q - z exactly. Products and sums
//     are fp32; the group scale multiplies each 32-row partial sum once.
//   - Per row batch: warp shuffles sum the threads' partials, lane 0 writes
//     one value per warp to shared memory (double-buffered, so one barrier
//     per batch), and NR*M threads finish the sums and write y.
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

constexpr int kMaxThreads = 512;
constexpr int kMaxChunksPerThread = 2;

template <int BITS>
__host__ __device__ constexpr int RowsPerChunk() {
  return BITS == 4 ? 32 : 16;
}

// Byte `sel & 3` of `word` as the float 2^23 + byte.
__device__ __forceinline__ float ByteAsMagicFloat(uint32_t word, uint32_t sel) {
  return __uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u | sel));
}

template <bool BF16>
__device__ __forceinline__ float2 ToFloat2(uint32_t bits) {
  if constexpr (BF16) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bits));
  } else {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
  }
}

template <int BITS, int M, int CPT, int NR, bool BF16>
__global__ void __launch_bounds__(kMaxThreads) GemvKernel(const GemvArgs a) {
  using T = std::conditional_t<BF16, __nv_bfloat16, __half>;
  constexpr int KC = RowsPerChunk<BITS>();
  const GemvLayoutArgs& l = a.layout;
  const int nch = l.Kp / KC;
  const size_t words_per_row = static_cast<size_t>(l.Kp) * BITS / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int nwarps = blockDim.x >> 5;

  float xr[CPT][M][KC];
  int grp[CPT];
  bool live[CPT];
#pragma unroll
  for (int c = 0; c < CPT; ++c) {
    const int ch = tid + c * blockDim.x;
    live[c] = ch < nch;
    grp[c] = l.geff > 0 ? min(ch * KC / l.geff, l.ngroups - 1) : 0;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const uint4* src = reinterpret_cast<const uint4*>(static_cast<const T*>(a.x) +
                                                        static_cast<size_t>(m) * a.ldx) +
                         static_cast<size_t>(ch) * (KC / 8);
#pragma unroll
      for (int v = 0; v < KC / 8; ++v) {
        const uint4 u = live[c] ? __ldg(src + v) : make_uint4(0, 0, 0, 0);
        const uint32_t parts[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int p = 0; p < 4; ++p) {
          const float2 f = ToFloat2<BF16>(parts[p]);
          xr[c][m][v * 8 + 2 * p] = f.x;
          xr[c][m][v * 8 + 2 * p + 1] = f.y;
        }
      }
    }
  }

  __shared__ float red[2][NR * M][kMaxThreads / 32];
  const int row_batches = (l.N + NR - 1) / NR;
  // This batch's weights, scales and zeros, and the next batch's: its loads
  // are issued before this batch's arithmetic, so they are in flight while it
  // runs (one resident wave of blocks walks all batches).
  uint4 wv[CPT][NR], wn[CPT][NR];
  float sc[CPT][NR], zf[CPT][NR], scn[CPT][NR], zfn[CPT][NR];
  auto load = [&](int rb, uint4(&w)[CPT][NR], float(&s)[CPT][NR], float(&z)[CPT][NR]) {
#pragma unroll
    for (int r = 0; r < NR; ++r) {
      const int n = min(rb * NR + r, l.N - 1);  // rows past N compute a copy, never written
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        if (!live[c]) continue;
        const int ch = tid + c * blockDim.x;
        w[c][r] = __ldg(reinterpret_cast<const uint4*>(a.w + n * words_per_row) + ch);
        const size_t gi = static_cast<size_t>(n) * l.ngroups + grp[c];
        s[c][r] = LoadScale(a.scales, l.scale_kind, gi);
        const int zp = a.zeros != nullptr ? static_cast<int>(a.zeros[gi]) : l.sym_zero;
        z[c][r] = 8388608.0f + static_cast<float>(zp);
      }
    }
  };
  if (static_cast<int>(blockIdx.x) < row_batches) load(blockIdx.x, wv, sc, zf);
  int buf = 0;
  for (int rb = blockIdx.x; rb < row_batches; rb += gridDim.x, buf ^= 1) {
    const int n0 = rb * NR;
    const int next = rb + static_cast<int>(gridDim.x);
    if (next < row_batches) load(next, wn, scn, zfn);
    float acc[NR][M];
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = 0.f;
#pragma unroll
      for (int c = 0; c < CPT; ++c) {
        if (!live[c]) continue;
        float part[M];
#pragma unroll
        for (int m = 0; m < M; ++m) part[m] = 0.f;
        const uint32_t words[4] = {wv[c][r].x, wv[c][r].y, wv[c][r].z, wv[c][r].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if constexpr (BITS == 4) {
            // Even nibbles as bytes, then odd nibbles as bytes.
            const uint32_t even = words[j] & 0x0F0F0F0Fu;
            const uint32_t odd = (words[j] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
            for (int b = 0; b < 4; ++b) {
              const float q0 = ByteAsMagicFloat(even, b) - zf[c][r];
              const float q1 = ByteAsMagicFloat(odd, b) - zf[c][r];
              const int k = j * 8 + 2 * b;
#pragma unroll
              for (int m = 0; m < M; ++m) {
                part[m] = fmaf(q0, xr[c][m][k], part[m]);
                part[m] = fmaf(q1, xr[c][m][k + 1], part[m]);
              }
            }
          } else {
#pragma unroll
            for (int b = 0; b < 4; ++b) {
              const float q = ByteAsMagicFloat(words[j], b) - zf[c][r];
#pragma unroll
              for (int m = 0; m < M; ++m) part[m] = fmaf(q, xr[c][m][j * 4 + b], part[m]);
            }
          }
        }
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = fmaf(part[m], sc[c][r], acc[r][m]);
      }
    }
#pragma unroll
    for (int r = 0; r < NR; ++r) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float v = acc[r][m];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
        if (lane == 0) red[buf][r * M + m][warp] = v;
      }
    }
    __syncthreads();
    if (tid < NR * M) {
      const int r = tid / M, m = tid % M, n = n0 + r;
      if (n < l.N) {
        float s = 0.f;
        for (int w = 0; w < nwarps; ++w) s += red[buf][tid][w];
        if (a.bias != nullptr) s += a.bias[n];
        T* y = static_cast<T*>(a.y) + static_cast<size_t>(m) * a.ldy + n;
        if constexpr (BF16) {
          *y = __float2bfloat16_rn(s);
        } else {
          *y = __float2half_rn(s);
        }
      }
    }
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        wv[c][r] = wn[c][r];
        sc[c][r] = scn[c][r];
        zf[c][r] = zfn[c][r];
      }
    }
  }
}

template <int BITS, int M, int CPT, bool BF16>
cudaError_t LaunchOne(const GemvArgs& a, int threads, int sms, cudaStream_t stream) {
  // Rows per batch: 4 weight rows of 16 bytes per thread per batch, twice
  // over with the prefetch, in about 80 registers.
  constexpr int NR = 4 / (M * CPT) > 0 ? 4 / (M * CPT) : 1;
  const auto kernel = GemvKernel<BITS, M, CPT, NR, BF16>;
  const int row_batches = (a.layout.N + NR - 1) / NR;
  // One resident wave: every block loads its activations once and walks
  // many batches, prefetching the next while computing this one.
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess ||
      per_sm < 1) {
    per_sm = 1;
  }
  const int blocks = std::min(row_batches, sms * per_sm);
  kernel<<<blocks, threads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <int BITS, bool BF16>
cudaError_t LaunchRows(const GemvArgs& a, int threads, int cpt, int sms, cudaStream_t stream) {
  if (cpt == 1) {
    return a.M == 2 ? LaunchOne<BITS, 2, 1, BF16>(a, threads, sms, stream)
                    : LaunchOne<BITS, 1, 1, BF16>(a, threads, sms, stream);
  }
  return LaunchOne<BITS, 1, 2, BF16>(a, threads, sms, stream);
}

__global__ void RepackGemvWeightsKernel(const GemvLayoutArgs l, const int32_t* qw,
                                        const int32_t* perm, uint32_t* out) {
  const int pack = 32 / l.bits;
  const uint32_t mask = (1u << l.bits) - 1u;
  const int64_t wpr = static_cast<int64_t>(l.Kp) / pack;
  const int64_t total = wpr * l.N;
  for (int64_t wi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; wi < total;
       wi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int n = static_cast<int>(wi / wpr);
    const int j = static_cast<int>(wi % wpr);
    uint32_t word = 0;
    for (int i = 0; i < pack; ++i) {
      const int kp = j * pack + i;
      const int k = perm != nullptr ? perm[kp] : (kp < l.K ? kp : -1);
      if (k < 0) continue;  // padding: its activation is gathered as 0
      const uint32_t v = static_cast<uint32_t>(qw[static_cast<size_t>(k / pack) * l.N + n]);
      word |= ((v >> (l.bits * (k % pack))) & mask) << (l.bits * i);
    }
    out[wi] = word;
  }
}

__global__ void TransposeGroupsKernel(const GemvLayoutArgs l, const void* scales,
                                      const int32_t* zeros, void* scales_t, uint16_t* zeros_t) {
  const int64_t total = static_cast<int64_t>(l.N) * l.ngroups;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / l.ngroups, g = i % l.ngroups;
    const int64_t src = g * l.N + n;
    if (l.scale_kind == kScaleF32) {
      static_cast<float*>(scales_t)[i] = static_cast<const float*>(scales)[src];
    } else {
      static_cast<uint16_t*>(scales_t)[i] = static_cast<const uint16_t*>(scales)[src];
    }
    if (zeros != nullptr) zeros_t[i] = static_cast<uint16_t>(zeros[src]);  // 0 ... 2^bits
  }
}

int GridFor(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + 255) / 256, 65535));
}

}  // namespace

int GemvMaxKp(int bits) {
  return kMaxThreads * kMaxChunksPerThread * (bits == 4 ? RowsPerChunk<4>() : RowsPerChunk<8>());
}

cudaError_t LaunchRepackGemv(const GemvLayoutArgs& l, const int32_t* qweight, const int32_t* perm,
                             const void* scales, const int32_t* zeros, uint32_t* packed,
                             void* scales_t, uint16_t* zeros_t, cudaStream_t stream) {
  const int64_t words = static_cast<int64_t>(l.Kp) / (32 / l.bits) * l.N;
  RepackGemvWeightsKernel<<<GridFor(words), 256, 0, stream>>>(l, qweight, perm, packed);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  TransposeGroupsKernel<<<GridFor(static_cast<int64_t>(l.N) * l.ngroups), 256, 0, stream>>>(
      l, scales, l.zeros ? zeros : nullptr, scales_t, zeros_t);
  return cudaGetLastError();
}

cudaError_t LaunchGemv(const GemvArgs& a, int sms, cudaStream_t stream) {
  const GemvLayoutArgs& l = a.layout;
  const int kc = l.bits == 4 ? RowsPerChunk<4>() : RowsPerChunk<8>();
  if (l.Kp % kc != 0 || l.Kp > GemvMaxKp(l.bits) || a.ldx % 8 != 0) return cudaErrorInvalidValue;
  const int nch = l.Kp / kc;
  const int cpt = nch <= kMaxThreads ? 1 : kMaxChunksPerThread;
  const int threads = std::max(32, (nch + cpt - 1) / cpt + 31) / 32 * 32;
  for (int m0 = 0; m0 < a.M;) {
    // Two rows share one pass over the weights when a thread holds one chunk.
    const int rows = (cpt == 1 && a.M - m0 >= 2) ? 2 : 1;
    GemvArgs s = a;
    s.M = rows;
    s.x = static_cast<const uint16_t*>(a.x) + static_cast<size_t>(m0) * a.ldx;
    s.y = static_cast<uint16_t*>(a.y) + static_cast<size_t>(m0) * a.ldy;
    cudaError_t err;
    if (l.bits == 4) {
      err = a.bf16 ? LaunchRows<4, true>(s, threads, cpt, sms, stream)
                   : LaunchRows<4, false>(s, threads, cpt, sms, stream);
    } else {
      err = a.bf16 ? LaunchRows<8, true>(s, threads, cpt, sms, stream)
                   : LaunchRows<8, false>(s, threads, cpt, sms, stream);
    }
    if (err != cudaSuccess) return err;
    m0 += rows;
  }
  return cudaSuccess;
}

}  // namespace qlayer::cuda
