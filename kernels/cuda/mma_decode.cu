// \file Weight-streaming W4A16 / W8A16 kernel for decode (M <= 64), mma.sync.
//
// Problem: y[M, N] = x[M, K] * W[K, N], W stored as 4- or 8-bit integers with
// a scale (and optionally a zero point) per (group of k, n). For small M the
// time is the time to read W once from HBM, so everything here serves one
// goal: keep enough weight bytes in flight on every SM.
//
// Why A and B are swapped: the tensor-core tile m16n8k16 has a 16-wide and an
// 8-wide side. We compute y^T = W^T x^T with W^T as the 16-row A operand and
// x^T as the 8-column B operand, so M = 1 wastes 7/8 of an n8 tile rather
// than 15/16 of an m16 tile, and the dequantized weights go straight from
// registers into the A fragment (no shared-memory round trip for them).
//
// Packed weight (built on the GPU by mma_repack.cu): tile (nt, c) = output rows
// 16nt..16nt+15 x permuted input rows 64c..64c+63. Lane l of a warp (g = l/4,
// t = l%4) owns the 16 (int4) or 32 (int8) bytes of the tile that form its A
// fragments for the four k16 steps of the chunk, so a warp reads 512 (1024)
// contiguous bytes per tile and tiles of one nt are contiguous along k.
//   int4, word j (k step j): nibble 0,4 = W^T[g][2t], [g][2t+1]      -> a0
//                             nibble 1,5 = W^T[g+8][2t], [g+8][2t+1]  -> a1
//                             nibble 2,6 = W^T[g][2t+8], [g][2t+9]    -> a2
//                             nibble 3,7 = W^T[g+8][2t+8], [g+8][2t+9]-> a3
//   int8, words 2j, 2j+1 (k step j, k and k+8): bytes 0,2 = row g, 1,3 = row g+8.
// With that order the int -> half conversion is the "magic number" trick:
// (w & 0x000f000f) | 0x64006400 is the half pair (1024 + q0, 1024 + q4), one
// LOP3; subtracting (1024 + z) gives q - z exactly. The nibbles at bits 4..7
// are converted in place as 1024 + 16q and fixed by one fma with 1/16. bf16
// uses 128 (0x4300) as its magic and a shift per nibble pair; int8 uses
// prmt. Every conversion is exact: the A operand is the integer q - z.
//
// Scales are applied outside the tensor cores, in fp32: each k16 step
// accumulates into `part`, and at each group boundary acc += s[g][n] * part.
// This keeps the whole dot product at fp32 precision (bf16 weights rounded to
// 8 significant bits would cost ~1.7e-3 relative error on their own) and
// costs one FMA per accumulator per group instead of a multiply per weight.
//
// Pipeline: 8 warps per block, each owning kWN n16 tiles; the block walks a
// K slice (split-K) chunk by chunk through kStages shared-memory stages filled
// with cp.async (weights, the x tile, and the scale/zero records of the
// chunk's groups). For M <= 16 a warp streams 2 KB per chunk (int4: 4 n16
// tiles; int8: 2), 3 stages deep, 3 blocks per SM at M <= 8: ~100 KB per SM in
// flight. Split-K partial sums go to an fp32 workspace with atomics; the last
// block of each column range (arrival counter) writes y, adds the bias and
// zeroes the workspace and counter again, so a call is one kernel launch.
//
// Measured on the H100 (BENCHMARKS.md): 54 µs at M = 1 on K x N = 8192 x
// 28672, 80 % of the copy-bandwidth floor; small layers (8 MB of weights) are
// latency-bound at ~10 µs, mostly the split-K epilogue's round trips.
//
// Limitations:
//  1. M <= 64 per launch (the host loops over 64-row slices).
//  2. Scale groups must be a multiple of 32 rows in the permuted order (or one
//     group), so a k16 step never straddles two groups.
//  3. x must have Kp readable columns with ldx % 8 == 0 (the host gathers and
//     pads x when the layer is act-order or K % 64 != 0).
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "cuda/device_ops.h"
#include "cuda/mma_ptx.cuh"

