#include "server/checkpoint/layer_catalog.h"

#include <map>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// One glob alternative; iterative star matching with a single backtrack
// point, linear in practice and never recursive.
bool MatchOne(absl::string_view pat, absl::string_view name) {
  size_t p = 0, n = 0;
  size_t star = absl::string_view::npos, mark = 0;
  while (n < name.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = n;
    } else if (star != absl::string_view::npos) {
      p = star + 1;
      n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

bool IsFloat(DType t) {
  return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32 || t == DType::kF64;
}

// nn.Embedding tables are 2-D float ".weight" tensors too, but they are
// looked up, not multiplied: keep them out of the linear layers.
bool IsEmbedding(absl::string_view module) {
  const size_t dot = module.rfind('.');
  const absl::string_view last = dot == absl::string_view::npos ? module : module.substr(dot + 1);
  return absl::StrContains(last, "embed") || last == "wte" || last == "wpe";
}

struct ModuleInfo {
  bool quantized = false;  // packed or integer tensors stored
  bool linear = false;
};

}  // namespace

bool GlobMatch(absl::string_view glob, absl::string_view name) {
  if (glob.empty()) return true;
  for (absl::string_view alt : absl::StrSplit(glob, ',')) {
    alt = absl::StripAsciiWhitespace(alt);
    if (alt.empty()) continue;
    if (MatchOne(alt, name)) return true;
  }
  return false;
}

absl::StatusOr<std::vector<LinearLayerEntry>> ListLinearLayers(const Checkpoint& ckpt,
                                                               const QuantConfig& config,
                                                               absl::string_view glob) {
  std::map<std::string, ModuleInfo> modules;
  for (const std::string& t : ckpt.TensorNames()) {
    absl::string_view name = t;
    if (absl::ConsumeSuffix(&name, ".qweight") || absl::ConsumeSuffix(&name, ".weight_packed")) {
      ModuleInfo& m = modules[std::string(name)];
      m.quantized = m.linear = true;
    } else if (absl::ConsumeSuffix(&name, ".weight")) {
      const ConstTensorView* v = ckpt.Find(t);
      if (v == nullptr || v->shape.size() != 2) continue;  // norms, biases, convs
      if (IsFloat(v->dtype)) {
        if (IsEmbedding(name)) continue;
        modules[std::string(name)].linear = true;
      } else {
        // int8 (compressed-tensors naive/int-quantized) or fp8: quantized.
        ModuleInfo& m = modules[std::string(name)];
        m.quantized = m.linear = true;
      }
    }
  }
  std::vector<LinearLayerEntry> out;
  for (const auto& [name, info] : modules) {
    if (!info.linear || !GlobMatch(glob, name)) continue;
    LinearLayerEntry e;
    e.name = name;
    QLAYER_ASSIGN_OR_RETURN(e.scheme, config.SchemeFor(name, info.quantized));
    out.push_back(std::move(e));
  }
  return out;
}

absl::StatusOr<QuantizedLinear> LoadLinearLayer(const Checkpoint& ckpt,
                                                const LinearLayerEntry& entry) {
  absl::StatusOr<QuantizedLinear> w = DecodeLinear(ckpt, entry.name, entry.scheme);
  if (!w.ok() && !absl::StrContains(w.status().message(), entry.name)) {
    return absl::Status(
        w.status().code(),
        absl::StrCat("layer ", entry.name, " (", entry.scheme.origin, "): ", w.status().message()));
  }
  return w;
}

}  // namespace qlayer
