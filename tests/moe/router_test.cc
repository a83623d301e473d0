// The router (ComputeRouting, MoERouter) against float64 routers written here
// from each family's transformers forward code (FORMATS.md §8). The
// references share only the tie rule (lower index first) with the code under
// test; tokens whose choice sits within 1e-5 of a selection boundary are
// skipped (f32 vs f64 may legitimately pick differently) and counted.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/moe.h"
#include "tests/moe/moe_test_util.h"

namespace qlayer {
namespace {

using moetest::Seed;

constexpr double kTieTol = 1e-5;

struct RefRoute {
  std::vector<std::pair<int, double>> chosen;  // (expert, weight)
  bool ambiguous = false;
};

// Indices of the k largest (ties: lower index); flags a near tie at the cut.
std::vector<int> TopK(const std::vector<double>& v, int k, bool* ambiguous) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&v](int a, int b) { return v[a] > v[b]; });
  if (static_cast<size_t>(k) < v.size() && v[idx[k - 1]] - v[idx[k]] < kTieTol) *ambiguous = true;
  idx.resize(static_cast<size_t>(k));
  return idx;
}

std::vector<double> Softmax(const float* l, int E) {
  double m = l[0];
  for (int e = 1; e < E; ++e) m = std::max(m, double(l[e]));
  std::vector<double> p(static_cast<size_t>(E));
  double sum = 0;
  for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(double(l[e]) - m));
  for (double& v : p) v /= sum;
  return p;
}

// Mixtral: softmax(router_logits, dtype=float) -> topk -> /= sum.
// Qwen2/3-MoE: same, the division only if norm_topk_prob.
RefRoute RefSoftmaxTopk(const float* l, int E, int k, bool norm) {
  RefRoute r;
  const std::vector<double> p = Softmax(l, E);
  const std::vector<int> idx = TopK(p, k, &r.ambiguous);
  double sum = 0;
  for (int i : idx) sum += p[i];
  for (int i : idx) r.chosen.push_back({i, norm ? p[i] / sum : p[i]});
  return r;
}

// Keeps the topk_group best groups (by group_score), zeroes the others'
// entries of `c` (masked_fill(~mask, 0.0)).
void MaskGroups(std::vector<double>& c, const std::vector<double>& group_score, int topk_group,
                bool* ambiguous) {
  const int n_group = static_cast<int>(group_score.size());
  const int gs = static_cast<int>(c.size()) / n_group;
  const std::vector<int> keep = TopK(group_score, topk_group, ambiguous);
  for (int g = 0; g < n_group; ++g) {
    if (std::find(keep.begin(), keep.end(), g) != keep.end()) continue;
    for (int i = 0; i < gs; ++i) c[g * gs + i] = 0.0;
  }
}

// DeepSeek-V2 MoEGate: softmax; greedy or group_limited_greedy (group score =
// max); renormalise if norm_topk_prob (+1e-20); * routed_scaling_factor.
RefRoute RefDeepseekV2(const float* l, int E, int k, bool grouped, int n_group, int topk_group,
                       bool norm, double scale) {
  RefRoute r;
  const std::vector<double> p = Softmax(l, E);
  std::vector<double> c = p;
  if (grouped) {
    const int gs = E / n_group;
    std::vector<double> gscore(static_cast<size_t>(n_group));
    for (int g = 0; g < n_group; ++g) {
      gscore[g] = *std::max_element(p.begin() + g * gs, p.begin() + (g + 1) * gs);
    }
    MaskGroups(c, gscore, topk_group, &r.ambiguous);
  }
  const std::vector<int> idx = TopK(c, k, &r.ambiguous);
  double sum = 0;
  for (int i : idx) sum += p[i];
  for (int i : idx) r.chosen.push_back({i, (norm ? p[i] / (sum + 1e-20) : p[i]) * scale});
  return r;
}

