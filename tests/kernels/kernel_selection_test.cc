// Kernel selection on the CPU: the default choice, a forced kernel, an unknown
// forced kernel, disabled kernels, and that every rejection keeps its reason.
#include <cstdlib>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {
namespace {

const Device kCpu{Backend::kCpu, 0};

LinearSpec Uint4Spec() {
  LinearSpec s;
  s.K = 4096;
  s.N = 4096;
  s.wtype = WeightType::kUint4;
  s.group_size = 128;
  s.zero_points = true;
  s.scale_dtype = DType::kBF16;
  s.act = DType::kBF16;
  return s;
}

LinearSpec DenseSpec() {
  LinearSpec s;
  s.K = 384;
  s.N = 72;
  s.wtype = WeightType::kDense;
  s.scale_dtype = DType::kBF16;
  s.act = DType::kBF16;
  return s;
}

TEST(KernelSelection, BuiltinsAreRegistered) {
  EXPECT_NE(FindLinearKernel("cpu_reference"), nullptr);
  EXPECT_NE(FindLinearKernel("onednn_dense"), nullptr);
  EXPECT_LT(FindLinearKernel("onednn_dense")->priority,
            FindLinearKernel("cpu_reference")->priority);
}

TEST(KernelSelection, OnednnDenseServesLargeM) {
  for (const LinearSpec& spec : {Uint4Spec(), DenseSpec()}) {
    absl::StatusOr<Selection> sel = SelectLinearKernel(spec, kCpu);
    ASSERT_TRUE(sel.ok()) << sel.status();
    ASSERT_FALSE(sel->chosen.empty());
    // The unbounded (prefill) kernel is oneDNN; cpu_reference is never needed.
    EXPECT_EQ(sel->chosen.back().factory->name, "onednn_dense");
    EXPECT_EQ(sel->chosen.back().max_m, kUnboundedM);
    for (const ChosenKernel& c : sel->chosen) EXPECT_NE(c.factory->name, "cpu_reference");
  }
}

TEST(KernelSelection, DenseLayerRejectsQuantizedKernelsWithReasons) {
  absl::StatusOr<Selection> sel = SelectLinearKernel(DenseSpec(), kCpu);
  ASSERT_TRUE(sel.ok()) << sel.status();
  ASSERT_EQ(sel->chosen.size(), 1u);
  EXPECT_EQ(sel->chosen[0].factory->name, "onednn_dense");
  // Every quantized-only CPU kernel ahead of oneDNN was asked and said why not.
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    if (f->backend != Backend::kCpu || f->priority >= 100) continue;
    if (absl::StartsWith(f->name, "test_")) continue;
    bool found = false;
    for (const Rejection& r : sel->rejected) {
      if (r.kernel == f->name) {
        found = true;
        EXPECT_FALSE(r.why.ok());
        EXPECT_FALSE(r.why.message().empty()) << r.kernel;
      }
    }
    EXPECT_TRUE(found) << f->name << " was not recorded as rejected";
  }
}

TEST(KernelSelection, ForcedReferenceKernel) {
  SelectOptions opt;
  opt.forced_kernel = "cpu_reference";
  absl::StatusOr<Selection> sel = SelectLinearKernel(Uint4Spec(), kCpu, opt);
  ASSERT_TRUE(sel.ok()) << sel.status();
  ASSERT_EQ(sel->chosen.size(), 1u);
  EXPECT_EQ(sel->chosen[0].factory->name, "cpu_reference");
  EXPECT_EQ(sel->chosen[0].max_m, kUnboundedM);
}

TEST(KernelSelection, ForcedUnknownKernelListsKnownOnes) {
  SelectOptions opt;
  opt.forced_kernel = "no_such_kernel";
  absl::StatusOr<Selection> sel = SelectLinearKernel(Uint4Spec(), kCpu, opt);
  ASSERT_FALSE(sel.ok());
  EXPECT_EQ(sel.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "no_such_kernel"));
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "cpu_reference"));
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "onednn_dense"));
}

