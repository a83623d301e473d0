#include "server/checkpoint/quant_config.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/json_fields.h"

namespace qlayer {
namespace {

using json = nlohmann::json;

enum class Method { kNone, kGptq, kAwq, kCompressedTensors, kAutoRound };

// A module-name pattern: an exact name / class name, or (with "re:") a regex
// matched the way Python's re.match does (anchored at the start only).
struct Pattern {
  std::string text;  // as written, "re:" included
  bool is_regex = false;
  std::regex re;
};

absl::StatusOr<Pattern> MakePattern(const std::string& text, bool always_regex,
                                    absl::string_view where) {
  Pattern p;
  p.text = text;
  std::string expr;
  if (always_regex) {
    p.is_regex = true;
    expr = text;
  } else if (absl::StartsWith(text, "re:")) {
    p.is_regex = true;
    expr = text.substr(3);
  }
  if (p.is_regex) {
    // std::regex reports a bad pattern only by throwing; convert it here.
    try {
      p.re = std::regex(expr, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": '", text, "' is not a valid regular expression (", e.what(), ")"));
    }
  }
  return p;
}

// Python's re.match(pattern, name): the match starts at 0, may end anywhere.
absl::StatusOr<bool> RegexMatches(const Pattern& p, absl::string_view name) {
  try {
    std::cmatch m;
    return std::regex_search(name.data(), name.data() + name.size(), m, p.re,
                             std::regex_constants::match_continuous);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("regular expression '", p.text, "' failed on '", name, "': ", e.what()));
  }
}

// Per-module weight parameters after overrides.
struct WeightParams {
  int64_t bits = 4;
  int64_t group_size = -1;
  bool sym = true;
  bool act_order = false;
  std::string data_type = "int";
};

// A compressed-tensors config group, parsed; scope checks wait for SchemeFor
// so that they can name the layer.
struct CtGroup {
  std::string name;
  std::vector<Pattern> targets;
  std::string format;  // "" = the config's top-level format
  bool has_weights = false;
  int64_t num_bits = 0;
  std::string type;      // "int", "float"
  std::string strategy;  // "group", "channel", "tensor", "block", ...
  int64_t group_size = -1;
  bool symmetric = true;
  bool act_order = false;
  bool dynamic = false;
  std::string activation_field;  // "input_activations" when one is set
};

struct GptqDynamicRule {
  bool skip = false;  // "-:" prefix
  Pattern pattern;
  json overrides;
};

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

}  // namespace

struct QuantConfig::Rules {
  Method method = Method::kNone;
  WeightParams base;
  // GPTQ
  std::string gptq_format = "gptq";
  std::vector<GptqDynamicRule> dynamic;
  // AWQ
  std::string awq_version = "gemm";
  std::vector<std::string> not_convert;
  // compressed-tensors (also AutoRound's llm_compressor export)
  std::string ct_format;
  std::vector<CtGroup> groups;
  std::vector<Pattern> ignore;
  std::string sparse_format;  // non-empty when a sparse compressor applies
  std::vector<Pattern> sparse_targets;
  std::vector<Pattern> sparse_ignore;
  // AutoRound
  std::string packing_format = "auto_round:auto_gptq";
  std::map<std::string, WeightParams> extra;  // per-module overrides, defaults filled in
  int64_t act_bits = 16;
  bool ar_ct_groups = false;  // llm_compressor export carrying config_groups
};

