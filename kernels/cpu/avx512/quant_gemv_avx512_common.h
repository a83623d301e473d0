// What the two AVX-512 inner loops share: the 64-column block's scale and
// zero loads, the activation load of the per-call prep, and the store of a
// finished output row. Included by quant_gemv_avx512.cc (AVX512_BF16 dot
// products) and quant_gemv_avx512_fma.cc (F/BW/VL/DQ only, FMA).
//
// Everything here is `static`: each file gets its own copy, compiled with its
// own flags. The FMA file's copy must never meet an AVX512_BF16 instruction
// (it runs on CPUs without one), hence no extern inline functions (the linker
// could keep either file's copy) and the bf16 rounding of StoreRow passed in.
#ifndef QLAYER_KERNELS_CPU_AVX512_QUANT_GEMV_AVX512_COMMON_H_
#define QLAYER_KERNELS_CPU_AVX512_QUANT_GEMV_AVX512_COMMON_H_

#include <immintrin.h>

#include "cpu/quant_gemv_args.h"

namespace qlayer::gemv::avx512 {

// Columns per packed block (the layout of quant_gemv_kernel.cc's
// Avx512Position): four 16-lane f32 vectors.
constexpr int kBlockN = 64;

// Scales of block columns 16j..16j+15 as f32.
static inline __m512 LoadScales(const uint8_t* p, ScaleKind kind, int j) {
  switch (kind) {
    case ScaleKind::kF16:
      return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p) + j));
    case ScaleKind::kBF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(p) + j)), 16));
    default:
      return _mm512_load_ps(reinterpret_cast<const float*>(p) + 16 * j);
  }
}

// Zero points of block columns 16j..16j+15 as f32 (sym when none are stored).
static inline __m512 LoadZeros(const uint8_t* p, ZeroKind kind, float sym, int j) {
  switch (kind) {
    case ZeroKind::kU8:
      return _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p) + j)));
    case ZeroKind::kU16:
      return _mm512_cvtepi32_ps(
          _mm512_cvtepu16_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(p) + j)));
    default:
      return _mm512_set1_ps(sym);
  }
}

// Up to 16 activations from i (lanes outside k read as 0), exactly as f32.
static inline __m512 LoadInput(const void* x, InKind in, int64_t i, __mmask16 k) {
  switch (in) {
    case InKind::kBF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(x) + i)),
          16));
    case InKind::kF16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, static_cast<const uint16_t*>(x) + i));
    default:
      return _mm512_maskz_loadu_ps(k, static_cast<const float*>(x) + i);
  }
}

// The mask of the first `left` of 16 lanes.
static inline __mmask16 FirstLanes(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

// Adds one segment's dot products acc[r][j] (rows row0.., 16 columns each of
// the block's 64) to y_tile, dequantized: y += s * acc - s * (offset + z) *
// sum(x over the segment), the zero point folded into the row's x sum.
template <int R>
static inline void AddSegment(const Args& a, const Segment& seg, const uint8_t* block, int64_t row0,
                              int64_t seg_index, const __m512 (&acc)[R][4], float* y_tile) {
  const uint8_t* sp = block + seg.scale_offset;
  const uint8_t* zp = block + seg.zero_offset;
  const __m512 offset = _mm512_set1_ps(a.offset);
#pragma GCC unroll 16
  for (int j = 0; j < 4; ++j) {
    const __m512 s = LoadScales(sp, a.scale_kind, j);
    const __m512 z = LoadZeros(zp, a.zero_kind, a.sym_zero, j);
    const __m512 c = _mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_add_ps(offset, z)), s);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float* yt = y_tile + r * kBlockN + 16 * j;
      const __m512 xs = _mm512_set1_ps(a.xsum[(row0 + r) * a.num_segments + seg_index]);
      __m512 y = _mm512_load_ps(yt);
      y = _mm512_fmadd_ps(acc[r][j], s, y);
      y = _mm512_fmadd_ps(c, xs, y);
      _mm512_store_ps(yt, y);
    }
  }
}

// Output row m, block columns from n0: the sum of the row's planes in y_tile
// (kBlockN floats per tile row), plus bias, written in the output dtype with
// only the columns below N stored. to_bf16 rounds 16 f32 to bf16 bits.
template <typename ToBf16>
static inline void StoreRow(const Args& a, int64_t m, int64_t n0, const float* y_tile,
                            ToBf16 to_bf16) {
#pragma GCC unroll 16
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 16 * j;
    if (n >= a.N) break;
    __m512 v = _mm512_load_ps(y_tile + (m * a.planes) * kBlockN + 16 * j);
    for (int p = 1; p < a.planes; ++p) {
      v = _mm512_add_ps(v, _mm512_load_ps(y_tile + (m * a.planes + p) * kBlockN + 16 * j));
    }
    if (a.bias != nullptr) v = _mm512_add_ps(v, _mm512_loadu_ps(a.bias + n));
    const __mmask16 k = FirstLanes(a.N - n);
    const int64_t at = m * a.N + n;
    switch (a.out) {
      case OutKind::kF32:
        _mm512_mask_storeu_ps(static_cast<float*>(a.y) + at, k, v);
        break;
      case OutKind::kBF16:
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(a.y) + at, k, to_bf16(v));
        break;
      case OutKind::kF16:
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(a.y) + at, k,
                                 _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        break;
    }
  }
}

}  // namespace qlayer::gemv::avx512

#endif  // QLAYER_KERNELS_CPU_AVX512_QUANT_GEMV_AVX512_COMMON_H_
