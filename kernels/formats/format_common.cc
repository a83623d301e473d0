#include "formats/format_common.h"

#include <string>

#include "qlayer/kernels/status_macros.h"

namespace qlayer::formats_internal {

std::string LayerContext::Head() const {
  const absl::string_view format = CheckpointFormatName(scheme_.format);
  if (scheme_.origin.empty() || scheme_.origin == format) {
    return absl::StrCat("layer ", prefix_, " (", format, "): ");
  }
  return absl::StrCat("layer ", prefix_, " (", format, ", from ", scheme_.origin, "): ");
}

absl::Status LayerContext::Wrap(const absl::Status& s) const {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(Head(), s.message()));
}

std::string DTypeList(DTypes dtypes) {
  std::string s;
  for (DType d : dtypes) absl::StrAppend(&s, s.empty() ? "" : "|", DTypeName(d));
  return s;
}

absl::StatusOr<const ConstTensorView*> FindTensor(const TensorSource& source,
                                                  const LayerContext& ctx, absl::string_view suffix,
                                                  DTypes dtypes, int rank) {
  const ConstTensorView* t = source.Find(ctx.Name(suffix));
  if (t == nullptr) return t;
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok |= (t->dtype == d);
  if (!dtype_ok) {
    return ctx.Invalid("tensor '", ctx.Name(suffix), "' has dtype ", DTypeName(t->dtype),
                       ", expected ", DTypeList(dtypes));
  }
  if (static_cast<int>(t->shape.size()) != rank) {
    return ctx.Invalid("tensor '", ctx.Name(suffix), "' has shape ", ShapeToString(t->shape),
                       ", expected rank ", rank);
  }
  for (int64_t d : t->shape) {
    if (d < 0) {
      return ctx.Invalid("tensor '", ctx.Name(suffix), "' has shape ", ShapeToString(t->shape));
    }
  }
  if (t->data == nullptr && t->numel() > 0) {
    return ctx.Invalid("tensor '", ctx.Name(suffix), "' has no data");
  }
  return t;
}

absl::StatusOr<const ConstTensorView*> RequireTensor(const TensorSource& source,
                                                     const LayerContext& ctx,
                                                     absl::string_view suffix, DTypes dtypes,
                                                     int rank) {
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* t, FindTensor(source, ctx, suffix, dtypes, rank));
  if (t == nullptr) return ctx.Invalid("tensor '", ctx.Name(suffix), "' is missing");
  return t;
}

