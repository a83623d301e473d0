// qlayer-quantize's work, apart from flag parsing: builds dense weights
// (seeded random, or the 2-D .weight tensors of a dense safetensors file),
// quantizes them with QuantizeRtn, encodes each with EncodeLinear in the
// requested upstream format, and writes a checkpoint directory (config.json
// with the quantization_config MakeQuantConfig gives, model.safetensors or
// shards) that Checkpoint::Open and upstream loaders read.
#ifndef QLAYER_SERVER_TOOLS_QUANTIZE_TOOL_H_
#define QLAYER_SERVER_TOOLS_QUANTIZE_TOOL_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/dtype.h"
#include "server/tools/moe_checkpoint.h"

namespace qlayer {

// One --shape entry: module path and PyTorch Linear.weight shape [N, K].
struct LayerShapeSpec {
  std::string name;
  int64_t N = 0;  // out_features
  int64_t K = 0;  // in_features
};

// Parses "NAME=NxK" (several may be joined by ',').
absl::StatusOr<std::vector<LayerShapeSpec>> ParseLayerShapes(absl::string_view text);

struct QuantizeToolOptions {
  // awq|gptq|gptq_v2|compressed-tensors|compressed-tensors-int|auto-round-gptq|
  // auto-round-awq|dense
  std::string format;
  int bits = 4;
  int64_t group_size = 128;  // -1 = per channel
  bool sym = false;
  bool act_order = false;
  DType scale_dtype = DType::kF16;  // also the dense weights' and config's torch_dtype
  uint64_t seed = 0;
  std::vector<LayerShapeSpec> shapes;  // random weights for these modules
  std::optional<MoEToolSpec> moe;      // random MoE blocks (with or without shapes)
  std::string from;                    // or: a dense .safetensors file
  std::string layers_glob;             // with --from: modules to quantize ("" = all)
  std::string keep_dense_glob;         // with --from: modules left dense
  bool bias = false;                   // random mode: give every layer a random bias
  int64_t shard_bytes = 0;             // > 0: shard above this many bytes
  std::string out;                     // checkpoint directory
  std::string dump_canonical;          // testing: the encoder's inputs, as safetensors
};

// Metadata key of the canonical dump describing layer NAME (a JSON object
// with K, N, wtype, group_size, format, origin).
inline std::string CanonicalDumpKey(absl::string_view name) {
  return std::string("qlayer.layer.") + std::string(name);
}

// Runs the tool; progress (seed, layers, files) goes to `log`.
absl::Status RunQuantizeTool(const QuantizeToolOptions& options, std::ostream& log);

}  // namespace qlayer

#endif  // QLAYER_SERVER_TOOLS_QUANTIZE_TOOL_H_
