// The MoE router math (FORMATS.md §8) in float32, one token at a time.
// Reference: transformers' MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock,
// DeepSeek-V2's MoEGate and DeepseekV3TopkRouter; the header lists the steps.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

bool IsGrouped(TopkMethod m) { return m != TopkMethod::kGreedy; }

// Indices [0, n) ordered by descending value, ties to the lower index: the
// first `count` of them are the top-`count`.
void TopIndices(const float* v, int64_t n, int64_t count, std::vector<int32_t>& idx) {
  idx.resize(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + count, idx.end(),
                    [v](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
}

// Per-token scratch, reused across tokens.
struct Scratch {
  std::vector<float> scores;  // s
  std::vector<float> choice;  // c
  std::vector<float> group_scores;
  std::vector<int32_t> order;
  std::vector<char> keep_group;
};

void RouteOneToken(const RouterConfig& cfg, const float* logits, const float* bias, Scratch& s,
                   int32_t* ids, float* weights) {
  const int64_t E = cfg.num_experts;
  const int k = cfg.top_k;
  float* scores = s.scores.data();
  float* choice = s.choice.data();

  // 1. scores.
  if (cfg.scoring == RouterScoring::kSoftmax) {
    const float m = *std::max_element(logits, logits + E);
    double sum = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      scores[e] = std::exp(logits[e] - m);
      sum += scores[e];
    }
    const float total = static_cast<float>(sum);
    for (int64_t e = 0; e < E; ++e) scores[e] /= total;
  } else {
    for (int64_t e = 0; e < E; ++e) scores[e] = 1.0f / (1.0f + std::exp(-logits[e]));
  }

  // 2. choice scores.
  for (int64_t e = 0; e < E; ++e) {
    choice[e] = cfg.has_correction_bias ? scores[e] + bias[e] : scores[e];
  }

  // 3. group limit.
  if (IsGrouped(cfg.topk_method) && cfg.n_group > 1 && cfg.topk_group < cfg.n_group) {
    const int64_t gs = E / cfg.n_group;
    for (int64_t g = 0; g < cfg.n_group; ++g) {
      const float* c = choice + g * gs;
      if (cfg.topk_method == TopkMethod::kGroupLimitedGreedy) {
        s.group_scores[g] = *std::max_element(c, c + gs);
      } else {
        // torch.topk(2).sum(): the two largest values, duplicates counted.
        float a = -INFINITY, b = -INFINITY;
        for (int64_t i = 0; i < gs; ++i) {
          if (c[i] > a) {
            b = a;
            a = c[i];
          } else if (c[i] > b) {
            b = c[i];
          }
        }
        s.group_scores[g] = a + b;
      }
    }
    TopIndices(s.group_scores.data(), cfg.n_group, cfg.topk_group, s.order);
    std::fill(s.keep_group.begin(), s.keep_group.end(), 0);
    for (int64_t j = 0; j < cfg.topk_group; ++j) s.keep_group[s.order[j]] = 1;
    for (int64_t e = 0; e < E; ++e) {
      if (!s.keep_group[e / gs]) choice[e] = 0.0f;  // transformers' masked_fill(~mask, 0.0)
    }
  }

  // 4. top-k of the choice scores; 5. weights from the uncorrected scores:
  // renormalised iff norm_topk_prob, then always scaled, for every family.
  // For DeepSeek-V2 with norm_topk_prob = true the upstreams disagree, and
  // this is a choice: DeepSeek-V2's own modeling_deepseek.py (MoEGate) does
  // `if top_k > 1 and norm_topk_prob: renormalise else: *= scaling`, i.e.
  // renormalises *instead of* scaling; DeepSeek-V3's code renormalises and
  // then scales, and vLLM's DeepseekV2MoE (one class for V2 and V3:
  // FusedMoE renormalize=norm_topk_prob, routed_scaling_factor always) does
  // the same for V2. We follow vLLM / V3: one rule for both families, and the
  // answers of the engine V2 checkpoints are most often served with, which is
  // what a remote twin must reproduce; k = 1 renormalises too, as in vLLM.
  // Released V2 / V2-Lite configs set norm_topk_prob = false, where all of
  // them agree (scale only). router_test's
  // DeepseekV2NormTopkProbRenormalisesThenScales pins this.
  TopIndices(choice, E, k, s.order);
  float sum = 0.0f;
  for (int j = 0; j < k; ++j) {
    ids[j] = s.order[j];
    weights[j] = scores[s.order[j]];
    sum += weights[j];
  }
  if (cfg.norm_topk_prob) {
    const float denom = sum + cfg.norm_epsilon;
    for (int j = 0; j < k; ++j) weights[j] /= denom;
  }
  if (cfg.routed_scaling_factor != 1.0f) {
    for (int j = 0; j < k; ++j) weights[j] *= cfg.routed_scaling_factor;
  }
}

}  // namespace