namespace qlayer::cuda {
namespace {

constexpr int kWarps = 8;  // 2 per scheduler: enough issue slots to hide the dequant math
constexpr int kThreads = kWarps * 32;
// Pipeline depth: small-M configurations move 16 KB per block per stage, so
// three stages (two in flight) already keep ~100 KB per SM in flight, and the
// smaller footprint lets three blocks share an SM.
__host__ __device__ constexpr int StagesFor(int mt) { return mt <= 2 ? 3 : 4; }
constexpr int kXRow = 72;  // halves per x row in shared memory: 64 + 8 so ldmatrix is conflict-free

struct ZeroConsts {
  uint32_t g, g8;  // constants for rows g and g + 8 of the lane
};

template <int kBits, bool kBf16>
struct Dequant;

// fp16, 4-bit.
template <>
struct Dequant<4, false> {
  static __device__ __forceinline__ ZeroConsts Consts(int zg, int zg8) {
    return {Bits2(__float2half2_rn(1024.f + zg)), Bits2(__float2half2_rn(-(64.f + zg8)))};
  }
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const __half2 sixteenth = __float2half2_rn(0.0625f);
    uint32_t v = w[j];
    const uint32_t lo = (v & 0x000f000fu) | 0x64006400u;
    const uint32_t hi = (v & 0x00f000f0u) | 0x64006400u;
    v >>= 8;
    const uint32_t lo2 = (v & 0x000f000fu) | 0x64006400u;
    const uint32_t hi2 = (v & 0x00f000f0u) | 0x64006400u;
    a[0] = Bits2(__hsub2(AsHalf2(lo), AsHalf2(z.g)));
    a[1] = Bits2(__hfma2(AsHalf2(hi), sixteenth, AsHalf2(z.g8)));
    a[2] = Bits2(__hsub2(AsHalf2(lo2), AsHalf2(z.g)));
    a[3] = Bits2(__hfma2(AsHalf2(hi2), sixteenth, AsHalf2(z.g8)));
  }
};

// fp16, 8-bit: prmt places a byte under the 0x64 exponent byte: 1024 + q.
template <>
struct Dequant<8, false> {
  static __device__ __forceinline__ ZeroConsts Consts(int zg, int zg8) {
    return {Bits2(__float2half2_rn(1024.f + zg)), Bits2(__float2half2_rn(1024.f + zg8))};
  }
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const uint32_t w0 = w[2 * j], w1 = w[2 * j + 1];
    a[0] = Bits2(__hsub2(AsHalf2(BytePerm(w0, 0x64646464u, 0x4240u)), AsHalf2(z.g)));
    a[1] = Bits2(__hsub2(AsHalf2(BytePerm(w0, 0x64646464u, 0x4341u)), AsHalf2(z.g8)));
    a[2] = Bits2(__hsub2(AsHalf2(BytePerm(w1, 0x64646464u, 0x4240u)), AsHalf2(z.g)));
    a[3] = Bits2(__hsub2(AsHalf2(BytePerm(w1, 0x64646464u, 0x4341u)), AsHalf2(z.g8)));
  }
};

// bf16, 4-bit: 0x4300 is 128.0; bf16 has 7 mantissa bits, so each nibble pair
// is shifted down to bits 0..3 / 16..19 before the OR.
template <>
struct Dequant<4, true> {
  static __device__ __forceinline__ ZeroConsts Consts(int zg, int zg8) {
    return {Bits2(__float2bfloat162_rn(128.f + zg)), Bits2(__float2bfloat162_rn(128.f + zg8))};
  }
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const uint32_t v = w[j];
    const uint32_t v0 = (v & 0x000f000fu) | 0x43004300u;
    const uint32_t v1 = ((v >> 4) & 0x000f000fu) | 0x43004300u;
    const uint32_t v2 = ((v >> 8) & 0x000f000fu) | 0x43004300u;
    const uint32_t v3 = ((v >> 12) & 0x000f000fu) | 0x43004300u;
    a[0] = Bits2(__hsub2(AsBf162(v0), AsBf162(z.g)));
    a[1] = Bits2(__hsub2(AsBf162(v1), AsBf162(z.g8)));
    a[2] = Bits2(__hsub2(AsBf162(v2), AsBf162(z.g)));
    a[3] = Bits2(__hsub2(AsBf162(v3), AsBf162(z.g8)));
  }
};

