// QuantizeRtn: every dequantized weight is within half a step (of the stored
// scale) of the input, and act-order maps put exactly G rows in each group.
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/formats.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

TEST(QuantizeRtnTest, ErrorWithinHalfAStep) {
  SCOPED_TRACE(SeedTrace(21));
  std::mt19937_64 rng(TestSeed() ^ 21);
  const int64_t N = 24, K = 256;
  const std::vector<float> dense = RandomWeights(N, K, rng);
  for (WeightType wt :
       {WeightType::kUint4, WeightType::kUint4b8, WeightType::kUint8, WeightType::kUint8b128}) {
    for (int64_t group : {32, -1, 0}) {
      for (DType sd : {DType::kF16, DType::kBF16, DType::kF32}) {
        for (bool act_order : {false, true}) {
          SCOPED_TRACE(absl::StrCat(WeightTypeName(wt), " group=", group, " ", DTypeName(sd),
                                    act_order ? " act_order" : ""));
          QuantizeOptions opt{wt, group, sd, act_order, rng()};
          absl::StatusOr<QuantizedLinear> w = QuantizeRtn(dense.data(), N, K, opt);
          ASSERT_TRUE(w.ok()) << w.status();
          ASSERT_TRUE(w->Validate().ok());
          EXPECT_EQ(w->scales.dtype(), sd);
          EXPECT_EQ(w->group_size, group > 0 ? group : K);
          int64_t bad = 0;
          for (int64_t k = 0; k < K; ++k) {
            for (int64_t n = 0; n < N; ++n) {
              const int64_t g = w->group_of(k);
              // Scale read back independently of the library's conversions.
              const double s = RefLoad(w->scales.view(), g * N + n);
              ASSERT_GT(s, 0);
              const double x = dense[n * K + k];
              const double err = std::fabs(x - w->Dequant(k, n));
              // Round to nearest with the stored scale; scales are rounded
              // up, so even the clamped range ends stay within half a step.
              const int32_t q = w->q(k, n);
              const double bound = 0.5 * s * (1 + 1e-12);
              if (err > bound && bad++ < 5) {
                ADD_FAILURE() << "k=" << k << " n=" << n << " x=" << x << " q=" << q
                              << " err=" << err << " s=" << s;
              }
            }
          }
          EXPECT_EQ(bad, 0);
          if (group == 0) {  // one scale for the whole tensor
            for (int64_t n = 1; n < N; ++n) {
              EXPECT_EQ(RefLoad(w->scales.view(), n), RefLoad(w->scales.view(), 0));
              EXPECT_EQ(w->zero(0, n), w->zero(0, 0));
            }
          }
        }
      }
    }
  }
}

TEST(QuantizeRtnTest, ActOrderMapsRowsToGroupsOfG) {
  SCOPED_TRACE(SeedTrace(22));
  std::mt19937_64 rng(TestSeed() ^ 22);
  const int64_t N = 8, K = 192, G = 32;
  const std::vector<float> dense = RandomWeights(N, K, rng);
  QuantizeOptions opt{WeightType::kUint4, G, DType::kF16, true, rng()};
  absl::StatusOr<QuantizedLinear> a = QuantizeRtn(dense.data(), N, K, opt);
  absl::StatusOr<QuantizedLinear> b = QuantizeRtn(dense.data(), N, K, opt);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_FALSE(a->g_idx.empty());
  EXPECT_TRUE(SameTensor(a->g_idx.view(), b->g_idx.view())) << "same seed, same map";
  std::vector<int> count(K / G, 0);
  for (int64_t k = 0; k < K; ++k) ++count[a->g_idx.as<int32_t>()[k]];
  for (int c : count) EXPECT_EQ(c, G);
  opt.seed ^= 1;
  absl::StatusOr<QuantizedLinear> c = QuantizeRtn(dense.data(), N, K, opt);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(SameTensor(a->g_idx.view(), c->g_idx.view())) << "seed must matter";
  // One group: the map is trivially all zeros and is not kept.
  opt.group_size = -1;
  absl::StatusOr<QuantizedLinear> ch = QuantizeRtn(dense.data(), N, K, opt);
  ASSERT_TRUE(ch.ok());
  EXPECT_TRUE(ch->g_idx.empty());
}

TEST(QuantizeRtnTest, AsymmetricRangeIncludesZero) {
  // All-positive rows: GPTQ widens the range to 0, so z = 0 and 0.0 is exact.
  const int64_t N = 2, K = 8;
  const std::vector<float> dense = {1, 2, 3, 4, 5, 6, 7, 7.5f, 0.5f, 1, 1, 1, 1, 1, 1, 1};
  QuantizeOptions opt{WeightType::kUint4, -1, DType::kF32, false, 0};
  absl::StatusOr<QuantizedLinear> w = QuantizeRtn(dense.data(), N, K, opt);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->zero(0, 0), 0);
  EXPECT_EQ(w->zero(0, 1), 0);
  EXPECT_DOUBLE_EQ(RefLoad(w->scales.view(), 0), 7.5 / 15);
  EXPECT_DOUBLE_EQ(w->Dequant(7, 0), 7.5);
  EXPECT_DOUBLE_EQ(w->Dequant(0, 0), 1.0);
}

TEST(QuantizeRtnTest, RejectsBadInput) {
  std::vector<float> dense(16 * 32, 0.5f);
  QuantizeOptions opt;
  opt.group_size = 32;
  EXPECT_TRUE(QuantizeRtn(dense.data(), 16, 32, opt).ok());
  dense[40] = NAN;
  EXPECT_EQ(QuantizeRtn(dense.data(), 16, 32, opt).status().code(),
            absl::StatusCode::kInvalidArgument);
  dense[40] = 0.5f;
  opt.wtype = WeightType::kDense;
  EXPECT_FALSE(QuantizeRtn(dense.data(), 16, 32, opt).ok());
  opt.wtype = WeightType::kUint8;
  opt.scale_dtype = DType::kI32;
  EXPECT_FALSE(QuantizeRtn(dense.data(), 16, 32, opt).ok());
  opt.scale_dtype = DType::kF16;
  EXPECT_FALSE(QuantizeRtn(dense.data(), 16, 30, opt).ok());  // K % pack
  opt.group_size = 64;
  EXPECT_FALSE(QuantizeRtn(dense.data(), 4, 96, opt).ok());  // K % group
}

}  // namespace
}  // namespace qlayer::formats_test
