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
// contiguous bytes per tile. Tiles are stored in groups of 16 along n, each
// group's 16 tiles side by side per chunk and its chunks one after another
// (device_ops.h), so a block's weights arrive in long sequential runs.
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
// Pipeline: 8 warps per block, each owning kWN n16 tiles; a block walks
// work units (an n block x a K slice, split-K) chunk by chunk through
// kStages shared-memory stages filled with cp.async (weights, the x tile, and
// the scale/zero records of the chunk's groups). For M <= 16 a warp streams
// 2 KB per chunk (int4: 4 n16 tiles; int8: 2), 3 stages deep, 3 blocks per SM
// at M <= 8: ~100 KB per SM in flight. The grid is one wave of resident
// blocks that take units from a queue, the pipeline running on across unit
// boundaries (see MmaDecodeKernel). Split-K partial sums go to an fp32
// workspace with atomics; the last unit of each n block (arrival counter)
// writes y, adds the bias and zeroes the workspace and counter again, and the
// thread that takes the queue's last unit resets it, so a call is one kernel
// launch (which relies on the previous launch on the stream having finished
// cleanly: Forward marks the worker's buffers dirty, to be zeroed again, on
// any error).
//
// Measured: BENCHMARKS.md ("CUDA linear kernels").
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
#include <string_view>
#include <type_traits>

#include "cuda/device_ops.h"
#include "cuda/mma_ptx.cuh"

namespace qlayer::cuda {
namespace {

constexpr int kWarps = 8;  // 2 per scheduler: enough issue slots to hide the dequant math
constexpr int kThreads = kWarps * 32;
constexpr int kXRow = 72;  // halves per x row in shared memory: 64 + 8 so ldmatrix is conflict-free

struct ZeroConsts {
  uint32_t g, g8;  // constants for rows g and g + 8 of the lane
};

// Bits of small integers as fp16 / bf16 pairs, at compile time: the
// symmetric types' constants must not cost instructions in the hot loop
// (cuda_fp16's conversions are inline asm, which the compiler cannot fold).
// The 16-bit float with kMant mantissa bits and exponent bias kBias holding
// the integer v exactly (|v| < 2^(kMant + 1) or a multiple that fits).
template <int kMant, int kBias>
constexpr uint32_t SmallIntBits(int v) {
  const uint32_t sign = v < 0 ? 0x8000u : 0u;
  const uint32_t a = static_cast<uint32_t>(v < 0 ? -v : v);
  int e = 0;
  while ((a >> (e + 1)) != 0) ++e;
  const uint32_t mask = (1u << kMant) - 1u;
  const uint32_t mant = e <= kMant ? (a << (kMant - e)) & mask : (a >> (e - kMant)) & mask;
  return a == 0 ? 0u : sign | (static_cast<uint32_t>(e + kBias) << kMant) | mant;
}
constexpr uint32_t HalfBits(int v) { return SmallIntBits<10, 15>(v); }
constexpr uint32_t Bf16Bits(int v) { return SmallIntBits<7, 127>(v); }
constexpr uint32_t Pair(uint32_t h) { return h | (h << 16); }
static_assert(HalfBits(1032) == 0x6408u && HalfBits(-72) == 0xD480u && HalfBits(1) == 0x3C00u);
static_assert(Bf16Bits(136) == 0x4308u && Bf16Bits(128) == 0x4300u);

// (v & mask) | magic in one LOP3: written as C, it takes two, because a
// SASS LOP3 holds one 32-bit immediate; with both constants in registers
// (hoisted out of the loop) it is one instruction.
__device__ __forceinline__ uint32_t AndOr(uint32_t v, uint32_t mask, uint32_t magic) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(v), "r"(mask), "r"(magic));
  return r;
}

template <int kBits, bool kBf16>
struct Dequant;