namespace {

using Rules = QuantConfig::Rules;

LayerScheme Dense() {
  LayerScheme s;
  s.format = CheckpointFormat::kDense;
  s.bits = 0;
  s.group_size = -1;
  s.sym = true;
  s.act_order = false;
  s.origin = "dense";
  return s;
}

absl::Status Unimplemented(absl::string_view name, absl::string_view label,
                           absl::string_view reason) {
  return absl::UnimplementedError(absl::StrCat("layer ", name, " (", label, "): ", reason));
}

// The config keeps `name` unquantized, yet quantized tensors are stored for it.
absl::Status Contradiction(absl::string_view name, absl::string_view label,
                           absl::string_view reason) {
  return absl::InvalidArgumentError(
      absl::StrCat("layer ", name, " (", label, "): the quantization_config keeps it unquantized (",
                   reason, ") but the checkpoint stores quantized tensors for it"));
}

// Common checks of a quantized scheme; `allow_tensor` admits group size 0
// (compressed-tensors' "tensor" strategy).
absl::StatusOr<LayerScheme> Quantized(absl::string_view name, absl::string_view label,
                                      CheckpointFormat format, const WeightParams& p,
                                      std::string origin, bool allow_tensor = false) {
  if (p.bits != 4 && p.bits != 8) {
    return Unimplemented(name, label,
                         absl::StrCat(p.bits,
                                      "-bit weights are not supported (qlayer serves 4 "
                                      "and 8 bits)"));
  }
  if (p.data_type != "int") {
    return Unimplemented(name, label,
                         absl::StrCat("data_type '", p.data_type,
                                      "' is not supported (qlayer serves integer weights)"));
  }
  if (!(p.group_size == -1 || p.group_size > 0 || (allow_tensor && p.group_size == 0))) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", name, " (", label, "): group_size ",
                                                   p.group_size, " is not -1 or positive"));
  }
  LayerScheme s;
  s.format = format;
  s.bits = static_cast<int>(p.bits);
  s.group_size = p.group_size;
  s.sym = p.sym;
  s.act_order = p.act_order;
  s.origin = std::move(origin);
  return s;
}

// ---- GPTQ ----

absl::Status ApplyGptqOverrides(const json& o, WeightParams& p, absl::string_view where) {
  QLAYER_ASSIGN_OR_RETURN(p.bits, OptInt(o, "bits", p.bits, where));
  QLAYER_ASSIGN_OR_RETURN(p.group_size, OptInt(o, "group_size", p.group_size, where));
  QLAYER_ASSIGN_OR_RETURN(p.act_order, OptBool(o, "desc_act", p.act_order, where));
  QLAYER_ASSIGN_OR_RETURN(p.sym, OptBool(o, "sym", p.sym, where));
  return absl::OkStatus();
}

absl::Status ParseGptq(const json& qc, Rules& r) {
  constexpr absl::string_view kWhere = "quantization_config (gptq)";
  if (FieldOrNull(qc, "bits") == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(kWhere, " has no \"bits\""));
  }
  r.base.group_size = 128;  // AutoGPTQ's default
  QLAYER_RETURN_IF_ERROR(ApplyGptqOverrides(qc, r.base, kWhere));
  QLAYER_ASSIGN_OR_RETURN(std::string fmt, OptString(qc, "checkpoint_format", "", kWhere));
  if (fmt.empty()) {
    // GPTQModel 2.x also spells it "format".
    QLAYER_ASSIGN_OR_RETURN(fmt, OptString(qc, "format", "gptq", kWhere));
  }
  r.gptq_format = Lower(fmt);
  if (const json* dyn = FieldOrNull(qc, "dynamic")) {
    if (!dyn->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(kWhere, ": \"dynamic\" is not an object"));
    }
    for (auto it = dyn->begin(); it != dyn->end(); ++it) {
      GptqDynamicRule rule;
      std::string key = it.key();
      if (absl::StartsWith(key, "-:")) {
        rule.skip = true;
        key = key.substr(2);
      } else if (absl::StartsWith(key, "+:")) {
        key = key.substr(2);
      }
      QLAYER_ASSIGN_OR_RETURN(
          rule.pattern, MakePattern(key, /*always_regex=*/true, absl::StrCat(kWhere, " dynamic")));
      rule.pattern.text = it.key();
      if (!it->is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(kWhere, ": dynamic rule '", it.key(), "' is not an object"));
      }
      WeightParams check = r.base;  // type-check the override now
      QLAYER_RETURN_IF_ERROR(
          ApplyGptqOverrides(*it, check, absl::StrCat(kWhere, " dynamic '", it.key(), "'")));
      rule.overrides = *it;
      r.dynamic.push_back(std::move(rule));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerScheme> GptqScheme(const Rules& r, absl::string_view name) {
  WeightParams p = r.base;
  // nlohmann::json keeps keys sorted, so the file's rule order is lost: a skip
  // rule wins over any positive one, and two positive rules that both match
  // must agree.
  const GptqDynamicRule* chosen = nullptr;
  for (const GptqDynamicRule& rule : r.dynamic) {
    QLAYER_ASSIGN_OR_RETURN(bool hit, RegexMatches(rule.pattern, name));
    if (!hit) continue;
    if (rule.skip)
      return Contradiction(name, "gptq", absl::StrCat("dynamic rule '", rule.pattern.text, "'"));
    if (chosen != nullptr && chosen->overrides != rule.overrides) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", name, " (gptq): dynamic rules '", chosen->pattern.text, "' and '",
                       rule.pattern.text, "' both match it with different settings"));
    }
    chosen = &rule;
  }
  if (chosen != nullptr) QLAYER_RETURN_IF_ERROR(ApplyGptqOverrides(chosen->overrides, p, "gptq"));
  if (r.gptq_format == "gptq") return Quantized(name, "gptq", CheckpointFormat::kGptq, p, "gptq");
  if (r.gptq_format == "gptq_v2") {
    return Quantized(name, "gptq_v2", CheckpointFormat::kGptqV2, p, "gptq_v2");
  }
  return Unimplemented(name, "gptq",
                       absl::StrCat("checkpoint_format '", r.gptq_format,
                                    "' is not supported (qlayer reads gptq and gptq_v2)"));
}

