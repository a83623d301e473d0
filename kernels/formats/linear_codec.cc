// Entry points of the format codecs: dispatch on the scheme's format.
#include "formats/format_common.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

using formats_internal::LayerContext;

absl::string_view CheckpointFormatName(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kDense:
      return "dense";
    case CheckpointFormat::kGptq:
      return "gptq";
    case CheckpointFormat::kGptqV2:
      return "gptq_v2";
    case CheckpointFormat::kAwq:
      return "awq";
    case CheckpointFormat::kCtPackQuantized:
      return "compressed-tensors:pack-quantized";
    case CheckpointFormat::kCtIntQuantized:
      return "compressed-tensors:int-quantized";
  }
  return "invalid";
}

NamedTensorSource::NamedTensorSource(const NamedTensors& tensors) {
  for (const auto& [name, tensor] : tensors) views_.emplace(name, tensor.view());
}

const ConstTensorView* NamedTensorSource::Find(absl::string_view name) const {
  auto it = views_.find(name);
  return it == views_.end() ? nullptr : &it->second;
}

absl::StatusOr<QuantizedLinear> DecodeLinear(const TensorSource& source, absl::string_view prefix,
                                             const LayerScheme& scheme) {
  const LayerContext ctx(prefix, scheme);
  switch (scheme.format) {
    case CheckpointFormat::kDense:
      return formats_internal::DecodeDense(source, ctx);
    case CheckpointFormat::kGptq:
    case CheckpointFormat::kGptqV2:
      return formats_internal::DecodeGptq(source, ctx);
    case CheckpointFormat::kAwq:
      return formats_internal::DecodeAwq(source, ctx);
    case CheckpointFormat::kCtPackQuantized:
    case CheckpointFormat::kCtIntQuantized:
      return formats_internal::DecodeCompressedTensors(source, ctx);
  }
  return ctx.Invalid("unknown checkpoint format ", static_cast<int>(scheme.format));
}

absl::Status EncodeLinear(const QuantizedLinear& w, absl::string_view prefix,
                          const LayerScheme& scheme, NamedTensors& out) {
  const LayerContext ctx(prefix, scheme);
  // Encode into a scratch map so that a failure leaves `out` untouched.
  NamedTensors written;
  absl::Status status;
  switch (scheme.format) {
    case CheckpointFormat::kDense:
      status = formats_internal::EncodeDense(w, ctx, written);
      break;
    case CheckpointFormat::kGptq:
    case CheckpointFormat::kGptqV2:
      status = formats_internal::EncodeGptq(w, ctx, written);
      break;
    case CheckpointFormat::kAwq:
      status = formats_internal::EncodeAwq(w, ctx, written);
      break;
    case CheckpointFormat::kCtPackQuantized:
    case CheckpointFormat::kCtIntQuantized:
      status = formats_internal::EncodeCompressedTensors(w, ctx, written);
      break;
    default:
      status = ctx.Invalid("unknown checkpoint format ", static_cast<int>(scheme.format));
  }
  QLAYER_RETURN_IF_ERROR(status);
  for (auto& [name, tensor] : written) out.insert_or_assign(name, std::move(tensor));
  return absl::OkStatus();
}

}  // namespace qlayer
