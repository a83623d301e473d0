// AVX2 inner loop of the cpu_avx2_w4a16 / cpu_avx2_w8a16 kernels, the
// fallback for x86-64 CPUs without AVX-512 (layout and math in
// ../quant_gemv_args.h and ../quant_gemv_kernel.cc). Compiled with
// -mavx2 -mfma -mf16c; selected only after CPUID + XCR0 say so.
//
// A 128-byte step holds one 32-bit word per column of the 32-column block,
// each word 8 (4-bit) or 4 (8-bit) consecutive rows as in the canonical
// qweight. Per column vector (8 words): AND + shift + cvtdq2ps give the q of
// one row as f32 (exact), one FMA per activation row (broadcast f32)
// accumulates. No offset: acc = sum x * q, and the segment ends with
// y += s * acc - s * z * sum(x). Activations of every dtype arrive as f32,
// so the only rounding is the f32 accumulation.
//
// Rows go 3 at a time: 12 accumulators + weight, value, mask and broadcast
// registers fill the 16 ymm.
//
// Nothing here has external linkage but the entry point: see
// quant_gemv_args.h for why.
#include <immintrin.h>

#include "cpu/quant_gemv_args.h"

namespace qlayer::gemv {
namespace {

constexpr int kBlockN = 32;
constexpr int kTileRows = 3;
// Software prefetch distance in the weight stream (as in the AVX-512 loop).
constexpr int kPrefetchBytes = 2048;

inline __m256 LoadScales(const uint8_t* p, ScaleKind kind, int j) {
  switch (kind) {
    case ScaleKind::kF16:
      return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p) + j));
    case ScaleKind::kBF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p) + j)), 16));
    default:
      return _mm256_load_ps(reinterpret_cast<const float*>(p) + 8 * j);
  }
}

inline __m256 LoadZeros(const uint8_t* p, ZeroKind kind, float sym, int j) {
  switch (kind) {
    case ZeroKind::kU8:
      return _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * j))));
    case ZeroKind::kU16:
      return _mm256_cvtepi32_ps(
          _mm256_cvtepu16_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p) + j)));
    default:
      return _mm256_set1_ps(sym);
  }
}

template <int R, int kBits>
void SegmentTile(const Args& a, const Segment& seg, const uint8_t* block, int64_t row0,
                 int64_t seg_index, float* y_tile) {
  constexpr int kPerWord = 32 / kBits;
  __m256 acc[R][4];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  }
  const float* x[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    x[r] = static_cast<const float*>(a.act) + (row0 + r) * a.act_stride + seg.act_offset;
  }
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  const uint8_t* w = block + seg.weight_offset;
  for (int64_t p = 0; p < seg.steps; ++p) {
    _mm_prefetch(reinterpret_cast<const char*>(w + 128 * p + kPrefetchBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + 128 * p + kPrefetchBytes + 64), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int j = 0; j < 4; ++j) {
      __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 128 * p) + j);
#pragma GCC unroll 16
      for (int i = 0; i < kPerWord; ++i) {
        const __m256 wf = _mm256_cvtepi32_ps(_mm256_and_si256(v, mask));
        v = _mm256_srli_epi32(v, kBits);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          acc[r][j] = _mm256_fmadd_ps(wf, _mm256_broadcast_ss(x[r] + p * kPerWord + i), acc[r][j]);
        }
      }
    }
  }
  const uint8_t* sp = block + seg.scale_offset;
  const uint8_t* zp = block + seg.zero_offset;
  const __m256 offset = _mm256_set1_ps(a.offset);
#pragma GCC unroll 16
  for (int j = 0; j < 4; ++j) {
    const __m256 s = LoadScales(sp, a.scale_kind, j);
    const __m256 z = LoadZeros(zp, a.zero_kind, a.sym_zero, j);
    const __m256 c = _mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_add_ps(offset, z)), s);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      float* yt = y_tile + r * kBlockN + 8 * j;
      const __m256 xs = _mm256_set1_ps(a.xsum[(row0 + r) * a.num_segments + seg_index]);
      __m256 y = _mm256_load_ps(yt);
      y = _mm256_fmadd_ps(acc[r][j], s, y);
      y = _mm256_fmadd_ps(c, xs, y);
      _mm256_store_ps(yt, y);
    }
  }
}

// f32 -> bf16 bits, round to nearest even, NaN kept quiet (as FloatToBf16).
inline __m128i ToBf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r =
      _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  r = _mm256_blendv_epi8(r, quiet, nan);
  const __m256i packed = _mm256_packus_epi32(r, r);  // per 128-bit lane
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