// ---- AWQ ----

absl::Status ParseAwq(const json& qc, Rules& r) {
  constexpr absl::string_view kWhere = "quantization_config (awq)";
  // transformers spells bits / group_size; AutoAWQ's quant_config.json
  // w_bit / q_group_size.
  QLAYER_ASSIGN_OR_RETURN(int64_t w_bit, OptInt(qc, "w_bit", -1, kWhere));
  QLAYER_ASSIGN_OR_RETURN(r.base.bits, OptInt(qc, "bits", w_bit, kWhere));
  if (r.base.bits < 0) return absl::InvalidArgumentError(absl::StrCat(kWhere, " has no \"bits\""));
  QLAYER_ASSIGN_OR_RETURN(int64_t q_group, OptInt(qc, "q_group_size", 128, kWhere));
  QLAYER_ASSIGN_OR_RETURN(r.base.group_size, OptInt(qc, "group_size", q_group, kWhere));
  QLAYER_ASSIGN_OR_RETURN(bool zero_point, OptBool(qc, "zero_point", true, kWhere));
  r.base.sym = !zero_point;
  QLAYER_ASSIGN_OR_RETURN(std::string version, OptString(qc, "version", "gemm", kWhere));
  r.awq_version = Lower(version);
  QLAYER_ASSIGN_OR_RETURN(r.not_convert, OptStringList(qc, "modules_to_not_convert", kWhere));
  return absl::OkStatus();
}

absl::StatusOr<LayerScheme> AwqScheme(const Rules& r, absl::string_view name,
                                      absl::string_view label, std::string origin,
                                      const WeightParams& p) {
  if (r.awq_version != "gemm") {
    static const char* const kKnown[] = {"gemv", "gemv_fast", "marlin", "ipex", "exllama"};
    const bool known =
        std::find(std::begin(kKnown), std::end(kKnown), r.awq_version) != std::end(kKnown);
    return Unimplemented(name, label,
                         absl::StrCat("AWQ version '", r.awq_version, "' ",
                                      known ? "is a different packing" : "is unknown",
                                      "; qlayer reads the 'gemm' layout only"));
  }
  if (p.bits != 4) {
    return Unimplemented(name, label,
                         absl::StrCat(p.bits,
                                      "-bit AWQ is not supported (the GEMM layout packs "
                                      "4-bit weights)"));
  }
  return Quantized(name, label, CheckpointFormat::kAwq, p, std::move(origin));
}

// ---- compressed-tensors ----

