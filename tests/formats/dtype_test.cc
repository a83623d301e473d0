// fp16 / bf16 <-> float conversions (kernels/core/dtype.cc) against references
// built from the IEEE definitions: every 16-bit pattern decoded and
// round-tripped, and random floats rounded to the nearest value (ties to
// even) found by searching the sorted table of representable values.
#include "qlayer/kernels/dtype.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

float FloatFromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t BitsOfFloat(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Magnitudes of fp16 patterns 0x0000 .. 0x7C00, increasing; 0x7C00 (inf)
// stands at 65536, where the next binade would start, so that IEEE overflow
// rounding (ties to even -> inf at 65520) falls out of the search.
const std::vector<double>& HalfTable() {
  static const std::vector<double> table = [] {
    std::vector<double> t(0x7C01);
    for (uint32_t p = 0; p < 0x7C00; ++p) t[p] = HalfBitsToDouble(static_cast<uint16_t>(p));
    t[0x7C00] = 65536.0;
    return t;
  }();
  return table;
}

// Nearest fp16 to x (not NaN), ties to the even pattern.
uint16_t RefFloatToHalf(double x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(x);
  const std::vector<double>& t = HalfTable();
  if (a >= t[0x7C00]) return sign | 0x7C00;
  // Largest pattern with value <= a.
  const size_t lo = static_cast<size_t>(std::upper_bound(t.begin(), t.end(), a) - t.begin()) - 1;
  if (t[lo] == a) return static_cast<uint16_t>(sign | lo);
  const size_t hi = lo + 1;
  const double dlo = a - t[lo], dhi = t[hi] - a;
  size_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<uint16_t>(sign | pick);
}

// Nearest bf16 to a finite float, ties to even: the two candidates are the
// truncated pattern and the next one up in magnitude (0x7F80 = inf acts as
// 2^128 for the comparison).
uint16_t RefFloatToBf16(float f) {
  const uint32_t u = BitsOfFloat(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  const uint16_t lo = static_cast<uint16_t>((u >> 16) & 0x7FFF);
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double a = std::fabs(static_cast<double>(f));
  const double vlo = Bf16BitsToDouble(lo);
  const double vhi = hi == 0x7F80 ? std::ldexp(1.0, 128) : Bf16BitsToDouble(hi);
  if (a == vlo) return sign | lo;
  const double dlo = a - vlo, dhi = vhi - a;
  const uint16_t pick = dlo < dhi ? lo : dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi);
  return sign | pick;
}

TEST(DTypeTest, EveryHalfPatternDecodesAndRoundTrips) {
  for (uint32_t p = 0; p <= 0xFFFF; ++p) {
    const uint16_t h = static_cast<uint16_t>(p);
    const float f = HalfToFloat(h);
    const double ref = HalfBitsToDouble(h);
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << p;
      const uint16_t back = FloatToHalf(f);
      ASSERT_EQ(back & 0x7C00, 0x7C00) << std::hex << p;
      ASSERT_NE(back & 0x03FF, 0) << "NaN must stay NaN: " << std::hex << p;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << p;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref) << std::hex << p;
    ASSERT_EQ(std::signbit(f), std::signbit(ref)) << std::hex << p;
    ASSERT_EQ(FloatToHalf(f), h) << std::hex << p;
  }
}

TEST(DTypeTest, EveryBf16PatternDecodesAndRoundTrips) {
  for (uint32_t p = 0; p <= 0xFFFF; ++p) {
    const uint16_t b = static_cast<uint16_t>(p);
    const float f = Bf16ToFloat(b);
    const double ref = Bf16BitsToDouble(b);
    if (std::isnan(ref)) {
      ASSERT_TRUE(std::isnan(f)) << std::hex << p;
      ASSERT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(f)))) << std::hex << p;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref) << std::hex << p;
    ASSERT_EQ(FloatToBf16(f), b) << std::hex << p;
  }
}

// Floats around the fp16 range: random patterns over exponents from below
// the smallest fp16 subnormal to past the overflow point, exact midpoints
// between neighbouring fp16 values, and fixed edge cases.
std::vector<float> HalfRoundingInputs(std::mt19937_64& rng) {
  std::vector<float> in;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t sign = static_cast<uint32_t>(rng() & 1) << 31;
    const uint32_t exp = 127 - 30 + static_cast<uint32_t>(rng() % 48);  // 2^-30 .. 2^17
    in.push_back(FloatFromBits(sign | (exp << 23) | static_cast<uint32_t>(rng() & 0x7FFFFF)));
  }
  const std::vector<double>& t = HalfTable();
  for (int i = 0; i < 50000; ++i) {
    const size_t p = static_cast<size_t>(rng() % 0x7C00);  // midpoint of p and p + 1
    const double mid = (t[p] + t[p + 1]) / 2;              // exact in float
    in.push_back(static_cast<float>((rng() & 1) ? mid : -mid));
  }
  for (float f :
       {0.0f, -0.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 1e30f, -1e30f,
        5.9604645e-8f /* 2^-24 */, 2.9802322e-8f /* 2^-25, tie -> 0 */,
        2.9802326e-8f /* just above 2^-25 -> 2^-24 */, 6.097555e-5f /* max subnormal */,
        6.1035156e-5f /* min normal */, 1e-45f /* float subnormal */, INFINITY, -INFINITY}) {
    in.push_back(f);
  }
  return in;
}

TEST(DTypeTest, FloatToHalfRoundsToNearestEven) {
  SCOPED_TRACE(SeedTrace(31));
  std::mt19937_64 rng(TestSeed() ^ 31);
  int64_t bad = 0;
  for (float f : HalfRoundingInputs(rng)) {
    const uint16_t got = FloatToHalf(f);
    const uint16_t want = RefFloatToHalf(static_cast<double>(f));
    if (got != want && bad++ < 5) {
      ADD_FAILURE() << "FloatToHalf(" << f << " = 0x" << std::hex << BitsOfFloat(f) << ") = 0x"
                    << got << ", want 0x" << want;
    }
  }
  EXPECT_EQ(bad, 0);
}

TEST(DTypeTest, FloatToBf16RoundsToNearestEven) {
  SCOPED_TRACE(SeedTrace(32));
  std::mt19937_64 rng(TestSeed() ^ 32);
  int64_t bad = 0;
  for (int i = 0; i < 300000; ++i) {
    uint32_t u = static_cast<uint32_t>(rng());
    if (i % 4 == 0) u = (u & 0xFFFF0000u) | 0x8000u;  // exact tie
    const float f = FloatFromBits(u);
    if (std::isnan(f)) continue;
    const uint16_t got = FloatToBf16(f);
    const uint16_t want = RefFloatToBf16(f);
    if (got != want && bad++ < 5) {
      ADD_FAILURE() << "FloatToBf16(0x" << std::hex << u << ") = 0x" << got << ", want 0x" << want;
    }
  }
  EXPECT_EQ(bad, 0);
  // NaN stays a NaN (quiet), whatever its payload.
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FloatFromBits(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(FloatFromBits(0xFFC00000u)))));
}

}  // namespace
}  // namespace qlayer::formats_test