// fp16, 4-bit.
template <>
struct Dequant<4, false> {
  static __device__ __forceinline__ ZeroConsts Consts(int zg, int zg8) {
    return {Bits2(__float2half2_rn(1024.f + zg)), Bits2(__float2half2_rn(-(64.f + zg8)))};
  }
  static constexpr ZeroConsts kSym = {Pair(HalfBits(1024 + 8)), Pair(HalfBits(-(64 + 8)))};
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const __half2 sixteenth = AsHalf2(0x2C002C00u);  // (2^-4, 2^-4)
    uint32_t v = w[j];
    const uint32_t lo = AndOr(v, 0x000f000fu, 0x64006400u);
    const uint32_t hi = AndOr(v, 0x00f000f0u, 0x64006400u);
    v >>= 8;
    const uint32_t lo2 = AndOr(v, 0x000f000fu, 0x64006400u);
    const uint32_t hi2 = AndOr(v, 0x00f000f0u, 0x64006400u);
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
  static constexpr ZeroConsts kSym = {Pair(HalfBits(1024 + 128)), Pair(HalfBits(1024 + 128))};
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
  static constexpr ZeroConsts kSym = {Pair(Bf16Bits(128 + 8)), Pair(Bf16Bits(128 + 8))};
  static __device__ __forceinline__ void Step(const uint32_t* w, int j, ZeroConsts z,
                                              uint32_t (&a)[4]) {
    const uint32_t v = w[j];
    const uint32_t v0 = AndOr(v, 0x000f000fu, 0x43004300u);
    const uint32_t v1 = AndOr(v >> 4, 0x000f000fu, 0x43004300u);
    const uint32_t v2 = AndOr(v >> 8, 0x000f000fu, 0x43004300u);
    const uint32_t v3 = AndOr(v >> 12, 0x000f000fu, 0x43004300u);
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
  static constexpr ZeroConsts kSym = {0x4B000000u + 128u, 0x4B000000u + 128u};  // 2^23 + 128
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

// Work is cut into units: (n block b, k split sp) = the block's kWarps x kWN
// n16 tiles over C / S chunks of K, the first C % S splits one more (S splits,
// each >= 2 chunks, except the one-shot path's single chunk when C = 1). A grid of at most one wave
// of resident blocks takes units from a queue: the first two statically (units blockIdx.x and
// blockIdx.x + gridDim.x, so a block starts copying at once), then one atomicAdd each, issued a
// unit ahead of need and its answer stored a loop turn later, so no thread waits on the round trip.
// The cp.async pipeline runs across unit boundaries, so a block pays the pipeline's fill latency
// once per launch, not once per unit, and blocks on fast memory partitions take more units than
// slow ones (a one-unit-per-block grid left SMs idle for the last quarter of a wave). With the grid
// as large as the unit count, every block takes one unit and leaves: the old one-shot split-K
// (QLAYER_CUDA_DECODE_MODE=oneshot).
//
// kBits: 4 or 8. kBf16: activation type. kMT: m8 tiles (M <= 8 kMT).
// Minimum blocks per SM: 3 for M <= 8 and 2 for M <= 16 (register caps of 80
// and 128: the M <= 8 kernels spill 40-52 bytes), so ~24 warps per SM stream
// weights.
// kWN: n16 tiles per warp. kZeros: records carry zero points.
// kOcc, kStages: the register cap (blocks per SM) and the pipeline depth.
template <int kBits, bool kBf16, int kMT, int kWN, bool kZeros, int kOcc, int kStages>
__global__ void __launch_bounds__(kThreads, kOcc) MmaDecodeKernel(const MmaDecodeArgs a) {
  // The queue's two-slot hand-off assumes at most one unit boundary inside
  // the prologue's kStages - 1 copies of 2-chunk units.
  static_assert(kStages <= 4, "deeper pipelines need a longer unit ring");
  using T = typename std::conditional<kBf16, __nv_bfloat16, __half>::type;
  using D = Dequant<kBits, kBf16>;
  constexpr int kTileBytes = 512 * (kBits / 4);  // one n16 x k64 tile
  constexpr int kXStage = 8 * kMT * kXRow * 2;   // x tile bytes per stage
  constexpr int kWStage = kWarps * kWN * kTileBytes;
  constexpr int kWords = kTileBytes / 32 / 4;  // 32-bit words per lane per tile
  constexpr int kBN = kWarps * kWN * 16;       // output rows (n) per block

  const MmaLayoutArgs& l = a.layout;
  extern __shared__ __align__(16) uint8_t smem[];
  // Block-uniform bookkeeping, written by thread 0 and read by all after a
  // barrier: the next units from the queue (two slots: one is read while the
  // other is refilled; every unit has >= 2 chunks, so a slot is rewritten
  // only after a barrier), and per stage the chunk it holds.
  __shared__ int s_unit[2];
  __shared__ int2 s_meta[kStages];  // {unit or -1, kMidEnd | kEnd | kLast}
  __shared__ bool s_is_last;
  // kMidEnd: a scale group ends at row 31 of the chunk (apply record slot 0
  // after k16 step 1); kEnd: one ends at row 63, or the unit does (apply slot
  // 1, the group of the chunk's last row, after step 3); kLast: the unit's
  // last chunk. So the hot loop tests two flags per chunk, not a group
  // counter per k16 step.
  constexpr int kMidEnd = 1, kEnd = 2, kLast = 4;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int splits = a.splits;
  const int total_units = a.n_blocks * splits;
  const int rec_bytes = l.rec_bytes;
  const int ms_warp = 2 * kWN * rec_bytes;
  const int ms_stage = kWarps * ms_warp;

  uint8_t* xs_base = smem;
  uint8_t* wsm_base = smem + kStages * kXStage;
  uint8_t* ms_base = wsm_base + kStages * kWStage;
  const T* x = static_cast<const T*>(a.x);
  const uint4* wg = static_cast<const uint4*>(a.w);
  const uint8_t* recg = static_cast<const uint8_t*>(a.rec);

  const int grid = static_cast<int>(gridDim.x);
  if (tid == 0) s_unit[1] = static_cast<int>(blockIdx.x) + grid;
  __syncthreads();
  // Every block that reaches its second unit fetches until a fetch fails,
  // so the queue is taken exactly `fetches` times; the last taker resets it
  // to zero for the next launch on this stream.
  const int fetches = max(0, total_units - 2 * grid) + min(max(0, total_units - grid), grid);
  int fetched = 0, fetched_slot = -1;  // thread 0: a fetch not yet stored in s_unit

  // Loader state, uniform across the block: the unit being loaded, its chunk
  // range, the next chunk; per thread, the copy sources for this unit (set
  // once per unit: the hot loop only adds the chunk offset).
  // (The first unit is not read from s_unit: thread 0 may refill slot 0
  // before a slower thread would have read it.)
  int ld_unit = static_cast<int>(blockIdx.x), ld_slot = 1;
  int ld_c = 0, ld_c0 = 0, ld_nch = 0;
  int ld_g = 0, ld_kin = 0;  // scale group and row within it of the next chunk
  const int geff = l.geff ? l.geff : (1 << 30);
  constexpr int kXPieces = 8 * kMT * 8;  // 16-byte pieces of one x tile
  constexpr int kXPerThread = (kXPieces + kThreads - 1) / kThreads;
  constexpr int kTileU4 = kTileBytes / 16;  // uint4 per tile
  // x copies: 32-bit element offsets into x (fewer registers than pointers).
  int x_src[kXPerThread], x_dst[kXPerThread];
  bool x_ok[kXPerThread], x_active[kXPerThread];
#pragma unroll
  for (int q = 0; q < kXPerThread; ++q) {
    const int i = tid + q * kThreads, r = i >> 3, p = i & 7;
    x_active[q] = i < kXPieces;
    x_ok[q] = x_active[q] && r < a.M;
    x_src[q] = x_ok[q] ? r * a.ldx + p * 8 : 0;
    x_dst[q] = (r * kXRow + p * 8) * 2;
  }
  // Weight source of this lane: tile (nt0 + wn, ld_c0 + ld_c) is uint4 index
  // w_base + wn * kTileU4 + ld_c * kChunkU4 (the grouped order of
  // device_ops.h; a warp's kWN tiles never straddle a group). 32-bit offsets:
  // the packed weight is < 2^31 uint4, and they take fewer registers than kWN
  // pointers, which the 80-register cap of the M <= 8 kernels cannot spare.
  // The packed weight is padded to whole blocks (kMmaPaddedTiles), so the
  // copies need no bounds predicate.
  static_assert(kMmaGroupTiles % kWN == 0, "a warp's tiles must lie in one group");
  static_assert(kMmaPaddedTiles % (kWarps * kWN) == 0, "blocks must not pass the padding");
  constexpr int kChunkU4 = kMmaGroupTiles * kTileU4;
  int w_base = 0;
  // Records: lane -> (slot, wn, 16-byte piece); slot 1 is the group of the
  // chunk's last row when the chunk crosses a group boundary.
  // A warp copies 2 * kWN * pieces pieces: up to 48 (int4 tiles with f32
  // scales and zero points), so a lane takes piece `lane` and, where there
  // are more than 32, piece `lane + 32` too (the second round is uniform).
  // Piece pidx of a warp's records: slot pidx / (kWN * pieces), tile wn, and
  // 16-byte piece pidx % pieces. The first round's facts stay in two
  // registers (the shared-memory offset, a multiple of 16, carries "slot 1"
  // in bit 0 and "active" in bit 1); the rare second round recomputes its own.
  const int pieces = rec_bytes / 16;
  const int rec_pieces = 2 * kWN * pieces;
  const bool rec_round2 = rec_pieces > 32;
  auto rec_dst_of = [&](int pidx) {
    const int slot = pidx / (kWN * pieces), wn = (pidx % (kWN * pieces)) / pieces;
    // (Beyond rec_pieces, slot would be 2 or more: such a lane copies nothing.)
    return (warp * ms_warp + (slot * kWN + wn) * rec_bytes + (pidx % pieces) * 16) |
           (pidx < rec_pieces ? 2 | slot : 0);
  };
  auto rec_off_of = [&](int pidx, int nt0) {
    const int wn = (pidx % (kWN * pieces)) / pieces;
    return min(nt0 + wn, l.NT - 1) * rec_bytes + (pidx % pieces) * 16;
  };
  const int rec0_dst = rec_dst_of(lane);
  int rec0_off = 0, nt0_cur = 0;
  const int rec_gstride = l.NT * rec_bytes;  // < 2^31: the records are < 2 GB
  // Byte offsets of the records of group ld_g and of the next group (the
  // group of a crossing chunk's last row), kept up to date as ld_g moves, so
  // that a chunk's record copy costs a select, not a clamp and a multiply.
  int rec_g_off = 0, rec_g1_off = 0;
  auto set_group = [&](int grp) {
    grp = min(grp, l.ngroups - 1);  // (past a unit's last chunk: unused, but no overflow)
    rec_g_off = grp * rec_gstride;
    rec_g1_off = min(grp + 1, l.ngroups - 1) * rec_gstride;
  };

  // No integer division here (~40 instructions each, once per unit): the
  // quotients come from a double multiply by the host's reciprocals, exact
  // for these sizes ((n + 0.5) / d lies >= 0.5 / d from an integer).
  auto begin_unit = [&](int u) {
    const int b = static_cast<int>((u + 0.5) * a.inv_splits), sp = u - b * splits;
    ld_c0 = sp * a.unit_chunks + min(sp, a.unit_extra);
    ld_nch = a.unit_chunks + (sp < a.unit_extra ? 1 : 0);
    ld_c = 0;
    const int nt0 = (b * kWarps + warp) * kWN;
    w_base =
        (((nt0 / kMmaGroupTiles) * l.C + ld_c0) * kMmaGroupTiles + nt0 % kMmaGroupTiles) * kTileU4 +
        lane;
    rec0_off = rec_off_of(lane, nt0);
    nt0_cur = nt0;
    ld_g = static_cast<int>((ld_c0 * 64 + 0.5) * a.inv_geff);
    ld_kin = ld_c0 * 64 - ld_g * geff;
    set_group(ld_g);
  };
  if (ld_unit < total_units) begin_unit(ld_unit);

  // Issues the copies of the next chunk into stage s (nothing once the queue
  // is empty) and records what the stage holds.
  auto load_next = [&](int s) {
    if (ld_unit >= total_units) {
      if (tid == 0) s_meta[s] = make_int2(-1, 0);
      return;
    }
    if (tid == 0) {
      const bool last = ld_c == ld_nch - 1;
      const int flags = (ld_kin + 32 == geff ? kMidEnd : 0) |
                        (ld_kin + 64 == geff || geff == 32 || last ? kEnd : 0) | (last ? kLast : 0);
      s_meta[s] = make_int2(ld_unit, flags);
    }
    const int cabs = ld_c0 + ld_c;
    uint8_t* xs = xs_base + s * kXStage;
#pragma unroll
    for (int q = 0; q < kXPerThread; ++q) {
      if (x_active[q])
        CpAsync16(xs + x_dst[q], x + (x_src[q] + (x_ok[q] ? cabs * 64 : 0)), x_ok[q]);
    }
    uint8_t* wsm = wsm_base + s * kWStage + warp * kWN * kTileBytes;
    const uint4* w_at = wg + (w_base + ld_c * kChunkU4);
#pragma unroll
    for (int wn = 0; wn < kWN; ++wn) {
#pragma unroll
      for (int h = 0; h < kBits / 4; ++h) {
        CpAsync16(wsm + wn * kTileBytes + h * 512 + lane * 16, w_at + wn * kTileU4 + h * 32, true);
      }
    }
    const bool cross = ld_kin + 63 >= geff;  // the chunk's last row is in the next group
    uint8_t* ms_s = ms_base + s * ms_stage;
    auto copy_record = [&](int dst, int off) {
      if (dst & 2) {
        const int goff = (dst & 1) && cross ? rec_g1_off : rec_g_off;
        CpAsync16(ms_s + (dst & ~15), recg + (off + goff), true);
      }
    };
    copy_record(rec0_dst, rec0_off);
    if (rec_round2) copy_record(rec_dst_of(lane + 32), rec_off_of(lane + 32, nt0_cur));
    ++ld_c;
    ld_kin += 64;
    if (ld_kin >= geff) {
      while (ld_kin >= geff) {
        ld_kin -= geff;
        ++ld_g;
      }
      set_group(ld_g);
    }
    if (ld_c == ld_nch) {  // next unit: from the slot filled a barrier ago
      ld_unit = s_unit[ld_slot];
      if (tid == 0 && ld_unit < total_units) {
        fetched = static_cast<int>(atomicAdd(a.queue, 1u));
        fetched_slot = ld_slot ^ 1;
      }
      ld_slot ^= 1;
      if (ld_unit < total_units) begin_unit(ld_unit);
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

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    load_next(s);
    CpAsyncCommit();
  }
  int stage = 0, load_stage = kStages - 1;  // stage computed / stage loaded next
  T* y = static_cast<T*>(a.y);

  for (;;) {
    if (tid == 0 && fetched_slot >= 0) {  // the fetch of the last unit change
      s_unit[fetched_slot] = 2 * grid + fetched;
      if (fetched == fetches - 1) *a.queue = 0;
      fetched_slot = -1;
    }
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int2 meta = s_meta[stage];
    if (meta.x < 0) break;  // uniform: the queue is empty and every loaded chunk is done
    load_next(load_stage);
    CpAsyncCommit();
    load_stage = load_stage == kStages - 1 ? 0 : load_stage + 1;
    const int s = stage;
    stage = stage == kStages - 1 ? 0 : stage + 1;
    const uint8_t* xs = xs_base + s * kXStage;
    const uint8_t* wsm = wsm_base + s * kWStage + warp * kWN * kTileBytes;
    const uint8_t* ms = ms_base + s * ms_stage + warp * ms_warp;
    const bool unit_last = (meta.y & kLast) != 0;

    // The lane's weight words, read from shared memory half a chunk at a
    // time (k16 steps 0-1, then 2-3), so only half of them hold registers at
    // once: the M <= 8 kernels' 80-register cap spilled with all of them.
    uint32_t wr[kWN][kWords];
    auto load_words = [&](int jp) {
#pragma unroll
      for (int wn = 0; wn < kWN; ++wn) {
        if constexpr (kBits == 4) {
          const uint2 v =
              *reinterpret_cast<const uint2*>(wsm + wn * kTileBytes + lane * 16 + jp * 8);
          wr[wn][2 * jp] = v.x;
          wr[wn][2 * jp + 1] = v.y;
        } else {
          const uint4 v =
              *reinterpret_cast<const uint4*>(wsm + wn * kTileBytes + jp * 512 + lane * 16);
          wr[wn][jp * 4 + 0] = v.x;
          wr[wn][jp * 4 + 1] = v.y;
          wr[wn][jp * 4 + 2] = v.z;
          wr[wn][jp * 4 + 3] = v.w;
        }
      }
    };

    ZeroConsts zc[kWN];
    auto load_consts = [&](int sl) {
#pragma unroll
      for (int wn = 0; wn < kWN; ++wn) {
        if constexpr (kZeros) {
          const uint8_t* rec = ms + (sl * kWN + wn) * rec_bytes;
          zc[wn] =
              D::Consts(RecordZero(rec, g, l.scale_kind), RecordZero(rec, g + 8, l.scale_kind));
        } else {
          zc[wn] = D::kSym;
        }
      }
    };
    load_consts(0);
    // acc += s * part for record slot sl, then part = 0. One branch on the
    // scale type (uniform) for all of the lane's scales.
    auto flush = [&](int sl) {
      float s0[kWN], s8[kWN];
      const uint8_t* rec = ms + sl * kWN * rec_bytes;
      if (l.scale_kind == kScaleF32) {
#pragma unroll
        for (int wn = 0; wn < kWN; ++wn) {
          s0[wn] = reinterpret_cast<const float*>(rec + wn * rec_bytes)[g];
          s8[wn] = reinterpret_cast<const float*>(rec + wn * rec_bytes)[g + 8];
        }
      } else {
        const bool bf = l.scale_kind == kScaleBf16;
#pragma unroll
        for (int wn = 0; wn < kWN; ++wn) {
          const uint16_t* r16 = reinterpret_cast<const uint16_t*>(rec + wn * rec_bytes);
          const uint32_t u0 = r16[g], u8 = r16[g + 8];
          s0[wn] = bf ? __uint_as_float(u0 << 16) : __half2float(__ushort_as_half(u0));
          s8[wn] = bf ? __uint_as_float(u8 << 16) : __half2float(__ushort_as_half(u8));
        }
      }
#pragma unroll
      for (int wn = 0; wn < kWN; ++wn)
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          acc[wn][mt][0] = fmaf(s0[wn], part[wn][mt][0], acc[wn][mt][0]);
          acc[wn][mt][1] = fmaf(s0[wn], part[wn][mt][1], acc[wn][mt][1]);
          acc[wn][mt][2] = fmaf(s8[wn], part[wn][mt][2], acc[wn][mt][2]);
          acc[wn][mt][3] = fmaf(s8[wn], part[wn][mt][3], acc[wn][mt][3]);
#pragma unroll
          for (int e = 0; e < 4; ++e) part[wn][mt][e] = 0.f;
        }
    };

#pragma unroll
    for (int jp = 0; jp < 2; ++jp) {
      load_words(jp);
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
        if (j == 1 && (meta.y & kMidEnd)) {
          flush(0);
          load_consts(1);
        }
        if (j == 3 && (meta.y & kEnd)) flush(1);
      }
    }
    if (!unit_last) continue;

    // The unit's epilogue. C fragment: c0,c1 = (n = g, m = 2t, 2t+1),
    // c2,c3 = (n = g + 8, same m).
    const int ub = meta.x / splits;
    const int nt0 = (ub * kWarps + warp) * kWN;
    if (splits == 1) {
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
            acc[wn][mt][e] = 0.f;
          }
      continue;
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
          acc[wn][mt][e] = 0.f;
        }
    __threadfence();
    __syncthreads();
    if (tid == 0) s_is_last = atomicAdd(&a.counters[ub], 1u) == static_cast<unsigned>(splits - 1);
    __syncthreads();
    if (!s_is_last) continue;
    __threadfence();
    // The sums sit in L2 (the atomics were performed there): read them with
    // ld.cg, four independent loads per thread in flight before the first
    // store, so the reduction costs a few L2 round trips rather than one per
    // element. Meanwhile the copies of the next chunks are in flight.
    constexpr int kBatch = 4;
    const int n0 = ub * kBN;
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
    if (tid == 0) a.counters[ub] = 0;
  }
  CpAsyncWait<0>();
}
// Tile configurations by M, an explicit list for compile speed. Small M
// streams 2 KB per warp per 64-row chunk (int4: 4 n16 tiles, int8: 2), which
// amortises the per-chunk bookkeeping; larger M takes fewer tiles per warp to
// bound the accumulator registers.
// occ: blocks per SM the register cap is set for; stages: pipeline depth.
// Measured on the H200 (BENCHMARKS.md): M <= 8 at 2 blocks per SM and 4
// stages (no register spills; 16 instead of 24 warps) was within +-5 % of
// 3 blocks and 3 stages, faster on 4096x14336, slower on 8192x28672.
struct TileConfig {
  int max_m, mt, wn, occ, stages;
};
constexpr TileConfig kConfigs4[] = {
    {8, 1, 4, 3, 3}, {16, 2, 4, 2, 3}, {32, 4, 2, 1, 4}, {64, 8, 2, 1, 4}};
