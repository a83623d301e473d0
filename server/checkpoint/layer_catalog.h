// A checkpoint directory -> its named linear layers, selectable by glob.
// A module is a linear layer when it stores P.qweight (GPTQ/AWQ),
// P.weight_packed (compressed-tensors) or a 2-D P.weight.
#ifndef QLAYER_SERVER_CHECKPOINT_LAYER_CATALOG_H_
#define QLAYER_SERVER_CHECKPOINT_LAYER_CATALOG_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/quantized_linear.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer {

struct LinearLayerEntry {
  std::string name;  // module path, e.g. "model.layers.0.self_attn.q_proj"
  LayerScheme scheme;
};

// fnmatch-style glob: '*' any run of characters (dots included), '?' one
// character. Several globs separated by ',' match if any does.
bool GlobMatch(absl::string_view glob, absl::string_view name);

// Lists the linear layers of `ckpt` whose names match `glob` (empty = all),
// sorted by name, each with its resolved scheme.
absl::StatusOr<std::vector<LinearLayerEntry>> ListLinearLayers(const Checkpoint& ckpt,
                                                               const QuantConfig& config,
                                                               absl::string_view glob = "");

// Decodes one listed layer to the canonical weight (errors name the layer).
absl::StatusOr<QuantizedLinear> LoadLinearLayer(const Checkpoint& ckpt,
                                                const LinearLayerEntry& entry);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_LAYER_CATALOG_H_