absl::StatusOr<std::vector<Pattern>> PatternList(const json& obj, absl::string_view key,
                                                 absl::string_view where) {
  QLAYER_ASSIGN_OR_RETURN(std::vector<std::string> texts, OptStringList(obj, key, where));
  std::vector<Pattern> out;
  for (const std::string& t : texts) {
    QLAYER_ASSIGN_OR_RETURN(Pattern p, MakePattern(t, /*always_regex=*/false, where));
    out.push_back(std::move(p));
  }
  return out;
}

absl::Status ParseCtWeights(const json& w, CtGroup& g, absl::string_view where) {
  if (!w.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": \"weights\" is not an object"));
  }
  g.has_weights = true;
  if (FieldOrNull(w, "num_bits") == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": weights have no \"num_bits\""));
  }
  QLAYER_ASSIGN_OR_RETURN(g.num_bits, OptInt(w, "num_bits", 0, where));
  QLAYER_ASSIGN_OR_RETURN(g.type, OptString(w, "type", "int", where));
  QLAYER_ASSIGN_OR_RETURN(g.group_size, OptInt(w, "group_size", -1, where));
  QLAYER_ASSIGN_OR_RETURN(g.strategy,
                          OptString(w, "strategy", g.group_size > 0 ? "group" : "tensor", where));
  QLAYER_ASSIGN_OR_RETURN(g.symmetric, OptBool(w, "symmetric", true, where));
  if (const json* a = FieldOrNull(w, "actorder")) {
    if (a->is_boolean()) {
      g.act_order = a->get<bool>();  // True is upstream's alias of "group"
    } else if (a->is_string()) {
      const std::string s = a->get<std::string>();
      if (s == "group") {
        g.act_order = true;
      } else if (s != "weight" && s != "static") {
        // "weight"/"static" reorder at quantization time and store no g_idx.
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown actorder '", s, "' (expected group, weight, static)"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": bad actorder ", a->dump()));
    }
  }
  if (const json* d = FieldOrNull(w, "dynamic")) {
    // true, or a string such as "local": either way not a stored weight scheme.
    g.dynamic = d->is_string() || (d->is_boolean() && d->get<bool>());
    if (!d->is_string() && !d->is_boolean()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": bad dynamic ", d->dump()));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseCt(const json& qc, Rules& r) {
  constexpr absl::string_view kWhere = "quantization_config (compressed-tensors)";
  QLAYER_ASSIGN_OR_RETURN(r.ct_format, OptString(qc, "format", "", kWhere));
  QLAYER_ASSIGN_OR_RETURN(r.ignore, PatternList(qc, "ignore", absl::StrCat(kWhere, " ignore")));
  if (const json* groups = FieldOrNull(qc, "config_groups")) {
    if (!groups->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(kWhere, ": config_groups is not an object"));
    }
    for (auto it = groups->begin(); it != groups->end(); ++it) {
      const std::string where = absl::StrCat(kWhere, " group '", it.key(), "'");
      if (!it->is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is not an object"));
      }
      CtGroup g;
      g.name = it.key();
      QLAYER_ASSIGN_OR_RETURN(g.targets, PatternList(*it, "targets", where));
      QLAYER_ASSIGN_OR_RETURN(g.format, OptString(*it, "format", "", where));
      if (const json* w = FieldOrNull(*it, "weights")) {
        QLAYER_RETURN_IF_ERROR(ParseCtWeights(*w, g, where));
      }
      for (const char* field : {"input_activations", "output_activations"}) {
        if (FieldOrNull(*it, field) != nullptr && g.activation_field.empty()) {
          g.activation_field = field;
        }
      }
      r.groups.push_back(std::move(g));
    }
  }
  if (const json* sp = FieldOrNull(qc, "sparsity_config")) {
    if (!sp->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(kWhere, ": sparsity_config is not an object"));
    }
    QLAYER_ASSIGN_OR_RETURN(std::string fmt, OptString(*sp, "format", "dense", kWhere));
    if (fmt != "dense") {
      r.sparse_format = fmt;
      QLAYER_ASSIGN_OR_RETURN(r.sparse_targets, PatternList(*sp, "targets", kWhere));
      QLAYER_ASSIGN_OR_RETURN(r.sparse_ignore, PatternList(*sp, "ignore", kWhere));
    }
  }
  return absl::OkStatus();
}