constexpr TileConfig kConfigs8[] = {
    {8, 1, 2, 3, 3}, {16, 2, 2, 2, 3}, {32, 4, 2, 1, 4}, {64, 8, 2, 1, 4}};
constexpr int kNumConfigs = 4;
const TileConfig& Config(int bits, int cfg) { return bits == 4 ? kConfigs4[cfg] : kConfigs8[cfg]; }

using KernelFn = void (*)(MmaDecodeArgs);

template <int kBits, bool kBf16, bool kZeros>
KernelFn PickKernel(int cfg) {
  constexpr int kSmallWn = kBits == 4 ? 4 : 2;
  switch (cfg) {
    case 0:
      return MmaDecodeKernel<kBits, kBf16, 1, kSmallWn, kZeros, 3, 3>;
    case 1:
      return MmaDecodeKernel<kBits, kBf16, 2, kSmallWn, kZeros, 2, 3>;
    case 2:
      return MmaDecodeKernel<kBits, kBf16, 4, 2, kZeros, 1, 4>;
    default:
      return MmaDecodeKernel<kBits, kBf16, 8, 2, kZeros, 1, 4>;
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
  return c.stages * (x_stage + w_stage + m_stage);
}

// Per (kernel, smem size): the opt-in for > 48 KB and the occupancy, computed
// once. Index: bits(2) x bf16(2) x zeros(2) x cfg(4) x rec size class(3).
// Per device, since the shared-memory opt-in and the SM count are per device;
// devices past kMaxCachedDevices ask the runtime every launch.
constexpr int kMaxCachedDevices = 16;
constexpr int kKernelSlots = 2 * 2 * 2 * kNumConfigs * 3;
std::atomic<int> g_blocks_per_sm[kMaxCachedDevices][kKernelSlots];
std::atomic<int> g_num_sms[kMaxCachedDevices];

// Knobs for measuring the schedule (tests/gpu/run.sh compares them):
//   QLAYER_CUDA_DECODE_MODE=oneshot: one unit per block, the split count from
//     OneShotSplits (the schedule before the queue);
//   QLAYER_CUDA_DECODE_UNITS_PER_BLOCK (default 1): the persistent grid's
//     units per block. Measured on the H200 (BENCHMARKS.md, M = 1): 1 unit
//     per block 48.9 us on 8192x28672 against 51.0 (2), 52.2 (3), 53.5 (4)
//     and 53.6 for the one-shot schedule; 18.8 us on 4096x14336 against
//     21.6-22.5 for 2-6. So by default the grid is the one wave with the most
//     splits that fits and each block has one unit; the queue hands out
//     units only when there are more n blocks than slots (N > ~200K at
//     M <= 8) or with larger counts (tested with QLAYER_CUDA_DECODE_MAX_GRID);
//   QLAYER_CUDA_DECODE_MAX_WAVES (default 4): the one-shot grid's waves;
//   QLAYER_CUDA_DECODE_MAX_GRID: a cap on the persistent grid, so that the
//     GPU tests' small layers also run many units per block (tests/gpu/run.sh).
struct DecodeTuning {
  bool oneshot = false;
  int units_per_block = 1;
  int max_waves = 4;
  int max_grid = 1 << 30;
};
DecodeTuning ReadDecodeTuning() {
  DecodeTuning t;
  auto num = [](const char* name, int def) {
    const char* e = std::getenv(name);
    const int v = e != nullptr ? std::atoi(e) : 0;
    return v >= 1 ? v : def;
  };
  const char* mode = std::getenv("QLAYER_CUDA_DECODE_MODE");
  t.oneshot = mode != nullptr && std::string_view(mode) == "oneshot";
  t.units_per_block = num("QLAYER_CUDA_DECODE_UNITS_PER_BLOCK", 1);
  t.max_waves = num("QLAYER_CUDA_DECODE_MAX_WAVES", 4);
  t.max_grid = num("QLAYER_CUDA_DECODE_MAX_GRID", 1 << 30);
  return t;
}

// The one-shot schedule's split count: a score per chunk count (at least two
// chunks per split, so the pipeline has something to overlap): the fill of
// the slots over the waves, discounted for the tail of the last wave (blocks
// that finish early are replaced only when there is a next wave: ncu saw SMs
// idle 25% of a one-wave launch), minus the split-K traffic (M x N fp32
// atomics per split, against K x N / 2 bytes of weights) and a fixed cost
// for the split-K epilogue.
int OneShotSplits(const MmaLayoutArgs& l, int M, int n_blocks, int slots, int max_waves) {
  const double atomics_per_split = 0.5 * 8.0 * M / (64.0 * l.C) * (l.bits == 4 ? 1.0 : 0.5);
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
  // Chunks are spread evenly over the splits; keep every split >= 2 chunks.
  return std::clamp((l.C + cps - 1) / cps, 1, std::max(1, l.C / 2));
}

}  // namespace

