// Every registered CPU kernel against the float64 reference, over weight
// types, scale dtypes, group sizes, act-order, bias, activation dtypes and odd
// M / N / K (test-backend-ops style: one parameterized suite, kernel x spec).
//
// The reference is the dequantized weight times the activations as stored
// (f16/bf16 rounding of x is not an error), in float64, rounded once to the
// output dtype: that is what an exact kernel writes, so the relative error
// measures the kernel's own arithmetic (f32 accumulation, any weight rounding)
// rather than the unavoidable ~1.7e-3 of a bf16 output.
#include <cstring>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/registry.h"
#include "tests/kernels/random_linear_util.h"

namespace qlayer::testing {
namespace {

struct KernelCase {
  std::string kernel;
  RandomLinearSpec spec;
  DType act = DType::kF16;
  std::vector<int64_t> ms;  // rows per Forward call
};

void PrintTo(const KernelCase& c, std::ostream* os) {
  *os << c.kernel << " K=" << c.spec.K << " N=" << c.spec.N << " " << WeightTypeName(c.spec.wtype)
      << " group " << c.spec.group_size << " scales " << DTypeName(c.spec.scale_dtype)
      << (c.spec.g_idx ? " g_idx" : "") << (c.spec.bias ? " bias" : "") << " x "
      << DTypeName(c.act);
}

std::string GroupName(const RandomLinearSpec& s) {
  if (s.wtype == WeightType::kDense) return "";
  return s.group_size == 0 ? "_gch" : absl::StrCat("_g", s.group_size);
}

std::string CaseName(const ::testing::TestParamInfo<KernelCase>& info) {
  const KernelCase& c = info.param;
  return absl::StrCat(c.kernel, "_", WeightTypeName(c.spec.wtype), GroupName(c.spec), "_s",
                      DTypeName(c.spec.scale_dtype), c.spec.g_idx ? "_gidx" : "",
                      c.spec.bias ? "_bias" : "", "_K", c.spec.K, "_N", c.spec.N, "_x",
                      DTypeName(c.act));
}

// Which weight types a kernel is written for, by its name: the ISA kernels
// say so in the name (w4a16: 4-bit, w8a16: 8-bit); the others take all.
bool KernelCovers(absl::string_view kernel, WeightType t) {
  if (absl::StrContains(kernel, "w4a16")) return WeightBits(t) == 4;
  if (absl::StrContains(kernel, "w8a16")) return WeightBits(t) == 8;
  return true;
}

// Where the CPU lacks a kernel's ISA, its rejection is expected: skip. The
// AVX-512 kernels come with two inner loops: cpu_avx512_* needs AVX512_BF16
// (vdpbf16ps), cpu_avx512fma_* only F/BW/VL/DQ. Every loop the CPU can run is
// in the grid (cpu_avx512fma_* runs here even where AVX512_BF16 would take
// the layer in selection); one the CPU cannot run skips, never fails.
bool IsaPresent(absl::string_view kernel) {
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (absl::StartsWith(kernel, "cpu_avx512fma_")) return avx512;
  if (absl::StartsWith(kernel, "cpu_avx512_")) {
    return avx512 && __builtin_cpu_supports("avx512bf16");
  }
  if (absl::StrContains(kernel, "avx2")) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }
  return true;
}

// How a case's error is measured and bounded.
struct ErrorBound {
  double tol;
  // false: ||y - ref_rounded|| / ||ref||. true: the same numerator over
  // ||sum_k |x||w| + |bias|||, the scale of an error made per weight (it
  // does not blow up where a dot product cancels).
  bool per_weight = false;
};

ErrorBound Bound(absl::string_view kernel, const RandomLinearSpec& spec, DType act) {
  if (kernel == "onednn_dense" && spec.scale_dtype != DType::kF32) {
    // Stores the weight in bf16 (8 significant bits: up to 2^-8 relative
    // per weight) and rounds f16/f32 activations to bf16 as well: an error
    // per product, bounded against sum |x||w|.
    return {4e-3, true};
  }
  // f32 accumulation of exact weights: the f32 output only sees summation
  // order; f16/bf16 outputs differ from the rounded reference only where
  // that moves a value across a rounding boundary.
  return {act == DType::kF32 ? 1e-5 : 2e-3, false};
}

std::vector<const KernelFactory*> CpuKernels() {
  std::vector<const KernelFactory*> out;
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    // Tests may register throwaway kernels named test_*; only real ones here.
    if (f->backend == Backend::kCpu && !absl::StartsWith(f->name, "test_")) out.push_back(f);
  }
  return out;
}

