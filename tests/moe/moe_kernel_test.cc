// The experts kernel (cpu_moe_grouped through the MoE registry) against the
// float64 expert forward of moe_test_util: E=8, k=2, H in {64, 128, 192},
// I off any 256 tile, T in {1, 3, 17}, f16 / bf16 / f32 activations, with and
// without a (gated) shared expert, once with the linear kernels forced to
// cpu_reference (exact f32 path: tight bound) and once with the default
// selection. Outputs are poisoned before the call and guarded after.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/moe.h"
#include "tests/moe/moe_test_util.h"

namespace qlayer {
namespace {

using moetest::RandomBlock;
using moetest::RandomBlockSpec;
using moetest::Seed;

// Routing with random distinct ids and positive weights.
Routing RandomRouting(int64_t T, int64_t E, int k, std::mt19937_64& rng) {
  Routing r;
  r.num_tokens = T;
  r.top_k = k;
  std::uniform_real_distribution<float> d(0.05f, 1.0f);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> perm(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) perm[e] = static_cast<int32_t>(e);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int j = 0; j < k; ++j) {
      r.ids.push_back(perm[j]);
      r.weights.push_back(d(rng));
    }
  }
  return r;
}

// Output buffer [T, H] of dtype dt poisoned with 0xFF bytes (NaN in every
// float type), plus 64 guard bytes after it that must stay untouched.
struct GuardedOutput {
  GuardedOutput(DType dt, int64_t T, int64_t H)
      : dt(dt),
        T(T),
        H(H),
        bytes(static_cast<size_t>(T * H) * DTypeSize(dt)),
        storage(bytes + kGuard, 0xFF) {}
  TensorView view() { return {dt, {T, H}, storage.data()}; }
  bool GuardIntact() const {
    for (size_t i = bytes; i < storage.size(); ++i) {
      if (storage[i] != 0xFF) return false;
    }
    return true;
  }
  static constexpr size_t kGuard = 64;
  DType dt;
  int64_t T, H;
  size_t bytes;
  std::vector<unsigned char> storage;
};

double Tolerance(DType act, bool exact_linear) {
  // cpu_reference: f32 dequant and accumulation; the only roundings are the
  // activation-dtype intermediates (x's dtype) and the output.
  // Default selection may run onednn_dense, which keeps f16/bf16-scaled
  // weights in bf16 (2^-9 relative per weight), so a looser bound.
  if (act == DType::kF32) return exact_linear ? 1e-5 : 1e-2;
  if (act == DType::kF16) return exact_linear ? 3e-3 : 1e-2;
  return 2e-2;  // bf16: 8 significant bits in every intermediate
}

struct Case {
  int64_t H, I;
  int64_t shared_I;
  bool shared_gate;
};

void RunCase(const Case& c, bool exact_linear, std::mt19937_64& rng) {
  RandomBlockSpec spec;
  spec.E = 8;
  spec.top_k = 2;
  spec.H = c.H;
  spec.I = c.I;
  spec.group_size = 32;
  spec.shared_I = c.shared_I;
  spec.shared_gate = c.shared_gate;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  ASSERT_TRUE(rb.block.Validate().ok()) << rb.block.Validate();
  for (DType act : {DType::kF32, DType::kF16, DType::kBF16}) {
    MoESelectOptions opts;
    if (exact_linear) opts.linear.forced_kernel = "cpu_reference";
    MoESelection sel;
    absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
        CreateMoEKernel(rb.block, Device{}, act, opts, &sel);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    EXPECT_EQ((*kernel)->name(), "cpu_moe_grouped");
    EXPECT_GT((*kernel)->prepared_bytes(), 0);
    // T=200 gives each expert ~50 rows: past the small-M kernels, into the
    // GEMM path of the default selection.
    const std::vector<int64_t> Ts =
        exact_linear ? std::vector<int64_t>{1, 3, 17} : std::vector<int64_t>{1, 17, 200};
    for (int64_t T : Ts) {
      SCOPED_TRACE(::testing::Message() << "H=" << c.H << " I=" << c.I << " shared=" << c.shared_I
                                        << " gate=" << c.shared_gate << " act=" << DTypeName(act)
                                        << " T=" << T << " exact=" << exact_linear);
      Tensor x = moetest::RandomActivations(T, c.H, act, rng);
      Routing r = RandomRouting(T, spec.E, spec.top_k, rng);
      GuardedOutput y(act, T, c.H);
      ExecContext ctx;
      MoEForwardInfo info;
      ASSERT_TRUE((*kernel)->Forward(x.view(), r, y.view(), ctx, &info).ok());
      const std::vector<double> want = moetest::ReferenceMoE(rb, x.view(), r.ids, r.weights, 2);
      const double err = moetest::RelativeError(y.view(), want);
      EXPECT_LT(err, Tolerance(act, exact_linear)) << (*kernel)->Describe();
      EXPECT_TRUE(y.GuardIntact());
      EXPECT_EQ(info.tokens_per_expert, ExpertTokenCounts(r, spec.E));
      EXPECT_FALSE(info.linear_kernels.empty());
      if (exact_linear) {
        EXPECT_EQ(info.linear_kernels, std::vector<std::string>{"cpu_reference"});
      }
    }
  }
}