void StoreRow(const Args& a, int64_t m, int64_t n0, const float* y_tile) {
#pragma GCC unroll 16
  for (int j = 0; j < 4; ++j) {
    const int64_t n = n0 + 8 * j;
    if (n >= a.N) break;
    __m256 v = _mm256_load_ps(y_tile + (m * a.planes) * kBlockN + 8 * j);
    for (int p = 1; p < a.planes; ++p) {
      v = _mm256_add_ps(v, _mm256_load_ps(y_tile + (m * a.planes + p) * kBlockN + 8 * j));
    }
    if (a.bias != nullptr) v = _mm256_add_ps(v, _mm256_loadu_ps(a.bias + n));
    const int left = a.N - n >= 8 ? 8 : static_cast<int>(a.N - n);
    const int64_t at = m * a.N + n;
    if (a.out == OutKind::kF32) {
      const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lanes);
      _mm256_maskstore_ps(static_cast<float*>(a.y) + at, k, v);
      continue;
    }
    const __m128i h = a.out == OutKind::kBF16
                          ? ToBf16(v)
                          : _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    uint16_t* dst = static_cast<uint16_t*>(a.y) + at;
    if (left == 8) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), h);
    } else {
      alignas(16) uint16_t tmp[8];
      _mm_store_si128(reinterpret_cast<__m128i*>(tmp), h);
      for (int i = 0; i < left; ++i) dst[i] = tmp[i];
    }
  }
}

template <int kBits>
void RunBlocks(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile) {
  for (int64_t b = block_begin; b < block_end; ++b) {
    const uint8_t* block = a.packed + b * a.block_bytes;
    for (int64_t i = 0; i < a.rows * kBlockN; i += 8) {
      _mm256_store_ps(y_tile + i, _mm256_setzero_ps());
    }
    for (int64_t s = 0; s < a.num_segments; ++s) {
      const Segment& seg = a.segments[s];
      for (int64_t r0 = 0; r0 < a.rows; r0 += kTileRows) {
        float* yt = y_tile + r0 * kBlockN;
        switch (a.rows - r0 >= kTileRows ? kTileRows : a.rows - r0) {
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
    for (int64_t m = 0; m < a.M; ++m) StoreRow(a, m, b * kBlockN, y_tile);
  }
}

}  // namespace

void QuantGemvAvx2(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile) {
  if (a.bits == 4) {
    RunBlocks<4>(a, block_begin, block_end, y_tile);
  } else {
    RunBlocks<8>(a, block_begin, block_end, y_tile);
  }
}

}  // namespace qlayer::gemv

namespace qlayer::gemv {
namespace {

inline __m256 LoadInput8(const void* x, InKind in, int64_t i) {
  switch (in) {
    case InKind::kBF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128(
              reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i))),
          16));
    case InKind::kF16:
      return _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(x) + i)));
    default:
      return _mm256_loadu_ps(static_cast<const float*>(x) + i);
  }
}

inline float LoadInput1(const void* x, InKind in, int64_t i) {
  switch (in) {
    case InKind::kBF16: {
      const uint32_t u = static_cast<uint32_t>(static_cast<const uint16_t*>(x)[i]) << 16;
      float f;
      __builtin_memcpy(&f, &u, sizeof(f));
      return f;
    }
    case InKind::kF16:
      return _cvtsh_ss(static_cast<const uint16_t*>(x)[i]);
    default:
      return static_cast<const float*>(x)[i];
  }
}

}  // namespace

// Converts the row to f32 (exact for every input dtype) with per-segment sums.
void PrepareRowAvx2(const PrepArgs& p) {
  float* out = static_cast<float*>(p.act);
  int64_t row = 0;
  for (int64_t s = 0; s < p.num_segments; ++s) {
    const int64_t n = p.segments[s].steps * p.step_rows;
    __m256 sum = _mm256_setzero_ps();
    int64_t i = row;
    for (; i + 8 <= row + n; i += 8) {
      const __m256 v = LoadInput8(p.x, p.in, i);
      _mm256_storeu_ps(out + i, v);
      sum = _mm256_add_ps(sum, v);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, sum);
    float total = 0;
    for (int j = 0; j < 8; ++j) total += lanes[j];
    for (; i < row + n; ++i) {
      const float v = LoadInput1(p.x, p.in, i);
      out[i] = v;
      total += v;
    }
    p.xsum[s] = total;
    row += n;
  }
}

}  // namespace qlayer::gemv
