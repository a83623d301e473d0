// AVX-512 FMA inner loop of the cpu_avx512fma_w4a16 / cpu_avx512fma_w8a16
// kernels: for AVX-512 CPUs without AVX512_BF16 (Skylake-SP, Cascade Lake,
// Ice Lake), where the vdpbf16ps loop of quant_gemv_avx512.cc cannot run and
// the AVX2 loop reaches a quarter of the bandwidth floor. Compiled with
// -mavx512{f,bw,vl,dq} and no -mavx512bf16 / -mavx512vnni (see
// kernels/CMakeLists.txt), so the compiler cannot emit an instruction such a
// CPU lacks; selected only after CPUID + XCR0 say F/BW/VL/DQ are there.
//
// It reads the same packed weight as the BF16 loop (quant_gemv_kernel.cc:
// 64-column blocks, one 64-byte line per step, nibbles placed for the byte
// unpack): the same 2 shifts, 2 ternlogs and 4 byte unpacks make four vectors
// of 16-bit lanes 0x41:(0x80 | q << 3), the bf16 of 16 + q. A bf16 is the top
// half of the f32 of the same value, so each dword (two nibble rows) becomes
// two f32 vectors with one op each: `<< 16` (half 0) and `& 0xFFFF0000`
// (half 1), exact. Then one vfmadd231ps per vector and activation row, the
// activation an f32 broadcast from memory:
//   4-bit: halves are rows 2p and 2p+1: 8 FMAs per row tile row and step.
//   8-bit: halves are (16 + hi, 16 + lo) of one row; 16 * (16 + hi) + (16 + lo)
//          = q + 272 (one FMA, exact: < 2^10), then 4 FMAs per row.
// The offsets (16, 272) are what quant_gemv_args.h's `offset` removes per
// segment, as in the BF16 loop. Activations arrive as f32 (converted once
// per call by PrepareRowAvx512Fma, exact for every input dtype), so there are
// no bf16 planes and the only rounding is the f32 accumulation.
//
// Per 64-byte line: 16 integer ops + 8 (4-bit) or 4 + 4 (8-bit) FMAs per row,
// twice the BF16 loop's op count per row; at M = 1 that still streams at the
// bandwidth floor on a core, at M = 4-16 it is FMA-bound (BENCHMARKS.md).
//
// Rows go 4 at a time: 16 accumulators + 8 weight vectors + 4 constants of
// the 32 zmm registers.
//
// Nothing here has external linkage but the entry points: see
// quant_gemv_args.h for why.
#include <immintrin.h>

#include "cpu/avx512/quant_gemv_avx512_common.h"
#include "cpu/quant_gemv_args.h"

namespace qlayer::gemv {
namespace {

using avx512::kBlockN;
constexpr int kTileRows = 4;
// Software prefetch distance in the weight stream (as in the BF16 loop).
constexpr int kPrefetchBytes = 2048;

// f32 -> bf16 bits without AVX512_BF16: round to nearest even, NaN kept
// quiet (as FloatToBf16 and the AVX2 loop's ToBf16).
inline __m256i ToBf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan,
                            _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
  return _mm512_cvtepi32_epi16(r);
}

// acc[r][0..3] over one segment for R activation rows, then folded into
// y_tile rows r (64 floats each) with the segment's scales and zeros.
template <int R, int kBits>
void SegmentTile(const Args& a, const Segment& seg, const uint8_t* block, int64_t row0,
                 int64_t seg_index, float* y_tile) {
  __m512 acc[R][4];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const float* x[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    x[r] = static_cast<const float*>(a.act) + (row0 + r) * a.act_stride + seg.act_offset;
  }
  const __m512i m78 = _mm512_set1_epi8(0x78);
  const __m512i c80 = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i c41 = _mm512_set1_epi8(0x41);
  const __m512i hi_half = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const uint8_t* w = block + seg.weight_offset;
  for (int64_t p = 0; p < seg.steps; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 64 * p + kPrefetchBytes), _MM_HINT_T0);
    const __m512i v = _mm512_load_si512(w + 64 * p);
    // (A & B) | C with A the shifted bytes, B = 0x78, C = 0x80: imm 0xEA.
    const __m512i lo = _mm512_ternarylogic_epi32(_mm512_slli_epi16(v, 3), m78, c80, 0xEA);
    const __m512i hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 1), m78, c80, 0xEA);
    __m512i u[4];
    u[0] = _mm512_unpacklo_epi8(lo, c41);
    u[1] = _mm512_unpackhi_epi8(lo, c41);
    u[2] = _mm512_unpacklo_epi8(hi, c41);
    u[3] = _mm512_unpackhi_epi8(hi, c41);
    __m512 h0[4], h1[4];  // the f32 of pair halves 0 and 1 (16 + nibble)
#pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) {
      h0[j] = _mm512_castsi512_ps(_mm512_slli_epi32(u[j], 16));
      h1[j] = _mm512_castsi512_ps(_mm512_and_si512(u[j], hi_half));
    }
    if constexpr (kBits == 4) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 x0 = _mm512_set1_ps(x[r][2 * p]);
        const __m512 x1 = _mm512_set1_ps(x[r][2 * p + 1]);
#pragma GCC unroll 16
        for (int j = 0; j < 4; ++j) {
          acc[r][j] = _mm512_fmadd_ps(h0[j], x0, acc[r][j]);
          acc[r][j] = _mm512_fmadd_ps(h1[j], x1, acc[r][j]);
        }
      }
    } else {
      __m512 q[4];  // q + 272
#pragma GCC unroll 16
      for (int j = 0; j < 4; ++j) q[j] = _mm512_fmadd_ps(h0[j], _mm512_set1_ps(16.0f), h1[j]);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const __m512 x0 = _mm512_set1_ps(x[r][p]);
#pragma GCC unroll 16
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_fmadd_ps(q[j], x0, acc[r][j]);
      }
    }
  }
  avx512::AddSegment<R>(a, seg, block, row0, seg_index, acc, y_tile);
}

template <int kBits>
void RunBlocks(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const uint8_t* block = a.packed + b * a.block_bytes;
    for (int64_t i = 0; i < a.rows * kBlockN; i += 16) {
      _mm512_store_ps(y_tile + i, _mm512_setzero_ps());
    }
    for (int64_t s = 0; s < a.num_segments; ++s) {
      const Segment& seg = a.segments[s];
      for (int64_t r0 = 0; r0 < a.rows; r0 += kTileRows) {
        float* yt = y_tile + r0 * kBlockN;
        switch (a.rows - r0 >= kTileRows ? kTileRows : a.rows - r0) {
          case 4:
            SegmentTile<4, kBits>(a, seg, block, r0, s, yt);
            break;
          case 3:
            SegmentTile<3, kBits>(a, seg, block, r0, s, yt);
            break;
          case 2:
            SegmentTile<2, kBits>(a, seg, block, r0, s, yt);
            break;
          default:
            SegmentTile<1, kBits>(a, seg, block, r0, s, yt);
            break;
        }
      }
    }
    for (int64_t m = 0; m < a.M; ++m) avx512::StoreRow(a, m, b * kBlockN, y_tile, ToBf16);
  }
}

}  // namespace

void QuantGemvAvx512Fma(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile) {
  if (a.bits == 4) {
    RunBlocks<4>(a, block_begin, block_end, y_tile);
  } else {
    RunBlocks<8>(a, block_begin, block_end, y_tile);
  }
}

// Converts the row to f32 (exact for every input dtype) with per-segment
// sums; one plane, one value per row for both weight widths.
void PrepareRowAvx512Fma(const PrepArgs& p) {
  float* out = static_cast<float*>(p.act);
  int64_t row = 0;
  for (int64_t s = 0; s < p.num_segments; ++s) {
    const int64_t n = p.segments[s].steps * p.step_rows;
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = row; i < row + n; i += 16) {
      const __mmask16 k = avx512::FirstLanes(row + n - i);
      const __m512 v = avx512::LoadInput(p.x, p.in, i, k);
      _mm512_mask_storeu_ps(out + i, k, v);
      sum = _mm512_add_ps(sum, v);
    }
    p.xsum[s] = _mm512_reduce_add_ps(sum);
    row += n;
  }
}

}  // namespace qlayer::gemv
