#include "server/tools/moe_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"
#include "server/tools/normal_rng.h"

namespace qlayer {
namespace {

using json = nlohmann::json;

absl::Status Bad(absl::string_view family, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("--moe ", family, ": ", what));
}

bool IsDeepseek(absl::string_view f) { return f == "deepseek_v2" || f == "deepseek_v3"; }
bool IsQwen(absl::string_view f) { return f == "qwen2_moe" || f == "qwen3_moe"; }

// The architectures entry transformers / vLLM dispatch on.
const char* Architecture(absl::string_view f) {
  if (f == "mixtral") return "MixtralForCausalLM";
  if (f == "qwen2_moe") return "Qwen2MoeForCausalLM";
  if (f == "qwen3_moe") return "Qwen3MoeForCausalLM";
  if (f == "deepseek_v2") return "DeepseekV2ForCausalLM";
  return "DeepseekV3ForCausalLM";
}

// Resolves the family's defaults and checks the router the loader will build
// from the written config (the same RouterConfig::Validate it runs).
absl::StatusOr<RouterConfig> ResolveRouter(const MoEToolSpec& s, std::string& topk_method) {
  const absl::string_view f = s.family;
  RouterConfig r;
  r.num_experts = s.experts;
  r.top_k = s.top_k;
  topk_method = s.topk_method;
  const bool grouped_flags = s.n_group != 1 || s.topk_group != 1;
  if (!IsDeepseek(f)) {
    if (grouped_flags || !s.topk_method.empty() || s.routed_scaling_factor.has_value()) {
      return Bad(f,
                 "--n-group, --topk-group, --topk-method and --routed-scaling-factor are "
                 "DeepSeek router settings");
    }
    if (f == "mixtral" && s.norm_topk_prob.has_value() && !*s.norm_topk_prob) {
      return Bad(f, "Mixtral always renormalises its top-k weights (no norm_topk_prob key)");
    }
    r.norm_topk_prob = f == "mixtral" ? true : s.norm_topk_prob.value_or(f == "qwen3_moe");
  } else {
    const bool v3 = f == "deepseek_v3";
    r.scoring = v3 ? RouterScoring::kSigmoid : RouterScoring::kSoftmax;
    if (topk_method.empty()) {
      topk_method = v3 ? "noaux_tc" : (grouped_flags ? "group_limited_greedy" : "greedy");
    }
    if (topk_method == "greedy") {
      r.topk_method = TopkMethod::kGreedy;
    } else if (topk_method == "group_limited_greedy") {
      r.topk_method = TopkMethod::kGroupLimitedGreedy;
    } else if (topk_method == "noaux_tc") {
      r.topk_method = TopkMethod::kNoauxTc;
    } else {
      return Bad(f, absl::StrCat("--topk-method '", topk_method,
                                 "' (expected greedy, group_limited_greedy or noaux_tc)"));
    }
    if (v3 != (r.topk_method == TopkMethod::kNoauxTc)) {
      return Bad(f, absl::StrCat("topk_method ", topk_method,
                                 v3 ? " is not DeepSeek-V3's (noaux_tc, with the correction bias)"
                                    : " needs e_score_correction_bias: use --moe deepseek_v3"));
    }
    if (r.topk_method == TopkMethod::kGreedy && grouped_flags) {
      return Bad(f, "--n-group / --topk-group need topk_method group_limited_greedy");
    }
    r.n_group = s.n_group;
    r.topk_group = s.topk_group;
    r.norm_topk_prob = s.norm_topk_prob.value_or(v3);
    r.routed_scaling_factor = static_cast<float>(s.routed_scaling_factor.value_or(v3 ? 2.5 : 1.0));
    r.norm_epsilon = 1e-20f;
    r.has_correction_bias = v3;
  }
  absl::Status valid = r.Validate();
  if (!valid.ok()) return Bad(f, valid.message());
  return r;
}

absl::Status CheckSpec(const MoEToolSpec& s) {
  const absl::string_view f = s.family;
  if (f != "mixtral" && !IsQwen(f) && !IsDeepseek(f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--moe '", f, "': expected mixtral, qwen2_moe, qwen3_moe, deepseek_v2 or deepseek_v3"));
  }
  if (s.layers.empty()) return Bad(f, "--layers-moe names no layer");
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  if (s.hidden <= 0 || s.intermediate <= 0 || s.hidden > kMaxDim || s.intermediate > kMaxDim) {
    return Bad(f, absl::StrCat("--hidden ", s.hidden, " and --intermediate ", s.intermediate,
                               " must be in [1, 2^20]"));
  }
  if (s.experts <= 0 || s.experts > 4096) {
    return Bad(f, absl::StrCat("--experts ", s.experts, " must be in [1, 4096]"));
  }
  if (s.shared_intermediate < 0 || s.shared_intermediate > kMaxDim) {
    return Bad(
        f, absl::StrCat("--shared-intermediate ", s.shared_intermediate, " must be in [0, 2^20]"));
  }
  if ((f == "mixtral" || f == "qwen3_moe") && s.shared_intermediate > 0) {
    return Bad(f, "this family has no shared expert (drop --shared-intermediate)");
  }
  if (IsDeepseek(f) && s.shared_intermediate % s.intermediate != 0) {
    return Bad(f, absl::StrCat("--shared-intermediate ", s.shared_intermediate,
                               " must be n_shared_experts x --intermediate ", s.intermediate,
                               " (DeepSeek stores its shared experts as one MLP)"));
  }
  return absl::OkStatus();
}

// Dense [rows, cols] ~ N(0, (scale / sqrt(cols))^2) in dtype.
Tensor RandomDense(int64_t rows, int64_t cols, double scale, DType dtype, uint64_t seed) {
  NormalRng rng(seed);
  Tensor t = Tensor::Zeros(dtype, {rows, cols});
  const double sd = scale / std::sqrt(static_cast<double>(cols));
  for (int64_t i = 0; i < rows * cols; ++i) StoreFromDouble(t.data(), dtype, i, sd * rng.Normal());
  return t;
}

void AddMlp(const std::string& prefix, bool mixtral_naming, int64_t H, int64_t I,
            std::vector<MoELinear>& out) {
  const int64_t input = static_cast<int64_t>(out.size());
  if (mixtral_naming) {
    out.push_back({prefix + ".w1", I, H, input});
    out.push_back({prefix + ".w3", I, H, input});
    out.push_back({prefix + ".w2", H, I});
  } else {
    out.push_back({prefix + ".gate_proj", I, H, input});
    out.push_back({prefix + ".up_proj", I, H, input});
    out.push_back({prefix + ".down_proj", H, I});
  }
}

}  // namespace

absl::StatusOr<std::vector<int64_t>> ParseLayerList(absl::string_view text) {
  std::set<int64_t> layers;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    std::vector<absl::string_view> ends = absl::StrSplit(item, absl::MaxSplits('-', 1));
    int64_t lo = 0, hi = 0;
    if (!absl::SimpleAtoi(ends[0], &lo) ||
        !absl::SimpleAtoi(ends.size() == 2 ? ends[1] : ends[0], &hi) || lo < 0 || hi < lo ||
        hi >= 10000) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--layers-moe '", item, "' is not a layer index or range (e.g. 1,3 or 0-3)"));
    }
    for (int64_t l = lo; l <= hi; ++l) layers.insert(l);
  }
  return std::vector<int64_t>(layers.begin(), layers.end());
}

