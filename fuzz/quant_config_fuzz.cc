// Fuzz target: config.json text -> QuantConfig::Parse -> SchemeFor. An input
// without a "quantization_config" key is taken as the quantization_config
// itself (so seeds can be either file). SchemeFor runs on a fixed set of
// module names plus every string and key found in the config (ignore lists,
// extra_config, dynamic rules name modules), with and without stored
// quantized tensors. Accepted schemes must be ones DecodeLinear understands.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/json_fields.h"
#include "server/checkpoint/quant_config.h"

namespace {

// Strings and keys of `j` (depth-first, bounded), as candidate module names.
void CollectNames(const nlohmann::json& j, std::vector<std::string>& out, int depth) {
  if (out.size() >= 48 || depth > 8) return;
  if (j.is_string()) {
    std::string s = j.get<std::string>();
    if (s.rfind("re:", 0) == 0) s = s.substr(3);
    out.push_back(s);
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end() && out.size() < 48; ++it) {
      out.push_back(it.key());
      CollectNames(*it, out, depth + 1);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) CollectNames(e, out, depth + 1);
  }
}

void CheckScheme(const qlayer::LayerScheme& s, const std::string& name) {
  using qlayer::CheckpointFormat;
  if (s.format == CheckpointFormat::kDense) return;
  if (s.bits != 4 && s.bits != 8)
    qlayer::fuzz::Fail("module " + name + ": scheme with bits " + std::to_string(s.bits));
  if (s.group_size < -1)
    qlayer::fuzz::Fail("module " + name + ": group_size " + std::to_string(s.group_size));
  if (s.origin.empty()) qlayer::fuzz::Fail("module " + name + ": scheme without origin");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // As Checkpoint::Open reads config.json (bounded nesting).
  auto parsed =
      qlayer::ParseJsonBounded(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  nlohmann::json j = *std::move(parsed);
  if (!j.is_object() || !j.contains("quantization_config")) {
    nlohmann::json wrapped = nlohmann::json::object();
    wrapped["quantization_config"] = std::move(j);
    j = std::move(wrapped);
  }
  auto qc = qlayer::QuantConfig::Parse(j);
  if (!qc.ok()) return 0;
  std::vector<std::string> names = {"model.layers.0.self_attn.q_proj",
                                    "model.layers.1.mlp.down_proj",
                                    "lm_head",
                                    "model.layers.3.block_sparse_moe.experts.5.w2",
                                    "model.layers.2.mlp.experts.1.gate_proj",
                                    "model.layers.2.mlp.gate",
                                    "model.layers.2.mlp.shared_expert.up_proj",
                                    ""};
  CollectNames(j, names, 0);
  for (const std::string& name : names) {
    for (bool stored : {true, false}) {
      auto s = qc->SchemeFor(name, stored);
      if (s.ok()) CheckScheme(*s, name);
    }
  }
  return 0;
}
