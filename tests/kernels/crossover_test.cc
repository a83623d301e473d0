// MeasureCrossover's choice and cache, with kernels whose timing is a
// scripted function of M (random per run: the crossover point and the
// times are drawn, so no expected value is written down).
#include "qlayer/kernels/crossover.h"

#include <cstdio>
#include <functional>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

class TimedKernel final : public LinearKernel {
 public:
  explicit TimedKernel(std::function<absl::StatusOr<double>(int64_t)> us) : us_(std::move(us)) {}
  absl::string_view name() const override { return "timed"; }
  absl::Status Prepare(const QuantizedLinear&, const Device&) override { return absl::OkStatus(); }
  absl::Status Forward(const ConstTensorView&, const TensorView&, ExecContext&) const override {
    return absl::UnimplementedError("not a real kernel");
  }
  int64_t prepared_bytes() const override { return 0; }
  absl::StatusOr<double> MeasureForwardUs(int64_t M, DType) const override {
    ++calls;
    return us_(M);
  }
  mutable int calls = 0;

 private:
  std::function<absl::StatusOr<double>(int64_t)> us_;
};

uint64_t Seed() {
  static const uint64_t seed = [] {
    const uint64_t s = std::random_device{}();
    std::printf("crossover test seed: %llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

TEST(Crossover, HandsOverAtTheLastCandidateTheSmallKernelWins) {
  std::mt19937_64 rng(Seed());
  const std::vector<int64_t>& cand = CrossoverCandidates();
  for (int trial = 0; trial < 50; ++trial) {
    ClearCrossoverCache();
    // small: a + b M, large: c + d M with d < b, crossing between two
    // candidates (or past the last, or before the first).
    const size_t cross = std::uniform_int_distribution<size_t>(0, cand.size())(rng);
    const double b = std::uniform_real_distribution<double>(0.5, 3.0)(rng);
    const double d = b * std::uniform_real_distribution<double>(0.05, 0.5)(rng);
    // The lines meet a quarter of the way from candidate cross-1 to cross:
    // there `large` leads by > 7 % (a <= 2, d <= b / 2), past the margin.
    const double lo_m = cross == 0 ? 0.0 : static_cast<double>(cand[cross - 1]);
    const double hi_m = cross == cand.size() ? 1000.0 : static_cast<double>(cand[cross]);
    const double meet = lo_m + 0.25 * (hi_m - lo_m);
    const double a = std::uniform_real_distribution<double>(0.5, 2.0)(rng);
    const double c = a + (b - d) * meet;
    TimedKernel small([&](int64_t m) { return a + b * m; });
    TimedKernel large([&](int64_t m) { return c + d * m; });
    absl::StatusOr<Crossover> x =
        MeasureCrossover("key", small, large, DType::kF16, 1, cand.back());
    ASSERT_TRUE(x.ok()) << x.status();
    const int64_t want = cross == 0 ? 1 : cand[cross - 1];
    EXPECT_EQ(x->max_m, want) << "trial " << trial << " meet " << meet << " " << x->detail;
    EXPECT_FALSE(x->cached);
    EXPECT_NE(x->detail.find("M=1 "), std::string::npos) << x->detail;
    // Timing stops at the first loss: candidates past it are never timed.
    EXPECT_EQ(small.calls, static_cast<int>(std::min(cross + 1, cand.size())));
  }
}

TEST(Crossover, RespectsTheBoundsAndTheMargin) {
  ClearCrossoverCache();
  // large wins everywhere: the hand-over is min_m.
  TimedKernel slow([](int64_t) { return 100.0; });
  TimedKernel fast([](int64_t) { return 10.0; });
  absl::StatusOr<Crossover> x = MeasureCrossover("a", slow, fast, DType::kF16, 17, 64);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->max_m, 17);
  EXPECT_NE(x->detail.find("M=24 "), std::string::npos) << x->detail;  // first candidate >= 17
  // small always wins: the largest candidate within max_m.
  x = MeasureCrossover("b", fast, slow, DType::kF16, 1, 40);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->max_m, 32);
  // A 2 % lead of `large` is within the margin: small keeps the rows.
  TimedKernel near([](int64_t) { return 98.0; });
  x = MeasureCrossover("c", slow, near, DType::kF16, 1, 64);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x->max_m, 64);
}

TEST(Crossover, CachesPerKeyAndPassesErrorsOn) {
  ClearCrossoverCache();
  TimedKernel small([](int64_t m) { return 1.0 + m; });
  TimedKernel large([](int64_t m) { return 20.0 + 0.1 * m; });
  absl::StatusOr<Crossover> first = MeasureCrossover("k", small, large, DType::kF16, 1, 64);
  ASSERT_TRUE(first.ok());
  const int calls = small.calls;
  absl::StatusOr<Crossover> again = MeasureCrossover("k", small, large, DType::kF16, 1, 64);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->cached);
  EXPECT_EQ(again->max_m, first->max_m);
  EXPECT_EQ(small.calls, calls);  // not timed again

  TimedKernel untimed(
      [](int64_t) -> absl::StatusOr<double> { return absl::UnimplementedError("no timing"); });
  EXPECT_TRUE(
      absl::IsUnimplemented(MeasureCrossover("u", untimed, large, DType::kF16, 1, 64).status()));
  TimedKernel broken(
      [](int64_t) -> absl::StatusOr<double> { return absl::InternalError("device lost"); });
  EXPECT_EQ(MeasureCrossover("e", small, broken, DType::kF16, 1, 64).status().code(),
            absl::StatusCode::kInternal);
  // A failure is not cached.
  EXPECT_EQ(MeasureCrossover("e", small, broken, DType::kF16, 1, 64).status().code(),
            absl::StatusCode::kInternal);

  // The key separates devices and shapes.
  LinearSpec spec;
  spec.K = 4096;
  spec.N = 4096;
  spec.wtype = WeightType::kUint4b8;
  spec.group_size = 128;
  const std::string k0 = CrossoverKey(spec, Device{Backend::kCuda, 0}, "a", "b");
  EXPECT_NE(k0, CrossoverKey(spec, Device{Backend::kCuda, 1}, "a", "b"));
  spec.N = 14336;
  EXPECT_NE(k0, CrossoverKey(spec, Device{Backend::kCuda, 0}, "a", "b"));
}

// The default LinearKernel offers no timing (the CPU kernels).
TEST(Crossover, KernelsWithoutTimingSayUnimplemented) {
  class Plain final : public LinearKernel {
   public:
    absl::string_view name() const override { return "plain"; }
    absl::Status Prepare(const QuantizedLinear&, const Device&) override {
      return absl::OkStatus();
    }
    absl::Status Forward(const ConstTensorView&, const TensorView&, ExecContext&) const override {
      return absl::OkStatus();
    }
    int64_t prepared_bytes() const override { return 0; }
  } plain;
  EXPECT_TRUE(absl::IsUnimplemented(plain.MeasureForwardUs(1, DType::kF16).status()));
}

}  // namespace
}  // namespace qlayer
