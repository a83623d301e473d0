// MakeQuantConfig: the quantization_config each upstream library writes into
// config.json, field for field (FORMATS.md §2-§5), so a qlayer-quantize
// checkpoint loads in vLLM / transformers as well as in qlayer.
#include "absl/strings/str_cat.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer {

absl::StatusOr<nlohmann::json> MakeQuantConfig(absl::string_view tool_format, int bits,
                                               int64_t group_size, bool sym, bool act_order) {
  using json = nlohmann::json;
  if (tool_format == "dense") return json();  // no quantization_config at all
  const std::string where = absl::StrCat("--format ", tool_format);
  if (bits != 4 && bits != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": bits ", bits, " is not supported (4 or 8)"));
  }
  if (group_size != -1 && group_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": group size ", group_size, " must be -1 (per channel) or positive"));
  }

  if (tool_format == "gptq" || tool_format == "gptq_v2") {
    // AutoGPTQ / optimum's GPTQConfig fields; GPTQModel adds checkpoint_format
    // ("gptq_v2" stores true zero points) and meta.
    json qc = {{"quant_method", "gptq"},
               {"bits", bits},
               {"group_size", group_size},
               {"desc_act", act_order},
               {"sym", sym},
               {"static_groups", false},
               {"true_sequential", true},
               {"damp_percent", 0.01},
               {"lm_head", false},
               {"pack_dtype", "int32"},
               {"checkpoint_format", std::string(tool_format)},
               {"meta", {{"quantizer", json::array({"qlayer-quantize"})}}}};
    return qc;
  }
  if (tool_format == "awq") {
    if (bits != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": AWQ's GEMM layout packs 4-bit weights only, not ", bits));
    }
    if (act_order) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": AWQ has no act-order"));
    }
    // transformers' AwqConfig.to_dict() as AutoAWQ exports it.
    json qc = {{"quant_method", "awq"}, {"bits", bits},      {"group_size", group_size},
               {"zero_point", !sym},    {"version", "gemm"}, {"modules_to_not_convert", nullptr}};
    return qc;
  }
  if (tool_format == "compressed-tensors" || tool_format == "compressed-tensors-int") {
    // llm-compressor's W4A16 / W8A16 presets: one group targeting Linear,
    // lm_head ignored, weight-only. "compressed-tensors" packs (the format
    // llm-compressor infers for weight-only int schemes); "-int" is the same
    // scheme saved with quantization_format="int-quantized": int8 P.weight
    // [N, K] holding the signed values, no weight_shape (IntQuantization-
    // Compressor, an alias of naive-quantized).
    const char* format = tool_format == "compressed-tensors" ? "pack-quantized" : "int-quantized";
    json weights = {{"num_bits", bits},
                    {"type", "int"},
                    {"symmetric", sym},
                    {"strategy", group_size == -1 ? "channel" : "group"},
                    {"group_size", group_size == -1 ? json(nullptr) : json(group_size)},
                    {"actorder", act_order ? json("group") : json(nullptr)},
                    {"dynamic", false},
                    {"observer", "minmax"},
                    {"observer_kwargs", json::object()},
                    {"block_structure", nullptr}};
    json group = {{"targets", json::array({"Linear"})},
                  {"weights", std::move(weights)},
                  {"input_activations", nullptr},
                  {"output_activations", nullptr},
                  {"format", format}};
    json qc = {
        {"quant_method", "compressed-tensors"}, {"format", format},
        {"quantization_status", "compressed"},  {"config_groups", {{"group_0", std::move(group)}}},
        {"ignore", json::array({"lm_head"})},   {"kv_cache_scheme", nullptr},
        {"global_compression_ratio", nullptr},  {"sparsity_config", json::object()}};
    return qc;
  }
  if (tool_format == "auto-round-gptq" || tool_format == "auto-round-awq") {
    const bool awq = tool_format == "auto-round-awq";
    if (act_order) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": AutoRound has no act-order"));
    }
    if (awq && bits != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": the AWQ packing holds 4-bit weights only, not ", bits));
    }
    // auto-round's export_to_autoround: iters 0 is its RTN mode.
    json qc = {{"quant_method", "auto-round"},
               {"bits", bits},
               {"group_size", group_size},
               {"sym", sym},
               {"data_type", "int"},
               {"act_bits", 16},
               {"iters", 0},
               {"packing_format", awq ? "auto_round:auto_awq" : "auto_round:auto_gptq"}};
    return qc;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format '", tool_format,
                   "' (expected awq, gptq, gptq_v2, compressed-tensors, compressed-tensors-int, "
                   "auto-round-gptq, auto-round-awq or dense)"));
}

}  // namespace qlayer
