// Unquantized linears (FORMATS.md §6): P.weight [N, K] f16/bf16/f32 and an
// optional P.bias, served through the same canonical path as kDense.
#include "formats/format_common.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer::formats_internal {

absl::StatusOr<QuantizedLinear> DecodeDense(const TensorSource& source, const LayerContext& ctx) {
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* weight,
                          RequireTensor(source, ctx, "weight", kFloatDTypes, 2));
  QLAYER_RETURN_IF_ERROR(CheckPositiveDims(ctx, "weight", *weight));
  QuantizedLinear w;
  w.N = weight->dim(0);
  w.K = weight->dim(1);
  w.wtype = WeightType::kDense;
  w.dense = Tensor::CopyOf(*weight);
  QLAYER_RETURN_IF_ERROR(DecodeBias(source, ctx, w.N, w));
  QLAYER_RETURN_IF_ERROR(ValidateDecoded(ctx, w));
  return w;
}

absl::Status EncodeDense(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out) {
  QLAYER_RETURN_IF_ERROR(ctx.Wrap(w.Validate()));
  if (w.wtype != WeightType::kDense) {
    return ctx.Invalid("weight type ", WeightTypeName(w.wtype),
                       " is quantized; the dense format stores only dense weights");
  }
  out.insert_or_assign(ctx.Name("weight"), w.dense.Clone());
  EncodeBias(w, ctx, out);
  return absl::OkStatus();
}

}  // namespace qlayer::formats_internal