void AddCase(std::vector<KernelCase>& cases, const RandomLinearSpec& spec, DType act,
             std::vector<int64_t> ms) {
  for (const KernelFactory* f : CpuKernels()) {
    if (KernelCovers(f->name, spec.wtype)) cases.push_back({f->name, spec, act, ms});
  }
}

// The main grid on K=384, N=72: K holds groups of 32 and 128 (and not 256),
// N is off every tile width the ISA kernels use (16, 32, 64).
std::vector<KernelCase> MainGrid() {
  std::vector<KernelCase> cases;
  const DType kFloats[] = {DType::kF16, DType::kBF16, DType::kF32};
  for (WeightType wt : {WeightType::kUint4, WeightType::kUint4b8, WeightType::kUint8,
                        WeightType::kUint8b128, WeightType::kDense}) {
    const bool dense = wt == WeightType::kDense;
    for (int64_t g : {int64_t{32}, int64_t{128}, int64_t{0}}) {
      if (dense && g != 0) continue;
      for (bool gidx : {false, true}) {
        if (dense && gidx) continue;
        for (DType sdt : kFloats) {
          for (bool bias : {false, true}) {
            for (DType act : kFloats) {
              AddCase(cases, {384, 72, wt, g, sdt, gidx, bias}, act, {1, 3, 17, 67});
            }
          }
        }
      }
    }
  }
  return cases;
}

// Edge shapes with fewer combinations: a single output column, N tails of
// 1..15 past a tile, K of one group, a deep K.
std::vector<KernelCase> EdgeShapes() {
  std::vector<KernelCase> cases;
  const std::pair<int64_t, int64_t> kShapes[] = {{32, 1}, {64, 17}, {256, 130}, {1024, 33}};
  for (auto [K, N] : kShapes) {
    for (WeightType wt : {WeightType::kUint4, WeightType::kUint8b128, WeightType::kDense}) {
      for (int64_t g : {int64_t{32}, int64_t{0}}) {
        if (wt == WeightType::kDense && g != 0) continue;
        AddCase(cases, {K, N, wt, g, DType::kBF16, g == 32, true}, DType::kBF16, {1, 16, 118});
        AddCase(cases, {K, N, wt, g, DType::kF16, false, false}, DType::kF32, {2, 33});
      }
    }
  }
  return cases;
}

class LinearKernelTest : public ::testing::TestWithParam<KernelCase> {};