// How well `p` claims module `name`: 0 exact name, 1 regex, 2 class name
// ("Linear": every module qlayer lists is a linear), -1 not at all.
absl::StatusOr<int> MatchLevel(const Pattern& p, absl::string_view name) {
  if (p.is_regex) {
    QLAYER_ASSIGN_OR_RETURN(bool hit, RegexMatches(p, name));
    return hit ? 1 : -1;
  }
  if (p.text == name) return 0;
  if (p.text == "Linear") return 2;
  return -1;
}

absl::StatusOr<const Pattern*> FirstMatch(const std::vector<Pattern>& list,
                                          absl::string_view name) {
  for (const Pattern& p : list) {
    QLAYER_ASSIGN_OR_RETURN(int level, MatchLevel(p, name));
    if (level >= 0) return &p;
  }
  return nullptr;
}

absl::StatusOr<LayerScheme> CtScheme(const Rules& r, absl::string_view name,
                                     absl::string_view label, const std::string& origin) {
  QLAYER_ASSIGN_OR_RETURN(const Pattern* ignored, FirstMatch(r.ignore, name));
  if (ignored != nullptr) {
    return Contradiction(name, label, absl::StrCat("ignore '", ignored->text, "'"));
  }
  if (!r.sparse_format.empty()) {
    QLAYER_ASSIGN_OR_RETURN(const Pattern* st, FirstMatch(r.sparse_targets, name));
    QLAYER_ASSIGN_OR_RETURN(const Pattern* si, FirstMatch(r.sparse_ignore, name));
    if ((r.sparse_targets.empty() || st != nullptr) && si == nullptr) {
      return Unimplemented(name, label,
                           absl::StrCat("sparse format '", r.sparse_format, "' is not supported"));
    }
  }
  // Upstream prefers an exact name over a regex over a class name; two groups
  // that claim the module equally well leave it ambiguous.
  const CtGroup* best = nullptr;
  int best_level = 3;
  std::vector<std::string> tied;
  for (const CtGroup& g : r.groups) {
    int level = 3;
    for (const Pattern& t : g.targets) {
      QLAYER_ASSIGN_OR_RETURN(int l, MatchLevel(t, name));
      if (l >= 0) level = std::min(level, l);
    }
    if (level == 3) continue;
    if (level < best_level) {
      best = &g;
      best_level = level;
      tied = {g.name};
    } else if (level == best_level) {
      tied.push_back(g.name);
    }
  }
  if (best == nullptr) {
    std::vector<std::string> names;
    for (const CtGroup& g : r.groups) names.push_back(g.name);
    return absl::InvalidArgumentError(absl::StrCat("layer ", name, " (", label,
                                                   "): stores quantized tensors but no "
                                                   "config_groups target matches it (groups: ",
                                                   absl::StrJoin(names, ", "), ")"));
  }
  if (tied.size() > 1) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", name, " (", label, "): config_groups ",
                                                   absl::StrJoin(tied, ", "),
                                                   " all match it equally well"));
  }
  const CtGroup& g = *best;
  if (!g.activation_field.empty()) {
    return Unimplemented(
        name, label,
        absl::StrCat("group '", g.name, "' quantizes activations (", g.activation_field,
                     " is set); qlayer serves weight-only schemes"));
  }
  if (!g.has_weights) {
    return Contradiction(name, label, absl::StrCat("group '", g.name, "' has no weights scheme"));
  }
  const std::string format = g.format.empty() ? r.ct_format : g.format;
  CheckpointFormat cf;
  if (format == "pack-quantized") {
    cf = CheckpointFormat::kCtPackQuantized;
  } else if (format == "naive-quantized" || format == "int-quantized") {
    cf = CheckpointFormat::kCtIntQuantized;
  } else {
    return Unimplemented(
        name, label,
        absl::StrCat("format '", format.empty() ? "(none)" : format,
                     "' is not supported (qlayer reads pack-quantized, naive-quantized and "
                     "int-quantized)"));
  }
  if (g.type != "int") {
    return Unimplemented(name, label,
                         absl::StrCat("weights of type '", g.type,
                                      "' (fp8/fp4) are not supported; qlayer serves int weights"));
  }
  if (g.dynamic) return Unimplemented(name, label, "dynamic weight quantization is not supported");
  WeightParams p;
  p.bits = g.num_bits;
  p.sym = g.symmetric;
  p.act_order = g.act_order;
  if (g.strategy == "group") {
    if (g.group_size <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", name, " (", label, "): group '",
                                                     g.name, "' has strategy group but group_size ",
                                                     g.group_size));
    }
    p.group_size = g.group_size;
  } else if (g.strategy == "channel") {
    p.group_size = -1;
  } else if (g.strategy == "tensor") {
    p.group_size = 0;
  } else {
    return Unimplemented(name, label,
                         absl::StrCat("strategy '", g.strategy,
                                      "' is not supported (qlayer reads group, channel, tensor)"));
  }
  return Quantized(name, label, cf, p, origin, /*allow_tensor=*/true);
}