// bf16, 8-bit: 128 + q would leave bf16's exact range, so go through fp32
// (2^23 + q), subtract exactly and round the small integer (exact) to bf16.
template <>
struct Dequant<8, true> {
  static __device__ __forceinline__ ZeroConsts Consts(int zg, int zg8) {
    return {__float_as_uint(8388608.f + zg), __float_as_uint(8388608.f + zg8)};
  }
  static __device__ __forceinline__ uint32_t Pair(uint32_t w, uint32_t s_lo, uint32_t s_hi,
                                                  uint32_t zc) {
    const float z = __uint_as_float(zc);
    const float lo = __uint_as_float(BytePerm(w, 0x4B000000u, s_lo)) - z;
    const float hi = __uint_as_float(BytePerm(w, 0x4B000000u, s_hi)) - z;
    return Bits2(__floats2bfloat162_rn(lo, hi));
  }
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const uint32_t w0 = w[2 * j], w1 = w[2 * j + 1];
    a[0] = Pair(w0, 0x7440u, 0x7442u, z.g);
    a[1] = Pair(w0, 0x7441u, 0x7443u, z.g8);
    a[2] = Pair(w1, 0x7440u, 0x7442u, z.g);
    a[3] = Pair(w1, 0x7441u, 0x7443u, z.g8);
  }
};

