// A checkpoint directory -> its named linear layers, selectable by glob.
// A module is a linear layer when it stores P.qweight (GPTQ/AWQ),
// P.weight_packed (compressed-tensors) or a 2-D P.weight. A 2-D P.weight of a
// non-float type (int8 of compressed-tensors' int-quantized, fp8) counts as
// quantized; a float one is dense, unless the module's last name component
// contains "embed" (or is wte / wpe): embedding tables are not linears.
// lm_head and MoE routers are listed (dense unless stored quantized); 1-D
// tensors (norms, biases) and 3-D stacked experts are not.
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
// character. Several globs separated by ',' match if any does (spaces around
// them are ignored). An empty glob matches every name.
bool GlobMatch(absl::string_view glob, absl::string_view name);

// Lists the linear layers of `ckpt` whose names match `glob` (empty = all),
// sorted by name, each with its resolved scheme. Only the selected layers'
// schemes are resolved, so an out-of-scope layer fails the listing only when
// the glob selects it (the error names it).
absl::StatusOr<std::vector<LinearLayerEntry>> ListLinearLayers(const Checkpoint& ckpt,
                                                               const QuantConfig& config,
                                                               absl::string_view glob = "");

// Decodes one listed layer to the canonical weight (errors name the layer).
absl::StatusOr<QuantizedLinear> LoadLinearLayer(const Checkpoint& ckpt,
                                                const LinearLayerEntry& entry);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_LAYER_CATALOG_H_