std::string MoEBlockPath(absl::string_view family, int64_t layer) {
  return absl::StrCat("model.layers.", layer, family == "mixtral" ? ".block_sparse_moe" : ".mlp");
}

absl::StatusOr<MoEModules> BuildMoEModules(const MoEToolSpec& s, DType dtype, uint64_t seed) {
  QLAYER_RETURN_IF_ERROR(CheckSpec(s));
  std::string topk_method;
  QLAYER_ASSIGN_OR_RETURN(RouterConfig router, ResolveRouter(s, topk_method));
  const absl::string_view f = s.family;
  const bool mixtral = f == "mixtral";
  const int64_t H = s.hidden, I = s.intermediate, E = s.experts, Is = s.shared_intermediate;

  MoEModules m;
  for (size_t b = 0; b < s.layers.size(); ++b) {
    const std::string P = MoEBlockPath(f, s.layers[b]);
    m.blocks.push_back(P);
    const uint64_t block_seed = SplitMix(seed ^ (0x4d6f45ull << 20) ^ (b + 1));
    for (int64_t e = 0; e < E; ++e)
      AddMlp(absl::StrCat(P, ".experts.", e), mixtral, H, I, m.linears);
    if (Is > 0) {
      AddMlp(P + (IsDeepseek(f) ? ".shared_experts" : ".shared_expert"), false, H, Is, m.linears);
    }
    // Router gate [E, H]: logits of unit-scale inputs spread over a few units.
    m.dense.emplace(P + ".gate.weight", RandomDense(E, H, 2.0, dtype, SplitMix(block_seed + 1)));
    m.dense_modules.push_back(P + ".gate");
    if (f == "qwen2_moe" && Is > 0) {
      m.dense.emplace(P + ".shared_expert_gate.weight",
                      RandomDense(1, H, 2.0, dtype, SplitMix(block_seed + 2)));
      m.dense_modules.push_back(P + ".shared_expert_gate");
    }
    if (router.has_correction_bias) {
      // Trained biases are small next to sigmoid scores in (0, 1): enough to
      // change some choices, which is what the tests need to see.
      NormalRng rng(SplitMix(block_seed + 3));
      Tensor bias = Tensor::Zeros(DType::kF32, {E});
      for (int64_t e = 0; e < E; ++e) bias.as<float>()[e] = static_cast<float>(0.1 * rng.Normal());
      m.dense.emplace(P + ".gate.e_score_correction_bias", std::move(bias));
    }
  }

  json& c = m.config;
  c["model_type"] = std::string(f);
  c["architectures"] = json::array({Architecture(f)});
  c["hidden_size"] = H;
  c["num_hidden_layers"] = s.layers.back() + 1;
  c["num_experts_per_tok"] = s.top_k;
  if (mixtral) {
    c["num_local_experts"] = E;
    c["intermediate_size"] = I;
  } else if (IsQwen(f)) {
    c["num_experts"] = E;
    c["moe_intermediate_size"] = I;
    c["norm_topk_prob"] = router.norm_topk_prob;
    c["decoder_sparse_step"] = 1;
    c["mlp_only_layers"] = json::array();
    // Width of the dense MLPs a full model would have; none is written.
    c["intermediate_size"] = Is > 0 ? Is : 4 * I;
    if (f == "qwen2_moe") c["shared_expert_intermediate_size"] = Is;
  } else {
    c["n_routed_experts"] = E;
    c["n_shared_experts"] = Is > 0 ? json(Is / I) : json(nullptr);
    c["moe_intermediate_size"] = I;
    c["intermediate_size"] = Is > 0 ? Is : 4 * I;
    c["first_k_dense_replace"] = s.layers.front();
    c["moe_layer_freq"] = 1;
    c["scoring_func"] = router.scoring == RouterScoring::kSigmoid ? "sigmoid" : "softmax";
    c["topk_method"] = topk_method;
    c["n_group"] = router.n_group;
    c["topk_group"] = router.topk_group;
    c["norm_topk_prob"] = router.norm_topk_prob;
    c["routed_scaling_factor"] =
        s.routed_scaling_factor.value_or(router.scoring == RouterScoring::kSigmoid ? 2.5 : 1.0);
  }
  return m;
}

}  // namespace qlayer