// DeepseekV3TopkRouter: sigmoid; c = s + bias; group score = sum of top-2 c;
// keep topk_group groups; top-k of masked c; weights s[idx], / (sum + 1e-20)
// if norm_topk_prob, * routed_scaling_factor.
RefRoute RefDeepseekV3(const float* l, const float* bias, int E, int k, int n_group, int topk_group,
                       bool norm, double scale) {
  RefRoute r;
  std::vector<double> s(static_cast<size_t>(E)), c(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e) {
    s[e] = 1.0 / (1.0 + std::exp(-double(l[e])));
    c[e] = s[e] + double(bias[e]);
  }
  const int gs = E / n_group;
  std::vector<double> gscore(static_cast<size_t>(n_group));
  for (int g = 0; g < n_group; ++g) {
    std::vector<double> v(c.begin() + g * gs, c.begin() + (g + 1) * gs);
    std::sort(v.rbegin(), v.rend());
    gscore[g] = v[0] + v[1];
  }
  MaskGroups(c, gscore, topk_group, &r.ambiguous);
  const std::vector<int> idx = TopK(c, k, &r.ambiguous);
  double sum = 0;
  for (int i : idx) sum += s[i];
  for (int i : idx) r.chosen.push_back({i, (norm ? s[i] / (sum + 1e-20) : s[i]) * scale});
  return r;
}

std::vector<float> RandomLogits(int64_t T, int64_t E, double sd, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, static_cast<float>(sd));
  std::vector<float> l(static_cast<size_t>(T * E));
  for (float& v : l) v = d(rng);
  return l;
}

// Runs ComputeRouting and compares every unambiguous token with ref(t).
template <typename RefFn>
void CheckAgainst(const RouterConfig& cfg, const std::vector<float>& logits, const float* bias,
                  int64_t T, RefFn ref) {
  const int k = cfg.top_k;
  std::vector<int32_t> ids(static_cast<size_t>(T * k), -1);
  std::vector<float> w(static_cast<size_t>(T * k), NAN);
  ASSERT_TRUE(ComputeRouting(cfg, logits.data(), bias, T, ids.data(), w.data()).ok());
  int skipped = 0;
  for (int64_t t = 0; t < T; ++t) {
    RefRoute want = ref(logits.data() + t * cfg.num_experts);
    if (want.ambiguous) {
      ++skipped;
      continue;
    }
    std::vector<std::pair<int, double>> got;
    for (int j = 0; j < k; ++j) got.push_back({ids[t * k + j], w[t * k + j]});
    std::sort(got.begin(), got.end());
    std::sort(want.chosen.begin(), want.chosen.end());
    ASSERT_EQ(got.size(), want.chosen.size());
    for (int j = 0; j < k; ++j) {
      ASSERT_EQ(got[j].first, want.chosen[j].first)
          << "token " << t << " slot " << j << " (" << cfg.ToString() << ")";
      EXPECT_NEAR(got[j].second, want.chosen[j].second,
                  2e-6 * std::max(1.0, std::fabs(want.chosen[j].second)))
          << "token " << t << " expert " << got[j].first;
    }
  }
  // Near ties at 1e-5 are rare for N(0, sd) logits; many skips would hide bugs.
  EXPECT_LE(skipped, T / 20 + 1) << cfg.ToString();
}

TEST(RouterTest, MixtralSoftmaxTopkRenormalised) {
  std::mt19937_64 rng(Seed() + 1);
  RouterConfig cfg;
  cfg.num_experts = 8;
  cfg.top_k = 2;
  cfg.norm_topk_prob = true;
  const int64_t T = 257;
  const std::vector<float> l = RandomLogits(T, 8, 2.0, rng);
  CheckAgainst(cfg, l, nullptr, T,
               [](const float* row) { return RefSoftmaxTopk(row, 8, 2, true); });
}

TEST(RouterTest, QwenMoeWithAndWithoutRenormalisation) {
  std::mt19937_64 rng(Seed() + 2);
  for (bool norm : {false, true}) {
    RouterConfig cfg;
    cfg.num_experts = norm ? 128 : 60;  // Qwen3-30B-A3B / Qwen1.5-MoE-A2.7B shapes
    cfg.top_k = norm ? 8 : 4;
    cfg.norm_topk_prob = norm;
    const int64_t T = 97;
    const std::vector<float> l = RandomLogits(T, cfg.num_experts, 1.5, rng);
    const int E = static_cast<int>(cfg.num_experts), k = cfg.top_k;
    CheckAgainst(cfg, l, nullptr, T,
                 [&](const float* row) { return RefSoftmaxTopk(row, E, k, norm); });
  }
}