// ---- AutoRound ----

absl::Status ParseArParams(const json& o, WeightParams& p, absl::string_view where) {
  QLAYER_ASSIGN_OR_RETURN(p.bits, OptInt(o, "bits", p.bits, where));
  QLAYER_ASSIGN_OR_RETURN(p.group_size, OptInt(o, "group_size", p.group_size, where));
  QLAYER_ASSIGN_OR_RETURN(p.sym, OptBool(o, "sym", p.sym, where));
  QLAYER_ASSIGN_OR_RETURN(p.data_type, OptString(o, "data_type", p.data_type, where));
  return absl::OkStatus();
}

absl::Status ParseAutoRound(const json& qc, Rules& r) {
  constexpr absl::string_view kWhere = "quantization_config (auto-round)";
  if (FieldOrNull(qc, "bits") == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(kWhere, " has no \"bits\""));
  }
  r.base.group_size = 128;
  QLAYER_RETURN_IF_ERROR(ParseArParams(qc, r.base, kWhere));
  QLAYER_ASSIGN_OR_RETURN(r.packing_format,
                          OptString(qc, "packing_format", "auto_round:auto_gptq", kWhere));
  QLAYER_ASSIGN_OR_RETURN(r.act_bits, OptInt(qc, "act_bits", 16, kWhere));
  if (const json* extra = FieldOrNull(qc, "extra_config")) {
    if (!extra->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(kWhere, ": extra_config is not an object"));
    }
    for (auto it = extra->begin(); it != extra->end(); ++it) {
      const std::string where = absl::StrCat(kWhere, " extra_config '", it.key(), "'");
      if (!it->is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is not an object"));
      }
      WeightParams p = r.base;
      QLAYER_RETURN_IF_ERROR(ParseArParams(*it, p, where));
      r.extra.emplace(it.key(), p);
    }
  }
  if (r.packing_format == "auto_round:llm_compressor" && FieldOrNull(qc, "config_groups")) {
    r.ar_ct_groups = true;
    QLAYER_RETURN_IF_ERROR(ParseCt(qc, r));
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerScheme> AutoRoundScheme(const Rules& r, absl::string_view name) {
  constexpr absl::string_view kLabel = "auto-round";
  if (r.act_bits < 16) {
    return Unimplemented(name, kLabel,
                         absl::StrCat("act_bits ", r.act_bits,
                                      " quantizes activations; qlayer serves weight-only schemes"));
  }
  WeightParams p = r.base;
  auto it = r.extra.find(std::string(name));
  if (it != r.extra.end()) {
    p = it->second;
    if (p.bits >= 16) {
      return Contradiction(name, kLabel, absl::StrCat("extra_config bits ", p.bits));
    }
  }
  const std::string& pf = r.packing_format;
  const std::string origin =
      absl::StrCat("auto-round:", absl::StartsWith(pf, "auto_round:") ? pf.substr(11) : pf);
  if (pf == "auto_round:auto_gptq" || pf == "auto_round:gptq" || pf == "auto_round") {
    return Quantized(name, kLabel, CheckpointFormat::kGptq, p, origin);
  }
  if (pf == "auto_round:auto_awq") return AwqScheme(r, name, kLabel, origin, p);
  if (pf == "auto_round:llm_compressor") {
    // The export normally carries compressed-tensors' own config_groups;
    // without them the AutoRound fields describe pack-quantized tensors.
    if (r.ar_ct_groups) return CtScheme(r, name, kLabel, origin);
    return Quantized(name, kLabel, CheckpointFormat::kCtPackQuantized, p, origin);
  }
  return Unimplemented(name, kLabel,
                       absl::StrCat("packing_format '", pf,
                                    "' is not supported (qlayer reads auto_round:auto_gptq, "
                                    "auto_round:gptq, auto_round, auto_round:auto_awq, "
                                    "auto_round:llm_compressor)"));
}

}  // namespace