TEST_P(LinearKernelTest, MatchesFloat64Reference) {
  const KernelCase& c = GetParam();
  const KernelFactory* f = FindLinearKernel(c.kernel);
  ASSERT_NE(f, nullptr) << c.kernel;
  std::mt19937_64 rng(TestSeed() ^ std::hash<std::string>()(CaseName({c, 0})));
  RandomLinear rl = MakeRandomLinear(c.spec, rng);
  ASSERT_TRUE(rl.w.Validate().ok()) << rl.w.Validate();

  const Device cpu{Backend::kCpu, 0};
  const LinearSpec spec = LinearSpec::Of(rl.w, c.act);
  absl::Status can = f->can_implement(spec, cpu);
  // Skipped only where the CPU lacks the kernel's ISA, or QLAYER_CPU_DISABLE
  // hides it to test the fallbacks.
  if (!can.ok() &&
      (!IsaPresent(c.kernel) || absl::StrContains(can.message(), "QLAYER_CPU_DISABLE"))) {
    GTEST_SKIP() << "ISA absent: " << can;
  }
  ASSERT_TRUE(can.ok()) << can;

  std::unique_ptr<LinearKernel> kernel = f->create();
  ASSERT_TRUE(kernel->Prepare(rl.w, cpu).ok());
  EXPECT_EQ(kernel->name(), c.kernel);
  EXPECT_GT(kernel->prepared_bytes(), 0);

  const ErrorBound bound = Bound(c.kernel, c.spec, c.act);
  const size_t elt = DTypeSize(c.act);
  constexpr size_t kGuard = 256;
  for (int64_t M : c.ms) {
    SCOPED_TRACE(absl::StrCat("M=", M));
    Tensor x = RandomActivations(M, c.spec.K, c.act, rng);
    const std::vector<double> ref = ReferenceForward(rl, x.view());
    const std::vector<double> want = RoundTo(ref, c.act);
    const double denom = Norm(bound.per_weight ? AbsReference(rl, x.view()) : ref);

    // Output poisoned with 0xFF (NaN in every float dtype), then guard bytes
    // that must survive the call.
    const size_t out_bytes = static_cast<size_t>(M * c.spec.N) * elt;
    std::vector<unsigned char> buf(out_bytes + kGuard, 0xFF);
    for (size_t i = out_bytes; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>(0xA5 ^ i);
    TensorView y{c.act, {M, c.spec.N}, buf.data()};

    // The default thread count always; one thread on the first M too (the
    // split over threads does not depend on M, and every oneDNN thread
    // count is one more JIT-compiled primitive).
    for (int threads : {0, 1}) {
      if (threads == 1 && M != c.ms.front()) continue;
      std::memset(buf.data(), 0xFF, out_bytes);
      ExecContext ctx;
      ctx.num_threads = threads;
      absl::Status s = kernel->Forward(x.view(), y, ctx);
      ASSERT_TRUE(s.ok()) << s;
      const double err = ErrorNorm(y, want) / denom;
      EXPECT_LE(err, bound.tol) << "threads=" << threads;
      for (size_t i = out_bytes; i < buf.size(); ++i) {
        ASSERT_EQ(buf[i], static_cast<unsigned char>(0xA5 ^ i))
            << "write past the output at byte " << i - out_bytes << ", threads=" << threads;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, LinearKernelTest, ::testing::ValuesIn(MainGrid()), CaseName);
INSTANTIATE_TEST_SUITE_P(Edges, LinearKernelTest, ::testing::ValuesIn(EdgeShapes()), CaseName);

TEST(LinearKernelForward, RejectsBadShapesAndDtypes) {
  std::mt19937_64 rng(TestSeed());
  const Device cpu{Backend::kCpu, 0};
  for (WeightType wt : {WeightType::kUint4, WeightType::kUint8b128}) {
    RandomLinear rl = MakeRandomLinear({384, 72, wt, 128, DType::kBF16}, rng);
    for (const KernelFactory* f : CpuKernels()) {
      if (!KernelCovers(f->name, wt) ||
          !f->can_implement(LinearSpec::Of(rl.w, DType::kBF16), cpu).ok())
        continue;
      SCOPED_TRACE(f->name);
      std::unique_ptr<LinearKernel> kernel = f->create();
      ASSERT_TRUE(kernel->Prepare(rl.w, cpu).ok());
      ExecContext ctx;
      Tensor x = RandomActivations(2, 385, DType::kBF16, rng);
      Tensor y = Tensor::Zeros(DType::kBF16, {2, 72});
      absl::Status s = kernel->Forward(x.view(), y.mutable_view(), ctx);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_TRUE(absl::StrContains(s.message(), "K=384")) << s;
      Tensor x2 = RandomActivations(2, 384, DType::kBF16, rng);
      Tensor y2 = Tensor::Zeros(DType::kF32, {2, 72});
      s = kernel->Forward(x2.view(), y2.mutable_view(), ctx);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      Tensor y3 = Tensor::Zeros(DType::kBF16, {3, 72});
      s = kernel->Forward(x2.view(), y3.mutable_view(), ctx);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    }
  }
}

TEST(LinearKernelForward, ForwardBeforePrepareFails) {
  for (const KernelFactory* f : CpuKernels()) {
    std::unique_ptr<LinearKernel> kernel = f->create();
    Tensor x = Tensor::Zeros(DType::kBF16, {1, 64});
    Tensor y = Tensor::Zeros(DType::kBF16, {1, 8});
    ExecContext ctx;
    EXPECT_FALSE(kernel->Forward(x.view(), y.mutable_view(), ctx).ok()) << f->name;
  }
}

TEST(LinearKernelPrepare, RejectsInvalidWeight) {
  std::mt19937_64 rng(TestSeed());
  RandomLinear rl = MakeRandomLinear({384, 72, WeightType::kUint4, 128, DType::kF16}, rng);
  rl.w.zeros = Tensor();  // uint4 without zero points
  for (const KernelFactory* f : CpuKernels()) {
    if (!KernelCovers(f->name, rl.w.wtype) ||
        !f->can_implement(LinearSpec::Of(rl.w, DType::kBF16), Device{}).ok()) {
      continue;
    }
    std::unique_ptr<LinearKernel> kernel = f->create();
    absl::Status s = kernel->Prepare(rl.w, Device{Backend::kCpu, 0});
    EXPECT_FALSE(s.ok()) << f->name;
    EXPECT_TRUE(absl::StrContains(s.message(), "zeros")) << f->name << ": " << s;
  }
}

}  // namespace
}  // namespace qlayer::testing