TEST(MoEKernelTest, RoutedExpertsExactLinear) {
  std::mt19937_64 rng(Seed() + 11);
  for (const Case& c : {Case{64, 96, 0, false}, Case{128, 160, 0, false}}) {
    RunCase(c, /*exact_linear=*/true, rng);
  }
}

TEST(MoEKernelTest, SharedExpertWithAndWithoutGateExactLinear) {
  std::mt19937_64 rng(Seed() + 12);
  RunCase(Case{192, 96, 64, true}, true, rng);    // Qwen2-MoE style
  RunCase(Case{64, 160, 320, false}, true, rng);  // DeepSeek style: 2 shared, no gate
}

TEST(MoEKernelTest, DefaultLinearSelection) {
  std::mt19937_64 rng(Seed() + 13);
  RunCase(Case{128, 96, 64, true}, /*exact_linear=*/false, rng);
}

// Only experts that received tokens are computed: idle experts get NaN
// scales, and the output stays finite and correct. Also the most unbalanced
// routing, all tokens to the same two experts.
TEST(MoEKernelTest, IdleExpertsAreNotRead) {
  std::mt19937_64 rng(Seed() + 14);
  RandomBlockSpec spec;
  spec.H = 64;
  spec.I = 96;
  spec.wtype = WeightType::kUint4b8;
  spec.scale_dtype = DType::kBF16;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  for (int64_t e = 0; e < spec.E; ++e) {
    if (e == 3 || e == 5) continue;
    Tensor& s = rb.block.experts[e].w13.scales;
    for (int64_t i = 0; i < s.numel(); ++i) StoreFromDouble(s.data(), s.dtype(), i, NAN);
  }
  MoESelectOptions opts;
  opts.linear.forced_kernel = "cpu_reference";
  absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
      CreateMoEKernel(rb.block, Device{}, DType::kF32, opts, nullptr);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const int64_t T = 17;
  Tensor x = moetest::RandomActivations(T, spec.H, DType::kF32, rng);
  Routing r;
  r.num_tokens = T;
  r.top_k = 2;
  for (int64_t t = 0; t < T; ++t) {
    r.ids.push_back(t % 2 ? 3 : 5);
    r.ids.push_back(t % 2 ? 5 : 3);
    r.weights.push_back(0.7f);
    r.weights.push_back(0.3f);
  }
  GuardedOutput y(DType::kF32, T, spec.H);
  ExecContext ctx;
  MoEForwardInfo info;
  ASSERT_TRUE((*kernel)->Forward(x.view(), r, y.view(), ctx, &info).ok());
  EXPECT_LT(
      moetest::RelativeError(y.view(), moetest::ReferenceMoE(rb, x.view(), r.ids, r.weights, 2)),
      1e-5);
  EXPECT_EQ(info.tokens_per_expert, (std::vector<int64_t>{0, 0, 0, T, 0, T, 0, 0}));
}