TEST(RouterTest, DeepseekV2GreedyAndGroupLimitedGreedy) {
  std::mt19937_64 rng(Seed() + 3);
  struct Case {
    TopkMethod method;
    int E, k, n_group, topk_group;
    bool norm;
    float scale;
  };
  const Case cases[] = {
      {TopkMethod::kGreedy, 64, 6, 1, 1, false, 1.0f},                // V2-Lite
      {TopkMethod::kGroupLimitedGreedy, 160, 6, 8, 3, false, 16.0f},  // V2
      {TopkMethod::kGroupLimitedGreedy, 64, 4, 8, 2, true, 2.0f},
  };
  for (const Case& c : cases) {
    RouterConfig cfg;
    cfg.topk_method = c.method;
    cfg.num_experts = c.E;
    cfg.top_k = c.k;
    cfg.n_group = c.n_group;
    cfg.topk_group = c.topk_group;
    cfg.norm_topk_prob = c.norm;
    cfg.norm_epsilon = 1e-20f;
    cfg.routed_scaling_factor = c.scale;
    const int64_t T = 65;
    const std::vector<float> l = RandomLogits(T, c.E, 2.0, rng);
    CheckAgainst(cfg, l, nullptr, T, [&](const float* row) {
      return RefDeepseekV2(row, c.E, c.k, c.method != TopkMethod::kGreedy, c.n_group, c.topk_group,
                           c.norm, c.scale);
    });
  }
}

// DeepSeek-V2 with norm_topk_prob = true, where the upstreams disagree
// (router.cc, step 5): qlayer renormalises and then scales, as vLLM's
// DeepseekV2MoE and DeepSeek-V3's code do, not as DeepSeek-V2's own MoEGate
// (renormalise *instead of* scaling, and only for top_k > 1). A token's k
// weights therefore sum to routed_scaling_factor, not 1; with k = 1 the
// weight is the factor itself, not p * factor. Changing the rule fails here.
TEST(RouterTest, DeepseekV2NormTopkProbRenormalisesThenScales) {
  std::mt19937_64 rng(Seed() + 9);
  for (int k : {6, 1}) {
    RouterConfig cfg;
    cfg.topk_method = TopkMethod::kGroupLimitedGreedy;
    cfg.num_experts = 64;
    cfg.top_k = k;
    cfg.n_group = 8;
    cfg.topk_group = 3;
    cfg.norm_topk_prob = true;
    cfg.norm_epsilon = 1e-20f;
    cfg.routed_scaling_factor = 16.0f;  // DeepSeek-V2's value
    const int E = 64;
    const double scale = cfg.routed_scaling_factor;
    const int64_t T = 33;
    const std::vector<float> l = RandomLogits(T, E, 2.0, rng);
    std::vector<int32_t> ids(static_cast<size_t>(T * k), -1);
    std::vector<float> w(static_cast<size_t>(T * k), NAN);
    ASSERT_TRUE(ComputeRouting(cfg, l.data(), nullptr, T, ids.data(), w.data()).ok());
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> p = Softmax(l.data() + t * E, E);
      double sum_p = 0, sum_w = 0;
      for (int j = 0; j < k; ++j) {
        sum_p += p[ids[t * k + j]];
        sum_w += w[t * k + j];
      }
      EXPECT_NEAR(sum_w, scale, 1e-5 * scale) << "k=" << k << " token " << t;
      for (int j = 0; j < k; ++j) {
        const double pi = p[ids[t * k + j]];
        const double renorm_then_scale = pi / (sum_p + 1e-20) * scale;
        // DeepSeek-V2's modeling_deepseek.py, the rule not taken.
        const double v2_own = k > 1 ? pi / (sum_p + 1e-20) : pi * scale;
        EXPECT_NEAR(w[t * k + j], renorm_then_scale, 2e-6 * scale) << "k=" << k << " token " << t;
        // Relative: a small weight's absolute difference is small too (k = 6
        // gave 0.0116 once against the old absolute 1e-3 * scale).
        EXPECT_GT(std::fabs(w[t * k + j] - v2_own),
                  1e-3 * std::max<double>(std::fabs(w[t * k + j]), std::fabs(v2_own)))
            << "k=" << k << " token " << t;
      }
    }
  }
}