TEST(KernelSelection, ForcedKernelThatCannotImplementFails) {
  LinearSpec bad = Uint4Spec();
  bad.group_size = 100;  // 4096 % 100 != 0
  SelectOptions opt;
  opt.forced_kernel = "onednn_dense";
  absl::StatusOr<Selection> sel = SelectLinearKernel(bad, kCpu, opt);
  ASSERT_FALSE(sel.ok());
  EXPECT_EQ(sel.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "group size 100")) << sel.status();
}

TEST(KernelSelection, NothingImplementsKeepsEveryReason) {
  LinearSpec bad = Uint4Spec();
  bad.group_size = 100;
  absl::StatusOr<Selection> sel = SelectLinearKernel(bad, kCpu);
  ASSERT_FALSE(sel.ok());
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "cpu_reference: "));
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "onednn_dense: "));
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "group size 100"));
}

TEST(KernelSelection, DisabledOnednnFallsBackToReference) {
  SelectOptions opt;
  opt.disabled_kernels = {"onednn_dense"};
  absl::StatusOr<Selection> sel = SelectLinearKernel(DenseSpec(), kCpu, opt);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->chosen.back().factory->name, "cpu_reference");
  bool disabled_recorded = false;
  for (const Rejection& r : sel->rejected) {
    if (r.kernel == "onednn_dense") {
      disabled_recorded = true;
      EXPECT_TRUE(absl::StrContains(r.why.message(), "disabled"));
    }
  }
  EXPECT_TRUE(disabled_recorded);
}

TEST(KernelSelection, CudaDeviceGetsNoCpuKernel) {
  absl::StatusOr<Selection> sel = SelectLinearKernel(DenseSpec(), Device{Backend::kCuda, 0});
  // Either a CUDA kernel (built with CUDA) or an error; never a CPU kernel.
  if (sel.ok()) {
    for (const ChosenKernel& c : sel->chosen) EXPECT_EQ(c.factory->backend, Backend::kCuda);
  }
  SelectOptions opt;
  opt.forced_kernel = "cpu_reference";
  sel = SelectLinearKernel(DenseSpec(), Device{Backend::kCuda, 0}, opt);
  ASSERT_FALSE(sel.ok());
  EXPECT_TRUE(absl::StrContains(sel.status().message(), "cuda:0")) << sel.status();
}

// The CPU has AVX2 (and QLAYER_CPU_DISABLE does not hide it).
bool HasAvx2() { return FindLinearKernel("cpu_avx2_w4a16")->can_implement(Uint4Spec(), kCpu).ok(); }

// With the AVX-512 kernels disabled (as --disabled_kernels does), the AVX2
// one takes their place.
TEST(KernelSelection, Avx2TakesOverWhenAvx512IsDisabled) {
  if (!HasAvx2()) GTEST_SKIP() << "CPU without AVX2";
  SelectOptions opt;
  opt.disabled_kernels = {"cpu_avx512_w4a16", "cpu_avx512fma_w4a16"};
  absl::StatusOr<Selection> sel = SelectLinearKernel(Uint4Spec(), kCpu, opt);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->chosen[0].factory->name, "cpu_avx2_w4a16");
  EXPECT_EQ(sel->chosen.back().factory->name, "onednn_dense");
}

// With only the BF16 kernel disabled, the AVX-512 FMA one takes its place.
TEST(KernelSelection, Avx512FmaTakesOverWhenBf16KernelIsDisabled) {
  if (!FindLinearKernel("cpu_avx512fma_w4a16")->can_implement(Uint4Spec(), kCpu).ok()) {
    GTEST_SKIP() << "CPU without AVX-512 (or QLAYER_CPU_DISABLE hides it)";
  }
  SelectOptions opt;
  opt.disabled_kernels = {"cpu_avx512_w4a16"};
  absl::StatusOr<Selection> sel = SelectLinearKernel(Uint4Spec(), kCpu, opt);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->chosen[0].factory->name, "cpu_avx512fma_w4a16");
  EXPECT_GE(sel->chosen[0].max_m, 2);
  EXPECT_EQ(sel->chosen.back().factory->name, "onednn_dense");
}