absl::Status CheckPositiveDims(const LayerContext& ctx, absl::string_view suffix,
                               const ConstTensorView& t) {
  for (int64_t d : t.shape) {
    if (d <= 0) {
      return ctx.Invalid("tensor '", ctx.Name(suffix), "' has shape ", ShapeToString(t.shape),
                         ", expected positive dims");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckShape(const LayerContext& ctx, absl::string_view suffix, const ConstTensorView& t,
                        const Shape& expected) {
  if (t.shape != expected) {
    return ctx.Invalid("tensor '", ctx.Name(suffix), "' has shape ", ShapeToString(t.shape),
                       ", expected ", ShapeToString(expected));
  }
  return absl::OkStatus();
}

absl::Status CheckBits(const LayerContext& ctx) {
  const int bits = ctx.scheme().bits;
  if (bits == 4 || bits == 8) return absl::OkStatus();
  if (bits <= 0) return ctx.Invalid("bits=", bits, " is not a quantized width");
  return ctx.Unimplemented("bits=", bits, " is not supported (qlayer serves 4- and 8-bit weights)");
}

WeightType QuantizedType(int bits, bool sym) {
  if (bits == 4) return sym ? WeightType::kUint4b8 : WeightType::kUint4;
  return sym ? WeightType::kUint8b128 : WeightType::kUint8;
}

absl::StatusOr<int64_t> ResolveGroupSize(const LayerContext& ctx, int64_t K, bool allow_tensor) {
  const int64_t gs = ctx.scheme().group_size;
  if (gs == -1) return K;
  if (gs == 0) {
    if (allow_tensor) return K;
    return ctx.Invalid("group_size 0 (the compressed-tensors 'tensor' strategy) is not valid here");
  }
  if (gs < 0) return ctx.Invalid("group_size ", gs, " is invalid (expected -1 or positive)");
  if (K % gs != 0) return ctx.Invalid("K=", K, " is not divisible by group_size ", gs);
  return gs;
}

bool IsTrivialGIdx(const int32_t* g, int64_t K, int64_t G) {
  for (int64_t k = 0; k < K; ++k) {
    if (g[k] != k / G) return false;
  }
  return true;
}

absl::StatusOr<Tensor> TakeGIdx(const LayerContext& ctx, absl::string_view suffix,
                                const ConstTensorView& g_idx, int64_t K, int64_t G) {
  Tensor copy = Tensor::CopyOf(g_idx);  // aligned, see LoadU32
  const int32_t* g = copy.as<int32_t>();
  const int64_t groups = K / G;
  for (int64_t k = 0; k < K; ++k) {
    if (g[k] < 0 || g[k] >= groups) {
      return ctx.Invalid("tensor '", ctx.Name(suffix), "': value ", g[k], " at row ", k,
                         " is outside [0, ", groups, ") (K=", K, ", group size ", G, ")");
    }
  }
  if (IsTrivialGIdx(g, K, G)) return Tensor();
  return copy;
}

Tensor TrivialGIdx(int64_t K, int64_t G) {
  Tensor t = Tensor::Zeros(DType::kI32, {K});
  int32_t* g = t.as<int32_t>();
  for (int64_t k = 0; k < K; ++k) g[k] = static_cast<int32_t>(k / G);
  return t;
}

Tensor GIdxToWrite(const QuantizedLinear& w) {
  return w.g_idx.empty() ? TrivialGIdx(w.K, w.group_size) : w.g_idx.Clone();
}

absl::Status DecodeBias(const TensorSource& source, const LayerContext& ctx, int64_t N,
                        QuantizedLinear& w) {
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* bias,
                          FindTensor(source, ctx, "bias", kFloatDTypes, 1));
  if (bias == nullptr) return absl::OkStatus();
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "bias", *bias, {N}));
  w.bias = Tensor::CopyOf(*bias);
  return absl::OkStatus();
}

void EncodeBias(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out) {
  if (!w.bias.empty()) out.insert_or_assign(ctx.Name("bias"), w.bias.Clone());
}

absl::Status ValidateDecoded(const LayerContext& ctx, const QuantizedLinear& w) {
  return ctx.Wrap(w.Validate());
}

absl::Status CheckEncodable(const LayerContext& ctx, const QuantizedLinear& w, bool allow_tensor) {
  QLAYER_RETURN_IF_ERROR(ctx.Wrap(w.Validate()));
  const LayerScheme& s = ctx.scheme();
  if (w.wtype == WeightType::kDense) {
    return ctx.Invalid("the weight is dense; this format stores quantized weights");
  }
  QLAYER_RETURN_IF_ERROR(CheckBits(ctx));
  if (WeightBits(w.wtype) != s.bits) {
    return ctx.Invalid("weight type ", WeightTypeName(w.wtype), " does not match bits=", s.bits);
  }
  if (s.sym == HasZeroPoints(w.wtype)) {
    return ctx.Invalid("weight type ", WeightTypeName(w.wtype),
                       " does not match sym=", s.sym ? "true" : "false");
  }
  const bool group_ok = s.group_size > 0     ? w.group_size == s.group_size
                        : s.group_size == -1 ? w.group_size == w.K
                        : s.group_size == 0  ? allow_tensor && w.group_size == w.K
                                             : false;
  if (!group_ok) {
    return ctx.Invalid("weight group size ", w.group_size, " (K=", w.K,
                       ") does not match the scheme's group_size ", s.group_size);
  }
  if (!w.g_idx.empty() && !s.act_order &&
      !IsTrivialGIdx(w.g_idx.as<int32_t>(), w.K, w.group_size)) {
    return ctx.Invalid("the weight has an act-order g_idx but the scheme has act_order=false");
  }
  return absl::OkStatus();
}

}  // namespace qlayer::formats_internal