TEST(RouterTest, DeepseekV3SigmoidGroupedWithCorrectionBias) {
  std::mt19937_64 rng(Seed() + 4);
  struct Case {
    int E, k, n_group, topk_group;
    bool norm;
    float scale;
  };
  const Case cases[] = {
      {256, 8, 8, 4, true, 2.5f}, {64, 6, 8, 3, false, 1.5f}, {16, 4, 1, 1, true, 1.0f}};
  for (const Case& c : cases) {
    RouterConfig cfg;
    cfg.scoring = RouterScoring::kSigmoid;
    cfg.topk_method = TopkMethod::kNoauxTc;
    cfg.num_experts = c.E;
    cfg.top_k = c.k;
    cfg.n_group = c.n_group;
    cfg.topk_group = c.topk_group;
    cfg.norm_topk_prob = c.norm;
    cfg.norm_epsilon = 1e-20f;
    cfg.routed_scaling_factor = c.scale;
    cfg.has_correction_bias = true;
    const int64_t T = 41;
    const std::vector<float> l = RandomLogits(T, c.E, 2.0, rng);
    const std::vector<float> bias = RandomLogits(1, c.E, 0.3, rng);
    CheckAgainst(cfg, l, bias.data(), T, [&](const float* row) {
      return RefDeepseekV3(row, bias.data(), c.E, c.k, c.n_group, c.topk_group, c.norm, c.scale);
    });
  }
}

// The bias moves selection but never the weights: with a huge bias on one
// expert it is always chosen, and its weight is its plain sigmoid.
TEST(RouterTest, CorrectionBiasSelectsButDoesNotWeight) {
  std::mt19937_64 rng(Seed() + 5);
  RouterConfig cfg;
  cfg.scoring = RouterScoring::kSigmoid;
  cfg.topk_method = TopkMethod::kNoauxTc;
  cfg.num_experts = 16;
  cfg.top_k = 2;
  cfg.norm_topk_prob = false;
  cfg.has_correction_bias = true;
  std::vector<float> bias(16, 0.0f);
  bias[11] = 100.0f;
  const int64_t T = 9;
  const std::vector<float> l = RandomLogits(T, 16, 2.0, rng);
  std::vector<int32_t> ids(static_cast<size_t>(T * 2));
  std::vector<float> w(ids.size());
  ASSERT_TRUE(ComputeRouting(cfg, l.data(), bias.data(), T, ids.data(), w.data()).ok());
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_EQ(ids[t * 2], 11) << "token " << t;
    EXPECT_NEAR(w[t * 2], 1.0 / (1.0 + std::exp(-double(l[t * 16 + 11]))), 1e-6);
  }
}

// transformers fills the dropped groups with 0.0 (not -inf): when every kept
// expert's corrected score is negative, dropped experts (score 0.0) win, the
// lowest indices first under qlayer's tie rule.
TEST(RouterTest, DroppedGroupsScoreZeroLikeTransformers) {
  std::mt19937_64 rng(Seed() + 6);
  RouterConfig cfg;
  cfg.scoring = RouterScoring::kSigmoid;
  cfg.topk_method = TopkMethod::kNoauxTc;
  cfg.num_experts = 16;
  cfg.top_k = 3;
  cfg.n_group = 4;
  cfg.topk_group = 2;
  cfg.has_correction_bias = true;
  const std::vector<float> bias(16, -5.0f);  // every corrected score < 0
  const std::vector<float> l = RandomLogits(1, 16, 1.0, rng);
  int32_t ids[3];
  float w[3];
  ASSERT_TRUE(ComputeRouting(cfg, l.data(), bias.data(), 1, ids, w).ok());
  // Which groups were kept: the two with the largest top-2 sums.
  std::vector<double> gscore(4);
  for (int g = 0; g < 4; ++g) {
    std::vector<double> v;
    for (int i = 0; i < 4; ++i) v.push_back(1.0 / (1.0 + std::exp(-double(l[g * 4 + i]))) - 5.0);
    std::sort(v.rbegin(), v.rend());
    gscore[g] = v[0] + v[1];
  }
  bool amb = false;
  const std::vector<int> keep = TopK(gscore, 2, &amb);
  std::vector<int> dropped_experts;
  for (int e = 0; e < 16; ++e) {
    if (std::find(keep.begin(), keep.end(), e / 4) == keep.end()) dropped_experts.push_back(e);
  }
  dropped_experts.resize(3);
  std::vector<int> got(ids, ids + 3);
  std::sort(got.begin(), got.end());
  if (!amb) {
    EXPECT_EQ(got, dropped_experts);
  }
}