absl::StatusOr<QuantConfig> QuantConfig::Parse(const nlohmann::json& config) {
  QuantConfig out;
  auto rules = std::make_shared<Rules>();
  if (!config.is_null() && !config.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  const json* qc = FieldOrNull(config, "quantization_config");
  if (qc == nullptr) {
    out.rules_ = std::move(rules);
    return out;
  }
  if (!qc->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantization_config is not an object: ", qc->dump()));
  }
  out.qc_ = *qc;
  QLAYER_ASSIGN_OR_RETURN(std::string method,
                          OptString(*qc, "quant_method", "", "quantization_config"));
  if (method.empty()) {
    return absl::InvalidArgumentError("quantization_config has no \"quant_method\"");
  }
  out.quant_method_ = Lower(method);
  const std::string& m = out.quant_method_;
  if (m == "gptq") {
    rules->method = Method::kGptq;
    QLAYER_RETURN_IF_ERROR(ParseGptq(*qc, *rules));
  } else if (m == "awq") {
    rules->method = Method::kAwq;
    QLAYER_RETURN_IF_ERROR(ParseAwq(*qc, *rules));
  } else if (m == "compressed-tensors") {
    rules->method = Method::kCompressedTensors;
    QLAYER_RETURN_IF_ERROR(ParseCt(*qc, *rules));
  } else if (m == "auto-round" || m == "intel/auto-round") {
    rules->method = Method::kAutoRound;
    QLAYER_RETURN_IF_ERROR(ParseAutoRound(*qc, *rules));
  } else {
    return absl::UnimplementedError(
        absl::StrCat("quant_method '", method,
                     "' is not supported (qlayer reads gptq, awq, compressed-tensors and "
                     "auto-round checkpoints)"));
  }
  out.rules_ = std::move(rules);
  return out;
}

absl::StatusOr<LayerScheme> QuantConfig::SchemeFor(absl::string_view name,
                                                   bool has_quantized_tensors) const {
  // Whatever the config says, a module stored as a plain float P.weight is
  // served dense: quantizers skip lm_head, routers and small layers that way.
  if (!has_quantized_tensors) return Dense();
  const Method method = rules_ ? rules_->method : Method::kNone;
  switch (method) {
    case Method::kNone:
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", name,
                       " stores quantized tensors but the checkpoint has no quantization_config"));
    case Method::kGptq:
      return GptqScheme(*rules_, name);
    case Method::kAwq: {
      for (const std::string& s : rules_->not_convert) {
        if (absl::StrContains(name, s)) {
          return Contradiction(name, "awq", absl::StrCat("modules_to_not_convert '", s, "'"));
        }
      }
      return AwqScheme(*rules_, name, "awq", "awq", rules_->base);
    }
    case Method::kCompressedTensors:
      return CtScheme(*rules_, name, "compressed-tensors", "compressed-tensors");
    case Method::kAutoRound:
      return AutoRoundScheme(*rules_, name);
  }
  return absl::InternalError("unhandled quant method");
}

}  // namespace qlayer