__device__ __forceinline__ float RecordScale(const uint8_t* rec, int r, int kind) {
  if (kind == kScaleF32) return reinterpret_cast<const float*>(rec)[r];
  if (kind == kScaleBf16) return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(rec)[r]);
  return __half2float(reinterpret_cast<const __half*>(rec)[r]);
}
__device__ __forceinline__ int RecordZero(const uint8_t* rec, int r, int kind) {
  const int scale_bytes = kind == kScaleF32 ? 64 : 32;
  return reinterpret_cast<const int16_t*>(rec + scale_bytes)[r];
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// kBits: 4 or 8. kBf16: activation type. kMT: m8 tiles (M <= 8 kMT).
// Minimum blocks per SM: 3 for M <= 8 and 2 for M <= 16 (the register caps,
// 85 and 128, hold without spills), so a split-K grid fits in one or few
// waves with ~24 warps per SM.
// kWN: n16 tiles per warp. kZeros: records carry zero points.
template <int kBits, bool kBf16, int kMT, int kWN, bool kZeros>
__global__ void __launch_bounds__(kThreads, kMT == 1 ? 3 : (kMT == 2 ? 2 : 1))
    MmaDecodeKernel(const MmaDecodeArgs a) {
  using T = typename std::conditional<kBf16, __nv_bfloat16, __half>::type;
  using D = Dequant<kBits, kBf16>;
  constexpr int kStages = StagesFor(kMT);
  constexpr int kTileBytes = 512 * (kBits / 4);  // one n16 x k64 tile
  constexpr int kXStage = 8 * kMT * kXRow * 2;   // x tile bytes per stage
  constexpr int kWStage = kWarps * kWN * kTileBytes;
  constexpr int kWords = kTileBytes / 32 / 4;  // 32-bit words per lane per tile
  constexpr int kSymZero = kBits == 4 ? 8 : 128;

  const MmaLayoutArgs& l = a.layout;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int cps = a.chunks_per_split;
  const int c_begin = blockIdx.y * cps;
  const int nch = min(l.C, c_begin + cps) - c_begin;
  const int nt0 = (blockIdx.x * kWarps + warp) * kWN;
  const int rec_bytes = l.rec_bytes;
  const int ms_warp = 2 * kWN * rec_bytes;
  const int ms_stage = kWarps * ms_warp;

  uint8_t* xs_base = smem;
  uint8_t* wsm_base = smem + kStages * kXStage;
  uint8_t* ms_base = wsm_base + kStages * kWStage;
  const T* x = static_cast<const T*>(a.x);
  const uint4* wg = static_cast<const uint4*>(a.w);
  const uint8_t* recg = static_cast<const uint8_t*>(a.rec);

  // Per-thread copy roles, fixed for the whole K slice: the hot loop only
  // adds the chunk offset (no divisions there; they cost more than the
  // dequantization of a whole tile).
  constexpr int kXPieces = 8 * kMT * 8;  // 16-byte pieces of one x tile
  constexpr int kXPerThread = (kXPieces + kThreads - 1) / kThreads;
  const T* x_src[kXPerThread];
  int x_dst[kXPerThread];
  bool x_ok[kXPerThread], x_active[kXPerThread];
#pragma unroll
  for (int q = 0; q < kXPerThread; ++q) {
    const int i = tid + q * kThreads, r = i >> 3, p = i & 7;
    x_active[q] = i < kXPieces;
    x_ok[q] = x_active[q] && r < a.M;
    x_src[q] = x_ok[q] ? x + static_cast<size_t>(r) * a.ldx + c_begin * 64 + p * 8 : x;
    x_dst[q] = (r * kXRow + p * 8) * 2;
  }
  constexpr int kTileU4 = kTileBytes / 16;  // uint4 per tile
  const uint4* w_src[kWN];
  bool w_ok[kWN];
#pragma unroll
  for (int wn = 0; wn < kWN; ++wn) {
    w_ok[wn] = nt0 + wn < l.NT;
    w_src[wn] =
        w_ok[wn] ? wg + (static_cast<size_t>(nt0 + wn) * l.C + c_begin) * kTileU4 + lane : wg;
  }
  // Records: lane -> (slot, wn, 16-byte piece); slot 1 is the group of the
  // chunk's last row when the chunk crosses a group boundary.
  const int pieces = rec_bytes / 16;
  const bool rec_active = lane < 2 * kWN * pieces;
  const int rec_slot = lane / (kWN * pieces);
  const int rec_wn = (lane % (kWN * pieces)) / pieces, rec_piece = lane % pieces;
  const uint8_t* rec_src =
      recg + static_cast<size_t>(min(nt0 + rec_wn, l.NT - 1)) * rec_bytes + rec_piece * 16;
  const size_t rec_gstride = static_cast<size_t>(l.NT) * rec_bytes;
  const int rec_dst = warp * ms_warp + (rec_slot * kWN + rec_wn) * rec_bytes + rec_piece * 16;
  const int geff = l.geff ? l.geff : (1 << 30);
  int ld_g = (c_begin * 64) / geff, ld_kin = (c_begin * 64) % geff;  // group, row in group
  int ld_c = 0;                                                      // chunks issued

  auto load_next = [&](int s) {
    uint8_t* xs = xs_base + s * kXStage;
#pragma unroll
    for (int q = 0; q < kXPerThread; ++q) {
      if (x_active[q]) CpAsync16(xs + x_dst[q], x_src[q] + (x_ok[q] ? ld_c * 64 : 0), x_ok[q]);
    }
    uint8_t* wsm = wsm_base + s * kWStage + warp * kWN * kTileBytes;
#pragma unroll
    for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
      for (int h = 0; h < kBits / 4; ++h) {
        CpAsync16(wsm + wn * kTileBytes + h * 512 + lane * 16,
                  w_src[wn] + (w_ok[wn] ? ld_c * kTileU4 + h * 32 : 0), w_ok[wn]);
      }
    if (rec_active) {
      const int grp = min(ld_g + (rec_slot && ld_kin + 63 >= geff ? 1 : 0), l.ngroups - 1);
      CpAsync16(ms_base + s * ms_stage + rec_dst, rec_src + grp * rec_gstride, true);
    }
    ++ld_c;
    ld_kin += 64;
    while (ld_kin >= geff) {
      ld_kin -= geff;
      ++ld_g;
    }
  };

  float acc[kWN][kMT][4];
  float part[kWN][kMT][4];
#pragma unroll
  for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[wn][mt][e] = part[wn][mt][e] = 0.f;

  const int spg = l.geff / 16;  // k16 steps per group, 0 = one group
  int step_in_group = l.geff ? ((c_begin * 64) % l.geff) / 16 : 0;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nch) load_next(s);
    CpAsyncCommit();
  }
  int stage = 0, load_stage = kStages - 1;  // stage computed / stage loaded next

  for (int i = 0; i < nch; ++i) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (i + kStages - 1 < nch) load_next(load_stage);
    CpAsyncCommit();
    load_stage = load_stage == kStages - 1 ? 0 : load_stage + 1;
    const int s = stage;
    stage = stage == kStages - 1 ? 0 : stage + 1;
    const uint8_t* xs = xs_base + s * kXStage;
    const uint8_t* wsm = wsm_base + s * kWStage + warp * kWN * kTileBytes;
    const uint8_t* ms = ms_base + s * ms_stage + warp * ms_warp;

    uint32_t wr[kWN][kWords];