TEST(MoEKernelTest, EmptyBatchAndBadArguments) {
  std::mt19937_64 rng(Seed() + 15);
  RandomBlockSpec spec;
  spec.H = 64;
  spec.I = 64;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  MoESelectOptions opts;
  opts.linear.forced_kernel = "cpu_reference";
  absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
      CreateMoEKernel(rb.block, Device{}, DType::kF16, opts, nullptr);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  ExecContext ctx;

  Tensor x0 = Tensor::Zeros(DType::kF16, {0, 64});
  Tensor y0 = Tensor::Zeros(DType::kF16, {0, 64});
  Routing r0;
  r0.top_k = 2;
  EXPECT_TRUE((*kernel)->Forward(x0.view(), r0, y0.mutable_view(), ctx, nullptr).ok());

  Tensor x = moetest::RandomActivations(3, 64, DType::kF16, rng);
  Tensor y = Tensor::Zeros(DType::kF16, {3, 64});
  Routing r = RandomRouting(3, 8, 2, rng);
  Routing bad = r;
  bad.ids[4] = 8;
  absl::Status s = (*kernel)->Forward(x.view(), bad, y.mutable_view(), ctx, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("expert id 8 of token 2"), std::string::npos) << s;
  bad = r;
  bad.num_tokens = 2;
  EXPECT_FALSE((*kernel)->Forward(x.view(), bad, y.mutable_view(), ctx, nullptr).ok());
  Tensor y32 = Tensor::Zeros(DType::kF32, {3, 64});
  EXPECT_FALSE((*kernel)->Forward(x.view(), r, y32.mutable_view(), ctx, nullptr).ok());
  Tensor xw = moetest::RandomActivations(3, 65, DType::kF16, rng);
  EXPECT_FALSE((*kernel)->Forward(xw.view(), r, y.mutable_view(), ctx, nullptr).ok());
}

// Forward is const and keeps its state on the call's stack: concurrent calls
// on one prepared kernel give the single-threaded answer bit for bit.
TEST(MoEKernelTest, ConcurrentForwardCalls) {
  std::mt19937_64 rng(Seed() + 19);
  RandomBlockSpec spec;
  spec.H = 64;
  spec.I = 96;
  spec.shared_I = 32;
  spec.shared_gate = true;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
      CreateMoEKernel(rb.block, Device{}, DType::kBF16, {}, nullptr);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  const int64_t T = 9;
  Tensor x = moetest::RandomActivations(T, spec.H, DType::kBF16, rng);
  const Routing r = RandomRouting(T, spec.E, spec.top_k, rng);
  Tensor want = Tensor::Zeros(DType::kBF16, {T, spec.H});
  ExecContext ctx;
  ASSERT_TRUE((*kernel)->Forward(x.view(), r, want.mutable_view(), ctx, nullptr).ok());
  std::vector<Tensor> got;
  for (int i = 0; i < 4; ++i) got.push_back(Tensor::Zeros(DType::kBF16, {T, spec.H}));
  std::vector<absl::Status> status(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      ExecContext c;
      for (int rep = 0; rep < 5 && status[i].ok(); ++rep) {
        status[i] = (*kernel)->Forward(x.view(), r, got[i].mutable_view(), c, nullptr);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(status[i].ok()) << status[i];
    EXPECT_TRUE(SameTensor(got[i].view(), want.view())) << "thread " << i;
  }
}

TEST(MoEKernelTest, SelectionKeepsReasons) {
  std::mt19937_64 rng(Seed() + 16);
  RandomBlockSpec spec;
  spec.H = 64;
  spec.I = 64;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  const MoESpec ms = MoESpec::Of(rb.block, DType::kBF16);
  EXPECT_EQ(ms.linear_specs.size(), 2u);  // uniform experts: one w13 and one w2 spec

  absl::StatusOr<MoESelection> sel = SelectMoEKernel(ms, Device{});
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->chosen->name, "cpu_moe_grouped");

  MoESelectOptions disabled;
  disabled.disabled_kernels = {"cpu_moe_grouped"};
  absl::Status s = SelectMoEKernel(ms, Device{}, disabled).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("cpu_moe_grouped: disabled"), std::string::npos) << s;

  MoESelectOptions unknown;
  unknown.forced_kernel = "no_such_moe_kernel";
  EXPECT_EQ(SelectMoEKernel(ms, Device{}, unknown).status().code(), absl::StatusCode::kNotFound);

  MoESelectOptions bad_linear;
  bad_linear.linear.forced_kernel = "no_such_linear_kernel";
  s = SelectMoEKernel(ms, Device{}, bad_linear).status();
  EXPECT_NE(s.message().find("no_such_linear_kernel"), std::string::npos) << s;

  EXPECT_FALSE(SelectMoEKernel(ms, Device{Backend::kCuda, 0}).ok());
}