absl::string_view RouterScoringName(RouterScoring s) {
  return s == RouterScoring::kSigmoid ? "sigmoid" : "softmax";
}

absl::string_view TopkMethodName(TopkMethod m) {
  switch (m) {
    case TopkMethod::kGreedy:
      return "greedy";
    case TopkMethod::kGroupLimitedGreedy:
      return "group_limited_greedy";
    case TopkMethod::kNoauxTc:
      return "noaux_tc";
  }
  return "invalid";
}

absl::Status RouterConfig::Validate() const {
  if (num_experts <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("router: num_experts=", num_experts));
  }
  if (top_k < 1 || top_k > num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: top_k=", top_k, " is outside [1, num_experts=", num_experts, "]"));
  }
  if (!std::isfinite(routed_scaling_factor) || !std::isfinite(norm_epsilon) ||
      norm_epsilon < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router: routed_scaling_factor=", routed_scaling_factor, " norm_epsilon=", norm_epsilon));
  }
  if (!IsGrouped(topk_method)) return absl::OkStatus();
  if (n_group < 1 || num_experts % n_group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("router ", TopkMethodName(topk_method),
                                                   ": n_group=", n_group,
                                                   " does not divide num_experts=", num_experts));
  }
  if (topk_group < 1 || topk_group > n_group) {
    return absl::InvalidArgumentError(absl::StrCat("router ", TopkMethodName(topk_method),
                                                   ": topk_group=", topk_group,
                                                   " is outside [1, n_group=", n_group, "]"));
  }
  const int64_t group_size = num_experts / n_group;
  if (top_k > topk_group * group_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router ", TopkMethodName(topk_method), ": top_k=", top_k, " exceeds the ",
        topk_group * group_size, " experts of the topk_group=", topk_group, " kept groups"));
  }
  if (topk_method == TopkMethod::kNoauxTc && group_size < 2 && n_group > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("router noaux_tc: groups of ", group_size,
                     " expert(s); the group score sums each group's top 2"));
  }
  return absl::OkStatus();
}

std::string RouterConfig::ToString() const {
  std::string s = absl::StrCat(RouterScoringName(scoring), " ", TopkMethodName(topk_method),
                               " top-", top_k, " of ", num_experts);
  if (IsGrouped(topk_method)) absl::StrAppend(&s, " groups ", topk_group, "/", n_group);
  if (norm_topk_prob) absl::StrAppend(&s, " renorm");
  if (routed_scaling_factor != 1.0f) absl::StrAppend(&s, " scale ", routed_scaling_factor);
  if (has_correction_bias) absl::StrAppend(&s, " bias");
  return s;
}