#pragma unroll
    for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
      for (int h = 0; h < kBits / 4; ++h) {
        const uint4 v =
            *reinterpret_cast<const uint4*>(wsm + wn * kTileBytes + h * 512 + lane * 16);
        wr[wn][h * 4 + 0] = v.x;
        wr[wn][h * 4 + 1] = v.y;
        wr[wn][h * 4 + 2] = v.z;
        wr[wn][h * 4 + 3] = v.w;
      }

    int slot = 0;
    ZeroConsts zc[kWN];
    auto load_consts = [&](int sl) {
#pragma unroll
      for (int wn = 0; wn < kWN; ++wn) {
        if constexpr (kZeros) {
          const uint8_t* rec = ms + (sl * kWN + wn) * rec_bytes;
          zc[wn] =
              D::Consts(RecordZero(rec, g, l.scale_kind), RecordZero(rec, g + 8, l.scale_kind));
        } else {
          zc[wn] = D::Consts(kSymZero, kSymZero);
        }
      }
    };
    load_consts(0);

#pragma unroll
    for (int jp = 0; jp < 2; ++jp) {
      uint32_t b[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        LdMatrixX4(b[mt], xs + ((mt * 8 + (lane & 7)) * kXRow + jp * 32 + (lane >> 3) * 8) * 2);
      }
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int j = jp * 2 + jj;
#pragma unroll
        for (int wn = 0; wn < kWN; ++wn) {
          uint32_t af[4];
          D::Step(wr[wn], j, zc[wn], af);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt)
            Mma16816<kBf16>(part[wn][mt], af, b[mt][2 * jj], b[mt][2 * jj + 1]);
        }
        bool boundary = false;
        if (spg) {
          if (++step_in_group == spg) {
            step_in_group = 0;
            boundary = true;
          }
        }
        const bool last = (i == nch - 1) && (j == 3);
        if (boundary || last) {
#pragma unroll
          for (int wn = 0; wn < kWN; ++wn) {
            const uint8_t* rec = ms + (slot * kWN + wn) * rec_bytes;
            const float s0 = RecordScale(rec, g, l.scale_kind);
            const float s8 = RecordScale(rec, g + 8, l.scale_kind);
#pragma unroll
            for (int mt = 0; mt < kMT; ++mt) {
              acc[wn][mt][0] = fmaf(s0, part[wn][mt][0], acc[wn][mt][0]);
              acc[wn][mt][1] = fmaf(s0, part[wn][mt][1], acc[wn][mt][1]);
              acc[wn][mt][2] = fmaf(s8, part[wn][mt][2], acc[wn][mt][2]);
              acc[wn][mt][3] = fmaf(s8, part[wn][mt][3], acc[wn][mt][3]);
#pragma unroll
              for (int e = 0; e < 4; ++e) part[wn][mt][e] = 0.f;
            }
          }
          if (boundary && j < 3) {
            slot = 1;
            load_consts(1);
          }
        }
      }
    }
  }
  CpAsyncWait<0>();

  // Epilogue. C fragment: c0,c1 = (n = g, m = 2t, 2t+1), c2,c3 = (n = g + 8, same m).
  T* y = static_cast<T*>(a.y);
  if (gridDim.y == 1) {
#pragma unroll
    for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int n = (nt0 + wn) * 16 + g + (e >> 1) * 8;
          const int m = mt * 8 + 2 * t + (e & 1);
          if (m < a.M && n < l.N) {
            const float bias = a.bias ? a.bias[n] : 0.f;
            y[static_cast<size_t>(m) * a.ldy + n] = FromFloat<T>(acc[wn][mt][e] + bias);
          }
        }
    return;
  }
