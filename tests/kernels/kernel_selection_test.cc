// Kernel selection on the CPU: the default choice, a forced kernel, an unknown
// forced kernel, disabled kernels, and that every rejection keeps its reason.
#include <string>

#include "absl/strings/match.h"
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

}  // namespace
}  // namespace qlayer