int MmaDecodeMaxNBlocks(int NT) { return (NT + kWarps - 1) / kWarps; }
int MmaDecodeCounters(int NT) { return MmaDecodeMaxNBlocks(NT) + 1; }

cudaError_t LaunchMmaDecode(const MmaDecodeArgs& a, cudaStream_t stream,
                            MmaDecodeLaunchInfo* info) {
  const MmaLayoutArgs& l = a.layout;
  if (a.M <= 0) return cudaSuccess;
  if (a.M > 64 || l.C <= 0 || l.NT <= 0 || (l.bits != 4 && l.bits != 8) ||
      (l.rec_bytes != 32 && l.rec_bytes != 64 && l.rec_bytes != 96) ||
      static_cast<int64_t>(l.ngroups) * l.NT * l.rec_bytes >= (int64_t{1} << 31) ||
      MmaPackedTiles(l) * 32 * (l.bits / 4) >= (int64_t{1} << 31)) {
    return cudaErrorInvalidValue;  // (the kernel's record and uint4 weight offsets are 32-bit)
  }
  static const DecodeTuning tuning = ReadDecodeTuning();
  int cfg = 0;
  while (cfg < kNumConfigs - 1 && a.M > Config(l.bits, cfg).max_m) ++cfg;
  const KernelFn fn = Pick(l.bits, a.bf16, l.zeros, cfg);
  const int smem = SmemBytes(l.bits, cfg, l.rec_bytes);

  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  const bool cached = dev >= 0 && dev < kMaxCachedDevices;
  int sms = cached ? g_num_sms[dev].load(std::memory_order_relaxed) : 0;
  if (sms == 0) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err != cudaSuccess) return err;
    if (cached) g_num_sms[dev].store(sms, std::memory_order_relaxed);
  }
  const int slot = ((((l.bits == 8) * 2 + a.bf16) * 2 + l.zeros) * kNumConfigs + cfg) * 3 +
                   (l.rec_bytes / 32 - 1);
  int occ = cached ? g_blocks_per_sm[dev][slot].load(std::memory_order_relaxed) : 0;
  if (occ == 0) {
    err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, fn, kThreads, smem);
    if (err != cudaSuccess) return err;
    occ = std::max(occ, 1);
    if (cached) g_blocks_per_sm[dev][slot].store(occ, std::memory_order_relaxed);
  }

  const int bn = kWarps * Config(l.bits, cfg).wn;  // n16 tiles per block
  const int n_blocks = (l.NT + bn - 1) / bn;
  const int slots = sms * occ;
  const int max_splits = std::max(1, l.C / 2);  // every unit >= 2 chunks (the queue's protocol)
  int splits = 1;
  int64_t grid = 0;
  if (tuning.oneshot || l.C < 2) {
    splits = OneShotSplits(l, a.M, n_blocks, slots, tuning.max_waves);
    grid = static_cast<int64_t>(n_blocks) * splits;
  } else {
    // Persistent: one wave of resident blocks taking `units_per_block` units
    // each: the most splits whose units fit that many waves of the slots
    // exactly (a few more would leave most blocks idle while some take one
    // unit extra), so that the queue can even out blocks that stream at
    // different rates; but units long enough that the split-K sums (M x block
    // rows of fp32 atomics per unit, in L2) stay under half of the unit's
    // weight bytes (int4: M / 8 of a chunk's bytes per chunk; int8: M / 16).
    const int64_t want_units = static_cast<int64_t>(slots) * tuning.units_per_block;
    const int by_waves = static_cast<int>(std::max<int64_t>(1, want_units / n_blocks));
    const int min_chunks = std::max(2, (a.M + (l.bits == 4 ? 3 : 7)) / (l.bits == 4 ? 4 : 8));
    const int by_atomics = std::max(1, l.C / min_chunks);
    splits = std::clamp(std::min(by_waves, by_atomics), 1, max_splits);
    grid = std::min<int64_t>({slots, static_cast<int64_t>(n_blocks) * splits, tuning.max_grid});
  }
  const int cps = (l.C + splits - 1) / splits;

  if (info != nullptr) {
    info->m_tiles = Config(l.bits, cfg).mt;
    info->warp_n_tiles = Config(l.bits, cfg).wn;
    info->n_blocks = n_blocks;
    info->splits = splits;
    info->chunks_per_split = cps;
    info->blocks_per_sm = occ;
    info->grid = static_cast<int>(grid);
    info->smem_bytes = smem;
  }
  MmaDecodeArgs args = a;
  args.splits = splits;
  args.n_blocks = n_blocks;
  args.unit_chunks = l.C / splits;
  args.unit_extra = l.C % splits;
  args.inv_splits = 1.0 / splits;
  args.inv_geff = 1.0 / (l.geff ? l.geff : (1 << 30));
  args.queue = a.counters + MmaDecodeMaxNBlocks(l.NT);
  fn<<<static_cast<unsigned>(grid), kThreads, smem, stream>>>(args);
  return cudaGetLastError();
}

}  // namespace qlayer::cuda