#pragma unroll
  for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = (nt0 + wn) * 16 + g + (e >> 1) * 8;
        const int m = mt * 8 + 2 * t + (e & 1);
        if (m < a.M && n < l.N)
          atomicAdd(&a.ws[static_cast<size_t>(m) * a.ws_ld + n], acc[wn][mt][e]);
      }
  __threadfence();
  __syncthreads();
  __shared__ bool is_last;
  if (tid == 0) is_last = atomicAdd(&a.counters[blockIdx.x], 1u) == gridDim.y - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  // The sums sit in L2 (the atomics were performed there): read them with
  // ld.cg, four independent loads per thread in flight before the first
  // store, so the reduction costs a few L2 round trips rather than one per
  // element.
  constexpr int kBN = kWarps * kWN * 16;
  constexpr int kBatch = 4;
  const int n0 = blockIdx.x * kBN;
  const int total = a.M * kBN;
  for (int base = 0; base < total; base += kThreads * kBatch) {
    float v[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = base + u * kThreads + tid;
      const int m = i / kBN, n = n0 + i % kBN;
      v[u] = i < total && n < l.N ? __ldcg(&a.ws[static_cast<size_t>(m) * a.ws_ld + n]) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = base + u * kThreads + tid;
      const int m = i / kBN, n = n0 + i % kBN;
      if (i < total && n < l.N) {
        const float bias = a.bias ? a.bias[n] : 0.f;
        y[static_cast<size_t>(m) * a.ldy + n] = FromFloat<T>(v[u] + bias);
        __stcg(&a.ws[static_cast<size_t>(m) * a.ws_ld + n], 0.f);
      }
    }
  }
  if (tid == 0) a.counters[blockIdx.x] = 0;
}

// Tile configurations by M, an explicit list for compile speed. Small M
// streams 2 KB per warp per 64-row chunk (int4: 4 n16 tiles, int8: 2), which
// amortises the per-chunk bookkeeping; larger M takes fewer tiles per warp to
// bound the accumulator registers.
struct TileConfig {
  int max_m, mt, wn;
};
constexpr TileConfig kConfigs4[] = {{8, 1, 4}, {16, 2, 4}, {32, 4, 2}, {64, 8, 2}};
constexpr TileConfig kConfigs8[] = {{8, 1, 2}, {16, 2, 2}, {32, 4, 2}, {64, 8, 2}};
constexpr int kNumConfigs = 4;
const TileConfig& Config(int bits, int cfg) { return bits == 4 ? kConfigs4[cfg] : kConfigs8[cfg]; }

using KernelFn = void (*)(MmaDecodeArgs);

template <int kBits, bool kBf16, bool kZeros>
KernelFn PickKernel(int cfg) {
  constexpr int kSmallWn = kBits == 4 ? 4 : 2;
  switch (cfg) {
    case 0:
      return MmaDecodeKernel<kBits, kBf16, 1, kSmallWn, kZeros>;
    case 1:
      return MmaDecodeKernel<kBits, kBf16, 2, kSmallWn, kZeros>;
    case 2:
      return MmaDecodeKernel<kBits, kBf16, 4, 2, kZeros>;
    default:
      return MmaDecodeKernel<kBits, kBf16, 8, 2, kZeros>;
  }
}

KernelFn Pick(int bits, bool bf16, bool zeros, int cfg) {
  if (bits == 4) {
    if (bf16) return zeros ? PickKernel<4, true, true>(cfg) : PickKernel<4, true, false>(cfg);
    return zeros ? PickKernel<4, false, true>(cfg) : PickKernel<4, false, false>(cfg);
  }
  if (bf16) return zeros ? PickKernel<8, true, true>(cfg) : PickKernel<8, true, false>(cfg);
  return zeros ? PickKernel<8, false, true>(cfg) : PickKernel<8, false, false>(cfg);
}

int SmemBytes(int bits, int cfg, int rec_bytes) {
  const TileConfig& c = Config(bits, cfg);
  const int x_stage = 8 * c.mt * kXRow * 2;
  const int w_stage = kWarps * c.wn * 512 * (bits / 4);
  const int m_stage = kWarps * 2 * c.wn * rec_bytes;
  return StagesFor(c.mt) * (x_stage + w_stage + m_stage);
}

// Per (kernel, smem size): the opt-in for > 48 KB and the occupancy, computed
// once. Index: bits(2) x bf16(2) x zeros(2) x cfg(4) x rec size class(3).
std::atomic<int> g_blocks_per_sm[2 * 2 * 2 * kNumConfigs * 3];
std::atomic<int> g_num_sms{0};

}  // namespace

