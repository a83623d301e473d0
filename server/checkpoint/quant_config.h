// config.json's quantization_config -> the scheme of each module
// (FORMATS.md §2-§6): GPTQ (v1 / gptq_v2), AWQ, compressed-tensors
// (config_groups targets, ignore), AutoRound (packing_format, extra_config),
// modules_to_not_convert. Also the inverse, for qlayer-quantize.
//
// Resolution of one module, for every method:
//   - A module that stores no quantized tensors (only P.weight in a float
//     type) is dense, whatever the config says: lm_head, routers and other
//     modules the quantizer skipped are stored that way.
//   - A module that stores quantized tensors gets the config's scheme for it.
//     If the config explicitly keeps it dense (ignore, modules_to_not_convert,
//     extra_config bits >= 16, a GPTQModel "-:" dynamic rule) or no
//     quantization_config exists, that contradiction is INVALID_ARGUMENT. Lists
//     that only say which blocks were quantized (modules_in_block_to_quantize,
//     block_name_to_quantize) are hints: what is stored decides.
//   - Schemes qlayer does not serve (2/3-bit, float types, activation
//     quantization, AWQ non-GEMM versions, CT block strategy, sparse or fp8
//     formats) are UNIMPLEMENTED naming the layer, the format and the reason.
//
// Regex targets: compressed-tensors "re:" targets / ignore entries and
// GPTQModel dynamic keys match as Python's re.match does upstream (anchored at
// the start of the module name, not at its end), so "re:.*self_attn" matches
// "model.layers.0.self_attn.q_proj" exactly as vLLM and llm-compressor read it.
#ifndef QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_
#define QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"

namespace qlayer {

class QuantConfig {
 public:
  // Parses config["quantization_config"] (absent or null = every module
  // dense). An unknown quant_method is UNIMPLEMENTED naming it; malformed
  // fields (wrong JSON types, bad regexes, unknown enum spellings) are
  // INVALID_ARGUMENT naming the field. Schemes out of scope are rejected
  // later, per layer, by SchemeFor.
  static absl::StatusOr<QuantConfig> Parse(const nlohmann::json& config);

  // The scheme of module `name` ("model.layers.0.mlp.down_proj"), after
  // ignore lists and per-module overrides. `has_quantized_tensors` says
  // whether the checkpoint holds packed tensors for it (see the file comment
  // for how storage and config combine). Rejections name the layer, the
  // format and the reason.
  absl::StatusOr<LayerScheme> SchemeFor(absl::string_view name, bool has_quantized_tensors) const;

  // quant_method as written, lower-cased ("gptq", "awq", "compressed-tensors",
  // "auto-round", or "" if none).
  const std::string& quant_method() const { return quant_method_; }

  struct Rules;  // parsed form of the config, defined in quant_config.cc

 private:
  std::string quant_method_;
  nlohmann::json qc_;                   // the quantization_config object
  std::shared_ptr<const Rules> rules_;  // shared: QuantConfig stays cheap to copy
};

// The quantization_config a checkpoint in `format` with these parameters
// carries, as its upstream library writes it into config.json. `tool_format`
// is one of qlayer-quantize's --format values: awq, gptq, gptq_v2,
// compressed-tensors (pack-quantized), compressed-tensors-int (int-quantized),
// auto-round-gptq, auto-round-awq, or dense (returns a
// null json: no quantization_config). Combinations the format cannot express
// (AWQ with 8 bits or act-order, AutoRound with act-order, bits other than 4
// and 8) are INVALID_ARGUMENT.
absl::StatusOr<nlohmann::json> MakeQuantConfig(absl::string_view tool_format, int bits,
                                               int64_t group_size, bool sym, bool act_order);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_QUANT_CONFIG_H_