TEST(RouterTest, RowsAreOrderedBestFirst) {
  std::mt19937_64 rng(Seed() + 7);
  RouterConfig cfg;
  cfg.num_experts = 32;
  cfg.top_k = 4;
  const int64_t T = 20;
  const std::vector<float> l = RandomLogits(T, 32, 2.0, rng);
  std::vector<int32_t> ids(static_cast<size_t>(T * 4));
  std::vector<float> w(ids.size());
  ASSERT_TRUE(ComputeRouting(cfg, l.data(), nullptr, T, ids.data(), w.data()).ok());
  for (int64_t t = 0; t < T; ++t) {
    float sum = 0;
    for (int j = 0; j < 4; ++j) {
      sum += w[t * 4 + j];
      if (j > 0) {
        EXPECT_GE(w[t * 4 + j - 1], w[t * 4 + j]);
      }
    }
    EXPECT_NEAR(sum, 1.0f, 1e-6);
  }
}

TEST(RouterTest, RejectsBadConfigsAndLogits) {
  RouterConfig cfg;
  cfg.num_experts = 8;
  cfg.top_k = 9;
  EXPECT_FALSE(cfg.Validate().ok());
  cfg.top_k = 2;
  EXPECT_TRUE(cfg.Validate().ok());
  cfg.topk_method = TopkMethod::kGroupLimitedGreedy;
  cfg.n_group = 3;  // does not divide 8
  EXPECT_NE(cfg.Validate().message().find("n_group=3"), std::string::npos) << cfg.Validate();
  cfg.n_group = 4;
  cfg.topk_group = 5;
  EXPECT_FALSE(cfg.Validate().ok());
  cfg.topk_group = 1;
  cfg.top_k = 3;  // only 2 experts in the one kept group
  EXPECT_FALSE(cfg.Validate().ok());
  cfg.topk_method = TopkMethod::kNoauxTc;
  cfg.n_group = 8;
  cfg.topk_group = 4;
  cfg.top_k = 2;
  EXPECT_NE(cfg.Validate().message().find("top 2"), std::string::npos) << cfg.Validate();

  RouterConfig ok;
  ok.num_experts = 4;
  ok.top_k = 2;
  std::vector<float> l = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, NAN, 0.0f, 1.0f};
  int32_t ids[4];
  float w[4];
  absl::Status s = ComputeRouting(ok, l.data(), nullptr, 2, ids, w);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token 1, expert 1"), std::string::npos) << s;
  l[5] = INFINITY;
  EXPECT_FALSE(ComputeRouting(ok, l.data(), nullptr, 2, ids, w).ok());
  ok.has_correction_bias = true;
  l[5] = 0.0f;
  EXPECT_FALSE(ComputeRouting(ok, l.data(), nullptr, 2, ids, w).ok());
}

