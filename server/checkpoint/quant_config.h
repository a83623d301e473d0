// config.json's quantization_config -> the scheme of each module
// (FORMATS.md §2-§6): GPTQ (v1 / gptq_v2), AWQ, compressed-tensors
// (config_groups targets, ignore), AutoRound (packing_format, extra_config),
// modules_to_not_convert. Also the inverse, for qlayer-quantize.
#ifndef QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_
#define QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"

namespace qlayer {

class QuantConfig {
 public:
  // Parses config["quantization_config"] (absent = every module dense).
  // Unknown quant_method, or a scheme out of scope for every module, is
  // UNIMPLEMENTED naming the method and what is missing.
  static absl::StatusOr<QuantConfig> Parse(const nlohmann::json& config);

  // The scheme of module `name` ("model.layers.0.mlp.down_proj"), after
  // ignore lists and per-module overrides. `has_quantized_tensors` says
  // whether the checkpoint holds packed tensors for it (a module a config
  // leaves ambiguous is decided by what is stored). Rejections name the
  // layer, the format and the reason.
  absl::StatusOr<LayerScheme> SchemeFor(absl::string_view name, bool has_quantized_tensors) const;

  // quant_method as written ("gptq", "awq", "compressed-tensors", "auto-round", or "" if none).
  const std::string& quant_method() const { return quant_method_; }

 private:
  std::string quant_method_;
  nlohmann::json qc_;  // the quantization_config object
};

// The quantization_config a checkpoint in `format` with these parameters
// carries, as its upstream library writes it. `tool_format` is one of
// qlayer-quantize's --format values: awq, gptq, gptq_v2, compressed-tensors,
// auto-round-gptq, auto-round-awq.
absl::StatusOr<nlohmann::json> MakeQuantConfig(absl::string_view tool_format, int bits,
                                               int64_t group_size, bool sym, bool act_order);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_