absl::Status ComputeRouting(const RouterConfig& config, const float* logits,
                            const float* correction_bias, int64_t T, int32_t* topk_ids,
                            float* topk_weights) {
  QLAYER_RETURN_IF_ERROR(config.Validate());
  const int64_t E = config.num_experts;
  const int k = config.top_k;
  if (T < 0) return absl::InvalidArgumentError(absl::StrCat("router: T=", T));
  if (T == 0) return absl::OkStatus();
  if (logits == nullptr || topk_ids == nullptr || topk_weights == nullptr) {
    return absl::InvalidArgumentError("router: null logits or output");
  }
  if (config.has_correction_bias) {
    if (correction_bias == nullptr) {
      return absl::InvalidArgumentError("router: has_correction_bias but no bias given");
    }
    for (int64_t e = 0; e < E; ++e) {
      if (!std::isfinite(correction_bias[e])) {
        return absl::InvalidArgumentError(absl::StrCat(
            "router: e_score_correction_bias[", e, "] = ", correction_bias[e], " is not finite"));
      }
    }
  }
  for (int64_t i = 0; i < T * E; ++i) {
    if (!std::isfinite(logits[i])) {
      return absl::InvalidArgumentError(absl::StrCat("router logits of token ", i / E, ", expert ",
                                                     i % E, " = ", logits[i], " are not finite"));
    }
  }
  Scratch s;
  s.scores.resize(static_cast<size_t>(E));
  s.choice.resize(static_cast<size_t>(E));
  s.group_scores.resize(static_cast<size_t>(config.n_group));
  s.keep_group.resize(static_cast<size_t>(config.n_group));
  for (int64_t t = 0; t < T; ++t) {
    RouteOneToken(config, logits + t * E, correction_bias, s, topk_ids + t * k,
                  topk_weights + t * k);
  }
  return absl::OkStatus();
}

absl::StatusOr<Routing> RoutingFromTopk(const ConstTensorView& ids, const ConstTensorView& weights,
                                        int64_t T, int64_t num_experts, int top_k) {
  if (ids.dtype != DType::kI32 && ids.dtype != DType::kI64) {
    return absl::InvalidArgumentError(
        absl::StrCat("top-k ids have dtype ", DTypeName(ids.dtype), ", expected i32 or i64"));
  }
  if (!IsFloatActivation(weights.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top-k weights have dtype ", DTypeName(weights.dtype), ", expected f32, f16 or bf16"));
  }
  if (ids.shape.size() != 2 || ids.shape[0] != T) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top-k ids have shape ", ShapeToString(ids.shape), ", expected [T, k] with T=", T));
  }
  if (ids.shape[1] != top_k) {
    return absl::InvalidArgumentError(absl::StrCat("top-k ids have k=", ids.shape[1],
                                                   " columns but the block routes each token to ",
                                                   "top_k=", top_k, " experts"));
  }
  if (weights.shape != ids.shape) {
    return absl::InvalidArgumentError(
        absl::StrCat("top-k weights have shape ", ShapeToString(weights.shape),
                     ", expected the ids' shape ", ShapeToString(ids.shape)));
  }
  if (T > 0 && (ids.data == nullptr || weights.data == nullptr)) {
    return absl::InvalidArgumentError("top-k ids or weights have no data");
  }
  Routing r;
  r.num_tokens = T;
  r.top_k = top_k;
  r.ids.resize(static_cast<size_t>(T * top_k));
  r.weights.resize(static_cast<size_t>(T * top_k));
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const int64_t i = t * top_k + j;
      const int64_t id = ids.dtype == DType::kI32 ? ids.as<int32_t>()[i] : ids.as<int64_t>()[i];
      if (id < 0 || id >= num_experts) {
        return absl::InvalidArgumentError(absl::StrCat("top-k id ", id, " of token ", t, ", slot ",
                                                       j, " is outside [0, ", num_experts, ")"));
      }
      for (int j2 = 0; j2 < j; ++j2) {
        if (r.ids[static_cast<size_t>(t * top_k + j2)] == id) {
          return absl::InvalidArgumentError(absl::StrCat("token ", t, " names expert ", id,
                                                         " twice (slots ", j2, " and ", j, ")"));
        }
      }
      const double w = LoadAsDouble(weights.data, weights.dtype, i);
      if (!std::isfinite(w)) {
        return absl::InvalidArgumentError(
            absl::StrCat("top-k weight of token ", t, ", slot ", j, " is ", w));
      }
      r.ids[static_cast<size_t>(i)] = static_cast<int32_t>(id);
      r.weights[static_cast<size_t>(i)] = static_cast<float>(w);
    }
  }
  return r;
}

std::vector<int64_t> ExpertTokenCounts(const Routing& routing, int64_t num_experts) {
  std::vector<int64_t> counts(static_cast<size_t>(std::max<int64_t>(num_experts, 0)), 0);
  for (int32_t id : routing.ids) {
    if (id >= 0 && id < num_experts) ++counts[static_cast<size_t>(id)];
  }
  return counts;
}

}  // namespace qlayer