int MmaDecodeMaxNBlocks(int NT) { return (NT + kWarps - 1) / kWarps; }

cudaError_t LaunchMmaDecode(const MmaDecodeArgs& a, cudaStream_t stream,
                            MmaDecodeLaunchInfo* info) {
  const MmaLayoutArgs& l = a.layout;
  if (a.M <= 0) return cudaSuccess;
  if (a.M > 64 || l.C <= 0 || l.NT <= 0 || (l.bits != 4 && l.bits != 8) ||
      (l.rec_bytes != 32 && l.rec_bytes != 64 && l.rec_bytes != 96)) {
    return cudaErrorInvalidValue;
  }
  int cfg = 0;
  while (cfg < kNumConfigs - 1 && a.M > Config(l.bits, cfg).max_m) ++cfg;
  const KernelFn fn = Pick(l.bits, a.bf16, l.zeros, cfg);
  const int smem = SmemBytes(l.bits, cfg, l.rec_bytes);

  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int sms = g_num_sms.load(std::memory_order_relaxed);
  if (sms == 0) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) return err;
    g_num_sms.store(sms, std::memory_order_relaxed);
  }
  const int slot = ((((l.bits == 8) * 2 + a.bf16) * 2 + l.zeros) * kNumConfigs + cfg) * 3 +
                   (l.rec_bytes / 32 - 1);
  int occ = g_blocks_per_sm[slot].load(std::memory_order_relaxed);
  if (occ == 0) {
    err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fn, kThreads, smem);
    if (err != cudaSuccess) return err;
    occ = std::max(occ, 1);
    g_blocks_per_sm[slot].store(occ, std::memory_order_relaxed);
  }

  // Split K so that the grid keeps every SM's block slots busy: the kernel is
  // bandwidth-bound, so idle SMs are lost bandwidth. A score per chunk count
  // (at least two chunks per split, so the pipeline has something to
  // overlap): the fill of the slots over the waves, discounted for the tail
  // of the last wave (blocks that finish early are replaced only when there
  // is a next wave: ncu saw SMs idle 25% of a one-wave launch), minus the
  // split-K traffic (M x N fp32 atomics per split, against K x N / 2 bytes of
  // weights) and a fixed cost for the split-K epilogue.
  // QLAYER_CUDA_DECODE_MAX_WAVES (default 4) bounds the waves considered.
  static const int max_waves = [] {
    const char* e = std::getenv("QLAYER_CUDA_DECODE_MAX_WAVES");
    const int v = e != nullptr ? std::atoi(e) : 0;
    return v >= 1 ? v : 4;
  }();
  const int bn = kWarps * Config(l.bits, cfg).wn;  // n16 tiles per block
  const int n_blocks = (l.NT + bn - 1) / bn;
  const int slots = sms * occ;
  const double atomics_per_split = 0.5 * 8.0 * a.M / (64.0 * l.C) * (l.bits == 4 ? 1.0 : 0.5);
  int cps = l.C;
  double best = -1e9;
  for (int c = l.C; c >= 1; --c) {
    if (c < 2 && l.C >= 2) break;
    const int splits = (l.C + c - 1) / c;
    const int64_t blocks = static_cast<int64_t>(splits) * n_blocks;
    const int64_t waves = (blocks + slots - 1) / slots;
    if (waves > max_waves && c != l.C) break;
    const double fill = static_cast<double>(blocks) / static_cast<double>(waves * slots);
    const double score = fill * (1.0 - 0.25 / static_cast<double>(waves)) -
                         (splits > 1 ? 0.02 + atomics_per_split * splits : 0.0);
    if (score > best + 1e-9) {
      best = score;
      cps = c;
    }
  }
  const int splits = (l.C + cps - 1) / cps;

  if (info != nullptr) {
    info->m_tiles = Config(l.bits, cfg).mt;
    info->warp_n_tiles = Config(l.bits, cfg).wn;
    info->n_blocks = n_blocks;
    info->splits = splits;
    info->chunks_per_split = cps;
    info->blocks_per_sm = occ;
    info->smem_bytes = smem;
  }
  MmaDecodeArgs args = a;
  args.chunks_per_split = cps;
  fn<<<dim3(n_blocks, splits), kThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace qlayer::cuda
