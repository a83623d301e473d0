// Checkpoint formats -> canonical QuantizedLinear, and back (FORMATS.md).
// Decoders read a module's tensors by name from a TensorSource (views into a
// checkpoint's mmap) and produce an owning, validated canonical weight.
// Encoders are the exact inverse: qlayer-quantize and the tests use them.
#ifndef QLAYER_KERNELS_FORMATS_H_
#define QLAYER_KERNELS_FORMATS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// How one module's tensors are laid out on disk.
enum class CheckpointFormat : uint8_t {
  kDense,            // P.weight [N, K] f16/bf16/f32 (+ P.bias)
  kGptq,             // GPTQ v1: qzeros store z - 1 (also AutoRound auto_gptq / auto_round)
  kGptqV2,           // gptq_v2: qzeros store the true z
  kAwq,              // AWQ GEMM layout (also AutoRound auto_awq)
  kCtPackQuantized,  // compressed-tensors pack-quantized
  kCtIntQuantized,   // compressed-tensors naive-/int-quantized: int8 P.weight [N, K]
};
absl::string_view CheckpointFormatName(CheckpointFormat f);

// A module's quantization scheme, resolved from config.json for that module
// (per-module overrides already applied).
struct LayerScheme {
  CheckpointFormat format = CheckpointFormat::kDense;
  int bits = 0;             // 4 or 8 for quantized formats
  int64_t group_size = -1;  // -1 = channel-wise; compressed-tensors "tensor" strategy: 0
  bool sym = true;          // symmetric (no zero points)
  bool act_order = false;   // GPTQ desc_act / CT actorder "group": g_idx stored
  // Where the scheme came from, for messages and DescribeLayer:
  // "gptq", "awq", "compressed-tensors", "auto-round:auto_gptq", "dense", ...
  std::string origin;
};

// Tensors of a checkpoint looked up by full name ("model.layers.0.mlp.up_proj.qweight").
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  // nullptr when absent.
  virtual const ConstTensorView* Find(absl::string_view name) const = 0;
};

// An in-memory TensorSource / encoder output: name -> owned tensor.
using NamedTensors = std::map<std::string, Tensor, std::less<>>;
class NamedTensorSource : public TensorSource {
 public:
  explicit NamedTensorSource(const NamedTensors& tensors);
  const ConstTensorView* Find(absl::string_view name) const override;

 private:
  std::map<std::string, ConstTensorView, std::less<>> views_;
};

// Decodes module `prefix` (e.g. "model.layers.0.self_attn.q_proj") stored in
// `scheme`'s format. Lossless. Errors name the layer, the format and what is
// wrong or missing (INVALID_ARGUMENT for malformed tensors, UNIMPLEMENTED for
// out-of-scope schemes such as 3-bit). A stored g_idx equal to k / G is
// checked and dropped; any other g_idx is kept, whatever act_order says.
absl::StatusOr<QuantizedLinear> DecodeLinear(const TensorSource& source, absl::string_view prefix,
                                             const LayerScheme& scheme);

// Writes `w` as module `prefix` in `scheme`'s format into `out` (names as the
// upstream packer writes them). Fails when the format cannot represent `w`
// (e.g. AWQ with 8 bits, GPTQ v1 with a zero point of 0).
absl::Status EncodeLinear(const QuantizedLinear& w, absl::string_view prefix,
                          const LayerScheme& scheme, NamedTensors& out);

// Round-to-nearest min-max quantization of a dense weight w_nk [N, K] (row n
// is output channel n, as PyTorch Linear.weight) into the canonical form.
// Asymmetric types get per-group zero points; with act_order a random
// permutation (from `seed`) assigns input rows to groups, as GPTQ desc_act
// does. scale_dtype: f16, bf16 or f32.
// Ranges follow GPTQ's Quantizer: symmetric s = 2·max|w| / (2^bits − 1) with
// the fixed zero; asymmetric widens [min, max] to include 0, s = (max − min) /
// (2^bits − 1), z = round(−min / s). Each scale is rounded up to scale_dtype
// before q = clamp(round(w / s) + z) is computed, so every |w − dequant| is
// at most half a step. The result carries a g_idx
// only when it is not the trivial k / G (so act_order with one group has none),
// the same rule DecodeLinear applies.
struct QuantizeOptions {
  WeightType wtype = WeightType::kUint4b8;
  // -1 = channel-wise; 0 = one scale (and zero) for the whole tensor, the
  // compressed-tensors "tensor" strategy (canonical group_size K, the value
  // repeated across columns).
  int64_t group_size = 128;
  DType scale_dtype = DType::kF16;
  bool act_order = false;
  uint64_t seed = 0;
};
absl::StatusOr<QuantizedLinear> QuantizeRtn(const float* w_nk, int64_t N, int64_t K,
                                            const QuantizeOptions& options);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_FORMATS_H_