// The GEMV kernel selection should pick for `bits`-bit weights, worked out
// here independently of the kernels' own CPUID / XGETBV code: the compiler's
// CPUID (__builtin_cpu_supports), less what QLAYER_CPU_DISABLE names, parsed
// here again. Empty: none (oneDNN takes every M). tests/CMakeLists.txt runs
// this under QLAYER_CPU_DISABLE=avx512bf16, =avx512 and =avx512,avx2, so a
// switch that stopped working (or a CPUID check that went wrong) fails.
std::string ExpectedGemvKernel(int bits) {
  std::set<std::string> off;
  if (const char* env = std::getenv("QLAYER_CPU_DISABLE")) {
    for (absl::string_view t : absl::StrSplit(env, ',', absl::SkipWhitespace())) {
      off.insert(std::string(t == "avx512_bf16" ? "avx512bf16" : t));
    }
  }
  const bool hw_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       __builtin_cpu_supports("f16c");
  const bool avx512 = hw_avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && off.count("avx512") == 0;
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16") && off.count("avx512bf16") == 0;
  const std::string types = absl::StrCat("_w", bits, "a16");
  if (bf16) return absl::StrCat("cpu_avx512", types);
  if (avx512) return absl::StrCat("cpu_avx512fma", types);
  if (hw_avx2 && off.count("avx2") == 0) return absl::StrCat("cpu_avx2", types);
  return "";
}

// Small M goes to the GEMV kernel with the right inner loop for the CPU and
// QLAYER_CPU_DISABLE (up to its measured crossover), the rest to oneDNN; a
// kernel the switch hides says so.
TEST(KernelSelection, GemvKernelFollowsCpuAndQlayerCpuDisable) {
  const char* env = std::getenv("QLAYER_CPU_DISABLE");
  for (WeightType wt : {WeightType::kUint4, WeightType::kUint8b128}) {
    LinearSpec spec = Uint4Spec();
    spec.wtype = wt;
    spec.zero_points = wt == WeightType::kUint4;
    const std::string want = ExpectedGemvKernel(WeightBits(wt));
    SCOPED_TRACE(absl::StrCat(WeightTypeName(wt), ", QLAYER_CPU_DISABLE=", env ? env : "(unset)",
                              ", expected ", want.empty() ? "no GEMV kernel" : want));
    absl::StatusOr<Selection> sel = SelectLinearKernel(spec, kCpu);
    ASSERT_TRUE(sel.ok()) << sel.status();
    if (want.empty()) {
      ASSERT_EQ(sel->chosen.size(), 1u);
    } else {
      ASSERT_EQ(sel->chosen.size(), 2u);
      EXPECT_EQ(sel->chosen[0].factory->name, want);
      EXPECT_GE(sel->chosen[0].max_m, 2);  // at least decode of one or two rows
      EXPECT_LT(sel->chosen[0].max_m, kUnboundedM);
    }
    EXPECT_EQ(sel->chosen.back().factory->name, "onednn_dense");
    if (env == nullptr) continue;
    // Each GEMV kernel for these weights that was rejected names the switch.
    for (const Rejection& r : sel->rejected) {
      if (!absl::StartsWith(r.kernel, "cpu_avx") ||
          !absl::EndsWith(r.kernel, absl::StrCat("_w", WeightBits(wt), "a16"))) {
        continue;  // not a GEMV kernel for these weights
      }
      EXPECT_TRUE(absl::StrContains(r.why.message(), "QLAYER_CPU_DISABLE"))
          << r.kernel << ": " << r.why;
    }
  }
}

TEST(KernelSelection, GemvKernelsExplainWrongBits) {
  const KernelFactory* f = FindLinearKernel("cpu_avx2_w8a16");
  ASSERT_NE(f, nullptr);
  absl::Status s = f->can_implement(Uint4Spec(), kCpu);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.message(), "8-bit")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "uint4")) << s;
}

}  // namespace
}  // namespace qlayer
