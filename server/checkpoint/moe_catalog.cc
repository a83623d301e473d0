#include "server/checkpoint/moe_catalog.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/json_fields.h"
#include "server/checkpoint/layer_catalog.h"

namespace qlayer {
namespace {

constexpr absl::string_view kWhere = "config.json";

// Families whose router math qlayer implements, by config.json model_type.
const std::map<std::string, MoEFamily, std::less<>>& KnownModelTypes() {
  static const auto* m = new std::map<std::string, MoEFamily, std::less<>>{
      {"mixtral", MoEFamily::kMixtral},        {"qwen2_moe", MoEFamily::kQwen2Moe},
      {"qwen3_moe", MoEFamily::kQwen3Moe},     {"deepseek_v2", MoEFamily::kDeepseekV2},
      {"deepseek_v3", MoEFamily::kDeepseekV3},
  };
  return *m;
}

bool IsFloat(DType t) { return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32; }

const ConstTensorView* FindTensor(const TensorSource& src, absl::string_view module,
                                  absl::string_view suffix) {
  return src.Find(absl::StrCat(module, suffix));
}

// A linear module is stored when any of its weight tensors is.
bool ModuleExists(const TensorSource& src, absl::string_view module) {
  return FindTensor(src, module, ".qweight") != nullptr ||
         FindTensor(src, module, ".weight_packed") != nullptr ||
         FindTensor(src, module, ".weight") != nullptr;
}

// Packed tensors, or an integer / fp8 P.weight (compressed-tensors int-quantized).
bool ModuleQuantized(const TensorSource& src, absl::string_view module) {
  if (FindTensor(src, module, ".qweight") != nullptr ||
      FindTensor(src, module, ".weight_packed") != nullptr) {
    return true;
  }
  const ConstTensorView* w = FindTensor(src, module, ".weight");
  return w != nullptr && !IsFloat(w->dtype);
}

absl::Status Missing(absl::string_view block, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("MoE block ", block, ": ", what));
}

MlpModules ExpertModules(absl::string_view block, int64_t e, bool mixtral_naming) {
  const std::string p = absl::StrCat(block, ".experts.", e, ".");
  if (mixtral_naming) return {p + "w1", p + "w3", p + "w2"};
  return {p + "gate_proj", p + "up_proj", p + "down_proj"};
}

MlpModules SharedModules(absl::string_view prefix) {
  return {absl::StrCat(prefix, ".gate_proj"), absl::StrCat(prefix, ".up_proj"),
          absl::StrCat(prefix, ".down_proj")};
}

absl::Status CheckMlp(const TensorSource& src, absl::string_view block, absl::string_view what,
                      const MlpModules& m) {
  for (const std::string& module : m) {
    if (!ModuleExists(src, module)) {
      return Missing(block, absl::StrCat(what, " has no tensors for ", module, " (expected ",
                                         module, ".qweight, .weight_packed or .weight)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RequiredInt(const nlohmann::json& cfg, absl::string_view key,
                                    absl::string_view block) {
  QLAYER_ASSIGN_OR_RETURN(int64_t v, OptInt(cfg, key, -1, kWhere));
  if (v < 0) return Missing(block, absl::StrCat("config.json has no \"", key, "\""));
  return v;
}

absl::StatusOr<double> OptNumber(const nlohmann::json& cfg, absl::string_view key, double def) {
  const nlohmann::json* v = FieldOrNull(cfg, key);
  if (v == nullptr) return def;
  if (!v->is_number()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhere, ": \"", key, "\" must be a number, got ", v->dump()));
  }
  return v->get<double>();
}

absl::StatusOr<MoEFamily> FamilyOf(const nlohmann::json& cfg, const TensorSource& src,
                                   absl::string_view block, bool mixtral_naming, bool has_bias) {
  QLAYER_ASSIGN_OR_RETURN(std::string model_type, OptString(cfg, "model_type", "", kWhere));
  if (!model_type.empty()) {
    auto it = KnownModelTypes().find(model_type);
    if (it == KnownModelTypes().end()) {
      return absl::UnimplementedError(absl::StrCat(
          "MoE block ", block, ": model_type \"", model_type,
          "\" is not a supported MoE family (mixtral, qwen2_moe, qwen3_moe, deepseek_v2, "
          "deepseek_v3); its router math may differ"));
    }
    return it->second;
  }
  // No model_type: infer from the naming and the expert-count key.
  if (mixtral_naming) return MoEFamily::kMixtral;
  if (FieldOrNull(cfg, "n_routed_experts") != nullptr) {
    QLAYER_ASSIGN_OR_RETURN(std::string scoring, OptString(cfg, "scoring_func", "", kWhere));
    return has_bias || scoring == "sigmoid" ? MoEFamily::kDeepseekV3 : MoEFamily::kDeepseekV2;
  }
  if (FieldOrNull(cfg, "num_experts") != nullptr) {
    return ModuleExists(src, absl::StrCat(block, ".shared_expert.gate_proj"))
               ? MoEFamily::kQwen2Moe
               : MoEFamily::kQwen3Moe;
  }
  return Missing(block,
                 "config.json has no model_type and none of num_local_experts, "
                 "num_experts, n_routed_experts: cannot tell the MoE family");
}

// The family's router: FORMATS.md §8 and the defaults of transformers'
// configuration classes for keys a config.json leaves out.
absl::StatusOr<RouterConfig> RouterFor(MoEFamily family, const nlohmann::json& cfg,
                                       absl::string_view block, bool has_bias) {
  RouterConfig r;
  absl::string_view experts_key =
      family == MoEFamily::kMixtral                                            ? "num_local_experts"
      : (family == MoEFamily::kDeepseekV2 || family == MoEFamily::kDeepseekV3) ? "n_routed_experts"
                                                                               : "num_experts";
  QLAYER_ASSIGN_OR_RETURN(r.num_experts, RequiredInt(cfg, experts_key, block));
  QLAYER_ASSIGN_OR_RETURN(int64_t k, RequiredInt(cfg, "num_experts_per_tok", block));
  r.top_k = static_cast<int>(k);
  switch (family) {
    case MoEFamily::kMixtral:
      r.norm_topk_prob = true;
      break;
    case MoEFamily::kQwen2Moe:
    case MoEFamily::kQwen3Moe: {
      QLAYER_ASSIGN_OR_RETURN(r.norm_topk_prob, OptBool(cfg, "norm_topk_prob", false, kWhere));
      break;
    }
    case MoEFamily::kDeepseekV2:
    case MoEFamily::kDeepseekV3: {
      const bool v3 = family == MoEFamily::kDeepseekV3;
      QLAYER_ASSIGN_OR_RETURN(std::string scoring,
                              OptString(cfg, "scoring_func", v3 ? "sigmoid" : "softmax", kWhere));
      if (scoring == "softmax") {
        r.scoring = RouterScoring::kSoftmax;
      } else if (scoring == "sigmoid") {
        r.scoring = RouterScoring::kSigmoid;
      } else {
        return absl::UnimplementedError(absl::StrCat("MoE block ", block, ": scoring_func \"",
                                                     scoring, "\" (supported: softmax, sigmoid)"));
      }
      QLAYER_ASSIGN_OR_RETURN(std::string method,
                              OptString(cfg, "topk_method", v3 ? "noaux_tc" : "greedy", kWhere));
      // "gready" is DeepseekV2Config's historical default spelling.
      if (method == "greedy" || method == "gready") {
        r.topk_method = TopkMethod::kGreedy;
      } else if (method == "group_limited_greedy") {
        r.topk_method = TopkMethod::kGroupLimitedGreedy;
      } else if (method == "noaux_tc") {
        r.topk_method = TopkMethod::kNoauxTc;
      } else {
        return absl::UnimplementedError(
            absl::StrCat("MoE block ", block, ": topk_method \"", method,
                         "\" (supported: greedy, group_limited_greedy, noaux_tc)"));
      }
      QLAYER_ASSIGN_OR_RETURN(r.n_group, OptInt(cfg, "n_group", 1, kWhere));
      QLAYER_ASSIGN_OR_RETURN(r.topk_group, OptInt(cfg, "topk_group", 1, kWhere));
      QLAYER_ASSIGN_OR_RETURN(r.norm_topk_prob, OptBool(cfg, "norm_topk_prob", v3, kWhere));
      QLAYER_ASSIGN_OR_RETURN(double scale,
                              OptNumber(cfg, "routed_scaling_factor", v3 ? 2.5 : 1.0));
      r.routed_scaling_factor = static_cast<float>(scale);
      r.norm_epsilon = 1e-20f;
      if (r.topk_method == TopkMethod::kNoauxTc && !has_bias) {
        return Missing(block, absl::StrCat("topk_method noaux_tc needs the tensor ", block,
                                           ".gate.e_score_correction_bias"));
      }
      break;
    }
  }
  r.has_correction_bias = has_bias;
  absl::Status s = r.Validate();
  if (!s.ok()) return Missing(block, s.message());
  return r;
}

absl::StatusOr<MoEBlockEntry> DetectBlock(const Checkpoint& ckpt, absl::string_view block,
                                          bool mixtral_naming) {
  const nlohmann::json& cfg = ckpt.config();
  MoEBlockEntry b;
  b.name = std::string(block);
  b.gate = absl::StrCat(block, ".gate");
  const std::string bias_name = absl::StrCat(block, ".gate.e_score_correction_bias");
  const bool has_bias = ckpt.Find(bias_name) != nullptr;
  if (has_bias) b.correction_bias = bias_name;
  QLAYER_ASSIGN_OR_RETURN(b.family, FamilyOf(cfg, ckpt, block, mixtral_naming, has_bias));
  QLAYER_ASSIGN_OR_RETURN(b.router, RouterFor(b.family, cfg, block, has_bias));
  const int64_t E = b.router.num_experts;

  const ConstTensorView* gate = ckpt.Find(b.gate + ".weight");
  if (gate != nullptr && IsFloat(gate->dtype)) {
    if (gate->shape.size() != 2 || gate->shape[0] != E) {
      return Missing(
          block, absl::StrCat("router ", b.gate, ".weight has shape ", ShapeToString(gate->shape),
                              ", expected [", E, ", hidden] for ", E, " experts"));
    }
    b.hidden = gate->shape[1];
  } else {
    QLAYER_ASSIGN_OR_RETURN(b.hidden, RequiredInt(cfg, "hidden_size", block));
  }

  for (int64_t e = 0; e < E; ++e) {
    b.experts.push_back(ExpertModules(block, e, mixtral_naming));
    QLAYER_RETURN_IF_ERROR(CheckMlp(ckpt, block, absl::StrCat("expert ", e), b.experts.back()));
  }
  const MlpModules extra = ExpertModules(block, E, mixtral_naming);
  if (ModuleExists(ckpt, extra[0])) {
    return Missing(block, absl::StrCat("the checkpoint stores ", extra[0],
                                       " but config.json says there are ", E, " experts"));
  }
  for (absl::string_view shared_name : {".shared_expert", ".shared_experts"}) {
    const MlpModules m = SharedModules(absl::StrCat(block, shared_name));
    if (!ModuleExists(ckpt, m[0])) continue;
    QLAYER_RETURN_IF_ERROR(CheckMlp(ckpt, block, "shared expert", m));
    b.shared = m;
    break;
  }
  const std::string shared_gate = absl::StrCat(block, ".shared_expert_gate");
  if (ModuleExists(ckpt, shared_gate)) {
    if (!b.shared.has_value()) {
      return Missing(block, absl::StrCat(shared_gate, " is stored but no shared expert is"));
    }
    b.shared_expert_gate = shared_gate;
  }

  for (const MlpModules& m : b.experts) b.members.insert(b.members.end(), m.begin(), m.end());
  if (b.shared.has_value()) b.members.insert(b.members.end(), b.shared->begin(), b.shared->end());
  b.members.push_back(b.gate);
  if (!b.shared_expert_gate.empty()) b.members.push_back(b.shared_expert_gate);
  std::sort(b.members.begin(), b.members.end());
  return b;
}

// Every MoE block of the checkpoint: a module P with a router P.gate whose
// experts P.experts.0.{w1 | gate_proj} are stored.
absl::StatusOr<std::vector<MoEBlockEntry>> DetectAll(const Checkpoint& ckpt) {
  std::set<std::string> blocks;
  for (const std::string& t : ckpt.TensorNames()) {
    absl::string_view p = t;
    if (!absl::ConsumeSuffix(&p, ".gate.weight") && !absl::ConsumeSuffix(&p, ".gate.qweight") &&
        !absl::ConsumeSuffix(&p, ".gate.weight_packed")) {
      continue;
    }
    blocks.emplace(p);
  }
  std::vector<MoEBlockEntry> out;
  for (const std::string& p : blocks) {
    const bool mixtral_naming = ModuleExists(ckpt, absl::StrCat(p, ".experts.0.w1"));
    if (!mixtral_naming && !ModuleExists(ckpt, absl::StrCat(p, ".experts.0.gate_proj"))) {
      continue;  // a gate that does not route experts
    }
    QLAYER_ASSIGN_OR_RETURN(MoEBlockEntry e, DetectBlock(ckpt, p, mixtral_naming));
    out.push_back(std::move(e));
  }
  return out;
}

// Decodes one linear module with its scheme; errors name block and module.
absl::StatusOr<QuantizedLinear> DecodeModule(const Checkpoint& ckpt, const QuantConfig& qc,
                                             absl::string_view block, absl::string_view module) {
  absl::StatusOr<LayerScheme> scheme = qc.SchemeFor(module, ModuleQuantized(ckpt, module));
  absl::StatusOr<QuantizedLinear> w = absl::UnknownError("not decoded");
  if (scheme.ok()) w = DecodeLinear(ckpt, module, *scheme);
  if (!scheme.ok() || !w.ok()) {
    const absl::Status s = scheme.ok() ? w.status() : scheme.status();
    return absl::Status(
        s.code(),
        absl::StrCat("MoE block ", block, ": ",
                     absl::StrContains(s.message(), module) ? "" : absl::StrCat(module, ": "),
                     s.message()));
  }
  return w;
}

absl::StatusOr<MoEExpert> LoadMlp(const Checkpoint& ckpt, const QuantConfig& qc,
                                  absl::string_view block, absl::string_view what,
                                  const MlpModules& m) {
  QLAYER_ASSIGN_OR_RETURN(QuantizedLinear gate, DecodeModule(ckpt, qc, block, m[0]));
  QLAYER_ASSIGN_OR_RETURN(QuantizedLinear up, DecodeModule(ckpt, qc, block, m[1]));
  QLAYER_ASSIGN_OR_RETURN(QuantizedLinear down, DecodeModule(ckpt, qc, block, m[2]));
  absl::StatusOr<QuantizedLinear> w13 = StackGateUp(gate, up);
  if (!w13.ok()) {
    return Missing(block,
                   absl::StrCat(what, " (", m[0], ", ", m[1], "): ", w13.status().message()));
  }
  return MoEExpert{*std::move(w13), std::move(down)};
}

// A router-like matrix [N, K] in its stored dtype, or dequantized to f32 when
// stored quantized.
absl::StatusOr<Tensor> LoadDenseMatrix(const Checkpoint& ckpt, const QuantConfig& qc,
                                       absl::string_view block, absl::string_view module) {
  const ConstTensorView* w = FindTensor(ckpt, module, ".weight");
  if (w != nullptr && IsFloat(w->dtype)) {
    if (w->shape.size() != 2) {
      return Missing(block, absl::StrCat(module, ".weight has shape ", ShapeToString(w->shape),
                                         ", expected 2-D"));
    }
    return Tensor::CopyOf(*w);
  }
  QLAYER_ASSIGN_OR_RETURN(QuantizedLinear q, DecodeModule(ckpt, qc, block, module));
  Tensor out = Tensor::Zeros(DType::kF32, {q.N, q.K});
  float* o = out.as<float>();
  for (int64_t n = 0; n < q.N; ++n) {
    for (int64_t k = 0; k < q.K; ++k) o[n * q.K + k] = static_cast<float>(q.Dequant(k, n));
  }
  return out;
}

}  // namespace

absl::string_view MoEFamilyName(MoEFamily f) {
  switch (f) {
    case MoEFamily::kMixtral:
      return "mixtral";
    case MoEFamily::kQwen2Moe:
      return "qwen2_moe";
    case MoEFamily::kQwen3Moe:
      return "qwen3_moe";
    case MoEFamily::kDeepseekV2:
      return "deepseek_v2";
    case MoEFamily::kDeepseekV3:
      return "deepseek_v3";
  }
  return "invalid";
}

absl::StatusOr<std::vector<MoEBlockEntry>> ListMoEBlocks(const Checkpoint& ckpt,
                                                         const QuantConfig& quant_config,
                                                         absl::string_view glob) {
  QLAYER_ASSIGN_OR_RETURN(std::vector<MoEBlockEntry> all, DetectAll(ckpt));
  std::vector<MoEBlockEntry> out;
  for (MoEBlockEntry& b : all) {
    if (!GlobMatch(glob, b.name)) continue;
    const std::string& first = b.experts[0][0];
    absl::StatusOr<LayerScheme> scheme =
        quant_config.SchemeFor(first, ModuleQuantized(ckpt, first));
    if (!scheme.ok()) {
      return absl::Status(scheme.status().code(),
                          absl::StrCat("MoE block ", b.name, ": ", scheme.status().message()));
    }
    b.scheme = *std::move(scheme);
    out.push_back(std::move(b));
  }
  return out;
}

absl::StatusOr<MoEBlock> LoadMoEBlock(const Checkpoint& ckpt, const QuantConfig& quant_config,
                                      const MoEBlockEntry& entry) {
  MoEBlock b;
  b.name = entry.name;
  b.family = std::string(MoEFamilyName(entry.family));
  b.router = entry.router;
  b.hidden = entry.hidden;
  b.experts.reserve(entry.experts.size());
  for (size_t e = 0; e < entry.experts.size(); ++e) {
    QLAYER_ASSIGN_OR_RETURN(MoEExpert x, LoadMlp(ckpt, quant_config, entry.name,
                                                 absl::StrCat("expert ", e), entry.experts[e]));
    b.experts.push_back(std::move(x));
  }
  b.intermediate = b.experts.empty() ? 0 : b.experts[0].intermediate();
  QLAYER_ASSIGN_OR_RETURN(b.gate, LoadDenseMatrix(ckpt, quant_config, entry.name, entry.gate));
  if (!entry.correction_bias.empty()) {
    const ConstTensorView* bias = ckpt.Find(entry.correction_bias);
    if (bias == nullptr)
      return Missing(entry.name, absl::StrCat("no tensor ", entry.correction_bias));
    if (!IsFloat(bias->dtype)) {
      return Missing(entry.name, absl::StrCat(entry.correction_bias, " has dtype ",
                                              DTypeName(bias->dtype), ", expected a float type"));
    }
    b.correction_bias = Tensor::CopyOf(*bias);
  }
  if (entry.shared.has_value()) {
    QLAYER_ASSIGN_OR_RETURN(
        MoEExpert x, LoadMlp(ckpt, quant_config, entry.name, "shared expert", *entry.shared));
    b.shared = std::move(x);
  }
  if (!entry.shared_expert_gate.empty()) {
    QLAYER_ASSIGN_OR_RETURN(b.shared_expert_gate, LoadDenseMatrix(ckpt, quant_config, entry.name,
                                                                  entry.shared_expert_gate));
  }
  QLAYER_RETURN_IF_ERROR(b.Validate());
  return b;
}

absl::StatusOr<std::set<std::string, std::less<>>> MoEMemberModules(const Checkpoint& ckpt) {
  QLAYER_ASSIGN_OR_RETURN(std::vector<MoEBlockEntry> all, DetectAll(ckpt));
  std::set<std::string, std::less<>> members;
  for (const MoEBlockEntry& b : all) members.insert(b.members.begin(), b.members.end());
  return members;
}

bool IsMoEMember(const std::set<std::string, std::less<>>& members, absl::string_view module) {
  return members.find(module) != members.end();
}

}  // namespace qlayer
