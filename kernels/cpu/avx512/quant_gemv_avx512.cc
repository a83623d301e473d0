// AVX-512 inner loop of the cpu_avx512_w4a16 / cpu_avx512_w8a16 kernels
// (the layout and the math are in ../quant_gemv_args.h and
// ../quant_gemv_kernel.cc). Compiled with -mavx512{f,bw,vl,dq,bf16}: the
// kernel is only selected after CPUID + XCR0 say these are present.
//
// Per 64-byte step (64 columns x 2 nibble rows): 2 shifts, 2 ternlogs and
// 4 byte unpacks make four bf16 vectors of 16 + q (exact: 5 significant
// bits), then one vdpbf16ps per vector and activation row multiplies them
// with an activation pair broadcast from memory, accumulating in f32. Each
// group (segment) ends with y += s * acc - s * (offset + z) * sum(x).
// bf16 x bf16 products are exact in f32, so the only rounding is the f32
// accumulation (f16 / f32 activations are split into 2 / 3 bf16 planes that
// sum to x exactly, see PrepareActivations).
//
// Rows go 4 at a time (16 accumulators + 4 weight vectors + 3 constants of
// the 32 zmm registers); a segment's weights (G/2 lines, 4 KiB for G = 128)
// stay in L1 while the row tiles after the first re-read them.
//
// Nothing here has external linkage but the entry point: see
// quant_gemv_args.h for why.
#include <immintrin.h>

#include "cpu/avx512/quant_gemv_avx512_common.h"
#include "cpu/quant_gemv_args.h"

namespace qlayer::gemv {
namespace {

using avx512::kBlockN;
constexpr int kTileRows = 4;
// Software prefetch distance in the weight stream. The hardware prefetchers
// alone leave a core at 60-70% of the DRAM floor at M = 1; 1-4 KiB ahead
// reaches it (measured, kernels/cpu/bench), the block's stream being linear
// (scales and the next segment follow the weights).
constexpr int kPrefetchBytes = 2048;

inline __m512bh BroadcastPair(const uint16_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, sizeof(v));
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(v));
}

// acc[r][0..3] over one segment for R activation rows, then folded into
// y_tile rows r (64 floats each) with the segment's scales and zeros.
template <int R>
void SegmentTile(const Args& a, const Segment& seg, const uint8_t* block, int64_t row0,
                 int64_t seg_index, float* y_tile) {
  __m512 acc[R][4];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const uint16_t* x[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    x[r] = static_cast<const uint16_t*>(a.act) + (row0 + r) * a.act_stride + seg.act_offset;
  }
  const __m512i m78 = _mm512_set1_epi8(0x78);
  const __m512i c80 = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i c41 = _mm512_set1_epi8(0x41);
  const uint8_t* w = block + seg.weight_offset;
  for (int64_t p = 0; p < seg.steps; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 64 * p + kPrefetchBytes), _MM_HINT_T0);
    const __m512i v = _mm512_load_si512(w + 64 * p);
    // (A & B) | C with A the shifted bytes, B = 0x78, C = 0x80: imm 0xEA.
    const __m512i lo = _mm512_ternarylogic_epi32(_mm512_slli_epi16(v, 3), m78, c80, 0xEA);
    const __m512i hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v, 1), m78, c80, 0xEA);
    __m512bh wv[4];
    wv[0] = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi8(lo, c41));
    wv[1] = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi8(lo, c41));
    wv[2] = reinterpret_cast<__m512bh>(_mm512_unpacklo_epi8(hi, c41));
    wv[3] = reinterpret_cast<__m512bh>(_mm512_unpackhi_epi8(hi, c41));
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512bh xb = BroadcastPair(x[r] + 2 * p);
#pragma GCC unroll 16
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], wv[j], xb);
    }
  }
  avx512::AddSegment<R>(a, seg, block, row0, seg_index, acc, y_tile);
}

// AVX512_BF16's rounding (round to nearest even, as FloatToBf16).
inline __m256i ToBf16(__m512 v) { return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)); }

}  // namespace

void QuantGemvAvx512(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile) {
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
            SegmentTile<4>(a, seg, block, r0, s, yt);
            break;
          case 3:
            SegmentTile<3>(a, seg, block, r0, s, yt);
            break;
          case 2:
            SegmentTile<2>(a, seg, block, r0, s, yt);
            break;
          default:
            SegmentTile<1>(a, seg, block, r0, s, yt);
            break;
        }
      }
    }
    for (int64_t m = 0; m < a.M; ++m) avx512::StoreRow(a, m, b * kBlockN, y_tile, ToBf16);
  }
}

}  // namespace qlayer::gemv

namespace qlayer::gemv {
namespace {

inline __m512 Bf16BitsToF32(__m256i b) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16));
}

}  // namespace

// Splits each value v into planes p0 + p1 (+ p2) = v, each the bf16 nearest
// to what is left (exact: f16 has 11 significant bits, f32 24, bf16 8), and
// writes plane p's row; 8-bit weights take each value as the pair
// (16 * v, v) to meet their (hi, lo) nibble rows.
void PrepareRowAvx512(const PrepArgs& p) {
  int64_t row = 0;
  for (int64_t s = 0; s < p.num_segments; ++s) {
    const int64_t n = p.segments[s].steps * p.step_rows;
    __m512 sum[3] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t i = row; i < row + n; i += 16) {
      const int64_t left = row + n - i;
      const __mmask16 k = avx512::FirstLanes(left);
      __m512 rest = avx512::LoadInput(p.x, p.in, i, k);
#pragma GCC unroll 16
      for (int pl = 0; pl < p.planes; ++pl) {
        const __m256i bits = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(rest));
        const __m512 v = Bf16BitsToF32(bits);
        rest = _mm512_sub_ps(rest, v);
        sum[pl] = _mm512_add_ps(sum[pl], v);
        uint16_t* out = static_cast<uint16_t*>(p.act) + pl * p.act_stride;
        if (p.bits == 4) {
          _mm256_mask_storeu_epi16(out + i, k, bits);
        } else {
          const __m256i bits16 =
              reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_mul_ps(v, _mm512_set1_ps(16))));
          const __m512i pair = _mm512_or_si512(_mm512_cvtepu16_epi32(bits16),
                                               _mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
          _mm512_mask_storeu_epi32(out + 2 * i, k, pair);
        }
      }
    }
#pragma GCC unroll 16
    for (int pl = 0; pl < p.planes; ++pl) {
      p.xsum[pl * p.num_segments + s] = _mm512_reduce_add_ps(sum[pl]);
    }
    row += n;
  }
}

}  // namespace qlayer::gemv
