#include "server/tools/quantize_tool.h"

#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/quant_config.h"
#include "server/checkpoint/safetensors.h"
#include "server/tools/moe_checkpoint.h"
#include "server/tools/normal_rng.h"

namespace qlayer {
namespace {

using json = nlohmann::json;

const char* TorchDtype(DType t) {
  switch (t) {
    case DType::kF16:
      return "float16";
    case DType::kBF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

WeightType WTypeFor(int bits, bool sym) {
  if (bits == 4) return sym ? WeightType::kUint4b8 : WeightType::kUint4;
  return sym ? WeightType::kUint8b128 : WeightType::kUint8;
}

bool IsFloat(DType t) {
  return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32 || t == DType::kF64;
}

// Random Linear.weight [N, K]: unit normals scaled per output row, so groups
// see different ranges (and scales differ across columns of the canonical).
std::vector<float> RandomWeight(int64_t N, int64_t K, uint64_t seed) {
  NormalRng rng(seed);
  std::vector<float> w(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n) {
    const double row_scale = 0.02 * (0.25 + 1.5 * rng.Uniform());
    for (int64_t k = 0; k < K; ++k) w[n * K + k] = static_cast<float>(row_scale * rng.Normal());
  }
  return w;
}

Tensor ToDType(const float* v, const Shape& shape, DType dtype) {
  Tensor t = Tensor::Zeros(dtype, shape);
  const int64_t n = NumElements(shape);
  for (int64_t i = 0; i < n; ++i) StoreFromDouble(t.data(), dtype, i, v[i]);
  return t;
}

// One module to write: its dense source weight and optional bias.
struct Job {
  std::string name;
  int64_t N = 0, K = 0;
  // Index of the job whose act-order permutation this one reuses (itself
  // unless it reads the same input as an earlier job).
  size_t perm_job = 0;
  std::vector<float> weight;  // [N, K]
  Tensor bias;                // empty = none
};

absl::StatusOr<QuantizedLinear> Canonical(const QuantizeToolOptions& o, const Job& job,
                                          uint64_t layer_seed) {
  QuantizedLinear w;
  if (o.format == "dense") {
    w.K = job.K;
    w.N = job.N;
    w.wtype = WeightType::kDense;
    w.dense = ToDType(job.weight.data(), {job.N, job.K}, o.scale_dtype);
  } else {
    QuantizeOptions q;
    q.wtype = WTypeFor(o.bits, o.sym);
    q.group_size = o.group_size;
    q.scale_dtype = o.scale_dtype;
    q.act_order = o.act_order;
    q.seed = layer_seed;
    QLAYER_ASSIGN_OR_RETURN(w, QuantizeRtn(job.weight.data(), job.N, job.K, q));
  }
  if (!job.bias.empty()) w.bias = job.bias.Clone();
  QLAYER_RETURN_IF_ERROR(w.Validate());
  return w;
}

// Random-mode jobs, one per --shape, then one per MoE expert projection
// (never with a bias: no family's experts have one).
std::vector<Job> RandomJobs(const QuantizeToolOptions& o, const std::vector<MoELinear>& moe) {
  std::vector<LayerShapeSpec> all = o.shapes;
  for (const MoELinear& l : moe) all.push_back({l.name, l.N, l.K});
  std::vector<Job> jobs;
  std::map<int64_t, size_t> first_of_input;  // MoELinear::shared_input -> job
  for (size_t i = 0; i < all.size(); ++i) {
    const LayerShapeSpec& s = all[i];
    Job job;
    job.name = s.name;
    job.perm_job = i;
    if (i >= o.shapes.size()) {
      const int64_t input = moe[i - o.shapes.size()].shared_input;
      if (input >= 0) job.perm_job = first_of_input.emplace(input, i).first->second;
    }
    job.N = s.N;
    job.K = s.K;
    job.weight = RandomWeight(s.N, s.K, SplitMix(o.seed ^ (2 * i + 1)));
    if (o.bias && i < o.shapes.size()) {
      NormalRng rng(SplitMix(o.seed ^ (2 * i + 2)));
      std::vector<float> b(static_cast<size_t>(s.N));
      for (float& x : b) x = static_cast<float>(0.1 * rng.Normal());
      job.bias = ToDType(b.data(), {s.N}, o.scale_dtype);
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

// --from: the modules to quantize, the modules left dense, and every other
// tensor copied through unchanged.
absl::Status FromFileJobs(const QuantizeToolOptions& o, std::vector<Job>& jobs,
                          std::vector<std::string>& dense_modules, NamedTensors& passthrough) {
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> src, SafetensorsFile::Open(o.from));
  std::set<std::string> consumed;
  for (const std::string& t : src->TensorNames()) {
    absl::string_view module = t;
    if (!absl::ConsumeSuffix(&module, ".weight")) continue;
    const ConstTensorView* v = src->Find(t);
    if (v->shape.size() != 2 || !IsFloat(v->dtype)) continue;
    const std::string name(module);
    const size_t dot = name.rfind('.');
    const std::string last = dot == std::string::npos ? name : name.substr(dot + 1);
    if (absl::StrContains(last, "embed") || last == "wte" || last == "wpe") continue;
    const bool selected = GlobMatch(o.layers_glob, name) &&
                          (o.keep_dense_glob.empty() || !GlobMatch(o.keep_dense_glob, name));
    if (!selected || v->dim(0) <= 0 || v->dim(1) <= 0) {
      dense_modules.push_back(name);
      continue;
    }
    Job job;
    job.name = name;
    job.perm_job = jobs.size();
    job.N = v->dim(0);
    job.K = v->dim(1);
    job.weight.resize(static_cast<size_t>(job.N * job.K));
    for (int64_t i = 0; i < job.N * job.K; ++i) {
      job.weight[i] = static_cast<float>(LoadAsDouble(v->data, v->dtype, i));
    }
    consumed.insert(t);
    const std::string bias_name = name + ".bias";
    if (const ConstTensorView* b = src->Find(bias_name)) {
      if (b->shape.size() == 1 && b->dim(0) == job.N && IsFloatActivation(b->dtype)) {
        job.bias = Tensor::CopyOf(*b);
        consumed.insert(bias_name);
      }
    }
    jobs.push_back(std::move(job));
  }
  if (jobs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        o.from, " has no 2-D float .weight tensor selected by --layers / --keep-dense"));
  }
  for (const std::string& t : src->TensorNames()) {
    if (!consumed.count(t)) passthrough.emplace(t, Tensor::CopyOf(*src->Find(t)));
  }
  return absl::OkStatus();
}

// Names the modules kept dense in the config the way each upstream loader
// expects, so vLLM / transformers do not look for packed tensors there.
void MarkDense(const QuantizeToolOptions& o, const std::vector<std::string>& dense_modules,
               const std::vector<Job>& jobs, json& qc) {
  if (qc.is_null() || dense_modules.empty()) return;
  if (absl::StartsWith(o.format, "compressed-tensors")) {
    for (const std::string& m : dense_modules) {
      if (m != "lm_head") qc["ignore"].push_back(m);
    }
  } else if (o.format == "awq") {
    // AWQ matches by substring: skip a name that would also catch a quantized
    // module ("mlp.gate" inside "mlp.gate_proj"); storage keeps it dense.
    json list = json::array();
    for (const std::string& m : dense_modules) {
      bool clash = false;
      for (const Job& j : jobs) clash |= absl::StrContains(j.name, m);
      if (!clash) list.push_back(m);
    }
    if (!list.empty()) qc["modules_to_not_convert"] = std::move(list);
  } else if (absl::StartsWith(o.format, "auto-round")) {
    for (const std::string& m : dense_modules) {
      qc["extra_config"][m] = {{"bits", 16}, {"data_type", "float"}};
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<LayerShapeSpec>> ParseLayerShapes(absl::string_view text) {
  std::vector<LayerShapeSpec> out;
  for (absl::string_view item : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    item = absl::StripAsciiWhitespace(item);
    const size_t eq = item.rfind('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--shape '", item, "' is not NAME=NxK (e.g. model.layers.0.mlp.up_proj=4096x1024)"));
    }
    LayerShapeSpec s;
    s.name = std::string(item.substr(0, eq));
    std::vector<absl::string_view> dims = absl::StrSplit(item.substr(eq + 1), 'x');
    if (dims.size() != 2 || !absl::SimpleAtoi(dims[0], &s.N) || !absl::SimpleAtoi(dims[1], &s.K) ||
        s.N <= 0 || s.K <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--shape '", item, "': '", item.substr(eq + 1),
                                                     "' is not NxK with positive N and K"));
    }
    if (s.N > (int64_t{1} << 20) || s.K > (int64_t{1} << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shape '", item, "': dimensions above 2^20 are not supported"));
    }
    out.push_back(std::move(s));
  }
  return out;
}

absl::Status RunQuantizeTool(const QuantizeToolOptions& o, std::ostream& log) {
  if (o.out.empty()) return absl::InvalidArgumentError("--out DIR is required");
  const bool random_mode = !o.shapes.empty() || o.moe.has_value();
  if (random_mode == !o.from.empty()) {
    return absl::InvalidArgumentError(
        "give either --shape NAME=NxK ... and/or --moe FAMILY ..., or --from FILE");
  }
  if (o.scale_dtype != DType::kF16 && o.scale_dtype != DType::kBF16 &&
      o.scale_dtype != DType::kF32) {
    return absl::InvalidArgumentError("--scale-dtype must be f16, bf16 or f32");
  }
  MoEModules moe;
  if (o.moe.has_value()) {
    QLAYER_ASSIGN_OR_RETURN(moe, BuildMoEModules(*o.moe, o.scale_dtype, o.seed));
  }
  std::set<std::string> seen;
  for (const LayerShapeSpec& s : o.shapes) {
    if (!seen.insert(s.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("--shape names ", s.name, " twice"));
    }
  }
  for (const MoELinear& l : moe.linears) {
    if (seen.count(l.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--shape names ", l.name, ", which the --moe block stores"));
    }
  }
  QLAYER_ASSIGN_OR_RETURN(json qc,
                          MakeQuantConfig(o.format, o.bits, o.group_size, o.sym, o.act_order));

  std::vector<Job> jobs;
  std::vector<std::string> dense_modules;
  NamedTensors tensors;
  if (o.from.empty()) {
    jobs = RandomJobs(o, moe.linears);
    dense_modules = moe.dense_modules;
    for (auto& [name, t] : moe.dense) tensors.emplace(name, std::move(t));
  } else {
    QLAYER_RETURN_IF_ERROR(FromFileJobs(o, jobs, dense_modules, tensors));
  }
  MarkDense(o, dense_modules, jobs, qc);

  json config = moe.config.is_null() ? json::object() : moe.config;
  config["torch_dtype"] = TorchDtype(o.scale_dtype);
  if (!qc.is_null()) config["quantization_config"] = qc;
  config["_qlayer_quantize"] = {{"format", o.format},
                                {"bits", o.bits},
                                {"group_size", o.group_size},
                                {"sym", o.sym},
                                {"act_order", o.act_order},
                                {"seed", o.seed},
                                {"source", o.from.empty() ? "random" : o.from}};
  if (o.moe.has_value()) {
    const MoEToolSpec& m = *o.moe;
    config["_qlayer_quantize"]["moe"] = {{"family", m.family},
                                         {"layers", m.layers},
                                         {"hidden", m.hidden},
                                         {"intermediate", m.intermediate},
                                         {"experts", m.experts},
                                         {"top_k", m.top_k},
                                         {"shared_intermediate", m.shared_intermediate}};
  }
  // Resolve each module's scheme through the loader's own reading of the
  // config just built: what is written is what Checkpoint readers will see.
  QLAYER_ASSIGN_OR_RETURN(QuantConfig reader, QuantConfig::Parse(config));

  log << "qlayer-quantize: format " << o.format << ", seed " << o.seed << "\n";
  NamedTensors dump;
  std::map<std::string, std::string> dump_meta;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Job& job = jobs[i];
    QLAYER_ASSIGN_OR_RETURN(
        LayerScheme scheme,
        reader.SchemeFor(job.name, /*has_quantized_tensors=*/o.format != "dense"));
    absl::StatusOr<QuantizedLinear> canonical =
        Canonical(o, job, SplitMix(o.seed + 977 * job.perm_job));
    if (!canonical.ok()) {
      return absl::Status(canonical.status().code(),
                          absl::StrCat("layer ", job.name, " [", job.N, " x ", job.K,
                                       "]: ", canonical.status().message()));
    }
    const QuantizedLinear& w = *canonical;
    QLAYER_RETURN_IF_ERROR(EncodeLinear(w, job.name, scheme, tensors));
    log << "  " << job.name << " [" << job.N << " x " << job.K << "] -> "
        << WeightTypeName(w.wtype);
    if (w.wtype != WeightType::kDense) {
      log << ", group " << w.group_size << (w.g_idx.empty() ? "" : ", g_idx");
    }
    log << (w.bias.empty() ? "" : ", bias") << " (" << scheme.origin << ")\n";
    if (!o.dump_canonical.empty()) {
      const std::pair<const char*, const Tensor*> parts[] = {
          {"qweight", &w.qweight}, {"scales", &w.scales}, {"zeros", &w.zeros},
          {"g_idx", &w.g_idx},     {"bias", &w.bias},     {"dense", &w.dense}};
      for (const auto& [role, t] : parts) {
        if (!t->empty()) dump.emplace(absl::StrCat(job.name, ".", role), t->Clone());
      }
      dump.emplace(absl::StrCat(job.name, ".original"),
                   ToDType(job.weight.data(), {job.N, job.K}, DType::kF32));
      json meta = {{"K", w.K},
                   {"N", w.N},
                   {"wtype", std::string(WeightTypeName(w.wtype))},
                   {"group_size", w.group_size},
                   {"format", std::string(CheckpointFormatName(scheme.format))},
                   {"origin", scheme.origin}};
      dump_meta[CanonicalDumpKey(job.name)] = meta.dump();
    }
  }
  for (const std::string& m : dense_modules) log << "  " << m << " kept dense\n";
  for (const std::string& b : moe.blocks) {
    log << "  MoE block " << b << " (" << o.moe->family << "): " << o.moe->experts
        << " experts, top-" << o.moe->top_k << ", H=" << o.moe->hidden
        << " I=" << o.moe->intermediate;
    if (o.moe->shared_intermediate > 0) log << ", shared I=" << o.moe->shared_intermediate;
    log << "\n";
  }

  QLAYER_RETURN_IF_ERROR(WriteCheckpoint(o.out, config, tensors, o.shard_bytes));
  if (!o.dump_canonical.empty()) {
    QLAYER_RETURN_IF_ERROR(WriteSafetensors(o.dump_canonical, dump, dump_meta));
  }
  int64_t bytes = 0;
  for (const auto& [name, t] : tensors) bytes += static_cast<int64_t>(t.nbytes());
  log << "wrote " << o.out << ": " << tensors.size() << " tensors, " << bytes << " bytes\n";
  return absl::OkStatus();
}

}  // namespace qlayer