TEST(MoEBlockTest, StackGateUpIsLosslessAndChecksCompatibility) {
  std::mt19937_64 rng(Seed() + 17);
  for (WeightType wt : {WeightType::kUint4, WeightType::kUint8b128}) {
    for (bool act_order : {false, true}) {
      RandomBlockSpec spec;
      spec.E = 1;
      spec.H = 128;
      spec.I = 96;
      spec.wtype = wt;
      spec.act_order = act_order;
      RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
      const QuantizedLinear& w13 = rb.block.experts[0].w13;
      const std::vector<double> g = moetest::DequantNK(rb.gate_w[0]);
      const std::vector<double> u = moetest::DequantNK(rb.up_w[0]);
      const std::vector<double> s = moetest::DequantNK(w13);
      ASSERT_EQ(s.size(), g.size() + u.size());
      // [N, K] row n < I is gate row n, row I + n is up row n.
      EXPECT_TRUE(std::equal(g.begin(), g.end(), s.begin()));
      EXPECT_TRUE(std::equal(u.begin(), u.end(), s.begin() + static_cast<long>(g.size())));
      EXPECT_EQ(w13.g_idx.empty(), !act_order || rb.gate_w[0].g_idx.empty());
    }
  }
  RandomBlockSpec spec;
  spec.E = 1;
  spec.act_order = true;
  spec.H = 128;
  RandomBlock a = moetest::MakeRandomBlock(spec, rng);
  RandomBlock b = moetest::MakeRandomBlock(spec, rng);
  // Different act-order permutations cannot share input rows.
  absl::Status s = StackGateUp(a.gate_w[0], b.up_w[0]).status();
  EXPECT_NE(s.message().find("g_idx"), std::string::npos) << s;
  QuantizedLinear other = a.up_w[0].Clone();
  other.group_size = 64;
  EXPECT_FALSE(StackGateUp(a.gate_w[0], other).ok());
  // Bias on one side only: zeros on the other.
  QuantizedLinear gb = a.gate_w[0].Clone();
  gb.bias = Tensor::Zeros(DType::kF16, {gb.N});
  for (int64_t n = 0; n < gb.N; ++n) StoreFromDouble(gb.bias.data(), DType::kF16, n, 0.25 * n);
  absl::StatusOr<QuantizedLinear> st = StackGateUp(gb, a.up_w[0]);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_EQ(LoadAsDouble(st->bias.data(), DType::kF16, 3), 0.75);
  EXPECT_EQ(LoadAsDouble(st->bias.data(), DType::kF16, gb.N + 3), 0.0);
}

TEST(MoEBlockTest, ValidateNamesTheProblem) {
  std::mt19937_64 rng(Seed() + 18);
  RandomBlockSpec spec;
  spec.E = 4;
  spec.H = 64;
  spec.I = 64;
  RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  EXPECT_TRUE(rb.block.Validate().ok());
  rb.block.router.num_experts = 5;
  EXPECT_NE(rb.block.Validate().message().find("router expects 5 experts"), std::string::npos);
  rb.block.router.num_experts = 4;
  rb.block.router.has_correction_bias = true;
  EXPECT_NE(rb.block.Validate().message().find("correction bias"), std::string::npos);
  rb.block.router.has_correction_bias = false;
  rb.block.experts[2].w2 = rb.block.experts[2].w13.Clone();
  const absl::Status s = rb.block.Validate();
  EXPECT_NE(s.message().find("expert 2 w2"), std::string::npos) << s;
  EXPECT_NE(s.message().find("model.layers.0.mlp"), std::string::npos) << s;
}

}  // namespace
}  // namespace qlayer