TEST(RouterTest, CallerTopkIsValidated) {
  auto view = [](DType dt, Shape shape, const void* data) {
    return ConstTensorView{dt, std::move(shape), data};
  };
  const int64_t ids64[] = {0, 3, 2, 1};
  const float w[] = {0.5f, 0.5f, 0.25f, 0.75f};
  absl::StatusOr<Routing> r =
      RoutingFromTopk(view(DType::kI64, {2, 2}, ids64), view(DType::kF32, {2, 2}, w), 2, 4, 2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ids, (std::vector<int32_t>{0, 3, 2, 1}));
  EXPECT_EQ(r->weights, (std::vector<float>{0.5f, 0.5f, 0.25f, 0.75f}));
  EXPECT_EQ(ExpertTokenCounts(*r, 4), (std::vector<int64_t>{1, 1, 1, 1}));

  const int32_t out_of_range[] = {0, 4, 2, 1};
  absl::Status s = RoutingFromTopk(view(DType::kI32, {2, 2}, out_of_range),
                                   view(DType::kF32, {2, 2}, w), 2, 4, 2)
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("id 4 of token 0"), std::string::npos) << s;

  const int32_t dup[] = {0, 1, 2, 2};
  s = RoutingFromTopk(view(DType::kI32, {2, 2}, dup), view(DType::kF32, {2, 2}, w), 2, 4, 2)
          .status();
  EXPECT_NE(s.message().find("expert 2 twice"), std::string::npos) << s;

  const int32_t k1[] = {0, 1};
  s = RoutingFromTopk(view(DType::kI32, {2, 1}, k1), view(DType::kF32, {2, 1}, w), 2, 4, 2)
          .status();
  EXPECT_NE(s.message().find("k=1"), std::string::npos) << s;

  const int32_t good[] = {0, 1, 2, 3};
  s = RoutingFromTopk(view(DType::kI32, {2, 2}, good), view(DType::kF32, {4}, w), 2, 4, 2).status();
  EXPECT_FALSE(s.ok());
  s = RoutingFromTopk(view(DType::kI32, {2, 2}, good), view(DType::kI32, {2, 2}, good), 2, 4, 2)
          .status();
  EXPECT_FALSE(s.ok());
  s = RoutingFromTopk(view(DType::kI32, {3, 2}, good), view(DType::kF32, {3, 2}, w), 2, 4, 2)
          .status();
  EXPECT_FALSE(s.ok());
  const float nan_w[] = {0.5f, NAN, 0.25f, 0.75f};
  s = RoutingFromTopk(view(DType::kI32, {2, 2}, good), view(DType::kF32, {2, 2}, nan_w), 2, 4, 2)
          .status();
  EXPECT_NE(s.message().find("token 0, slot 1"), std::string::npos) << s;
}

// MoERouter: logits from the gate match a float64 x . gate^T, and Route()
// equals ComputeRouting on those logits; caller logits in bf16 are accepted.
TEST(RouterTest, MoERouterComputesLogitsFromTheGate) {
  std::mt19937_64 rng(Seed() + 8);
  moetest::RandomBlockSpec spec;
  spec.E = 8;
  spec.H = 96;
  spec.I = 32;
  spec.gate_dtype = DType::kBF16;
  moetest::RandomBlock rb = moetest::MakeRandomBlock(spec, rng);
  absl::StatusOr<MoERouter> router = MoERouter::FromBlock(rb.block);
  ASSERT_TRUE(router.ok()) << router.status();
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t T = 5;
    Tensor x = moetest::RandomActivations(T, spec.H, dt, rng);
    std::vector<float> logits(static_cast<size_t>(T * spec.E), NAN);
    ASSERT_TRUE(router->ComputeLogits(x.view(), logits.data()).ok());
    std::vector<float> logits2(logits.size(), NAN);
    ASSERT_TRUE(ComputeRouterLogits(rb.block, x.view(), logits2.data()).ok());
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < spec.E; ++e) {
        double want = 0;
        for (int64_t h = 0; h < spec.H; ++h) {
          want += LoadAsDouble(x.data(), dt, t * spec.H + h) *
                  LoadAsDouble(rb.block.gate.data(), DType::kBF16, e * spec.H + h);
        }
        EXPECT_NEAR(logits[t * spec.E + e], want, 1e-5);
        EXPECT_EQ(logits[t * spec.E + e], logits2[t * spec.E + e]);
      }
    }
    absl::StatusOr<Routing> r = router->Route(x.view());
    ASSERT_TRUE(r.ok()) << r.status();
    std::vector<int32_t> ids(static_cast<size_t>(T * 2));
    std::vector<float> w(ids.size());
    ASSERT_TRUE(
        ComputeRouting(rb.block.router, logits.data(), nullptr, T, ids.data(), w.data()).ok());
    EXPECT_EQ(r->ids, ids);
    EXPECT_EQ(r->weights, w);

    Tensor lb = Tensor::Zeros(DType::kBF16, {T, spec.E});
    for (int64_t i = 0; i < T * spec.E; ++i) StoreFromDouble(lb.data(), DType::kBF16, i, logits[i]);
    EXPECT_TRUE(router->RouteLogits(lb.view(), T).ok());
    EXPECT_FALSE(router->RouteLogits(lb.view(), T + 1).ok());
  }
  Tensor bad = moetest::RandomActivations(2, spec.H + 1, DType::kF32, rng);
  EXPECT_EQ(router->Route(bad.view()).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qlayer
