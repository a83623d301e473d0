// compressed-tensors (llm-compressor), FORMATS.md §4: pack-quantized and
// naive-/int-quantized weights.
//   P.weight_packed     [N, ceil(K/pack)] i32  along K, sequential, q_s + 2^(bits-1)
//   P.weight            [N, K] i8               (int-quantized) signed q_s
//   P.weight_scale      [N, K/G] | [N, 1] | [1] (group | channel | tensor)
//   P.weight_zero_point packed [ceil(N/pack), K/G] i32 along N holding
//                       zp_s + 2^(bits-1), or unpacked i8 [N, K/G] / [1] zp_s
//   P.weight_g_idx      [K] i32                 only with actorder "group"
//   P.weight_shape      [2] i32|i64             [N, K] (pack-quantized)
// The packed unsigned value u = q_s + 2^(bits-1) is the canonical q as is,
// and the true zero is zp_s + 2^(bits-1); symmetric files have zp_s = 0.
#include <cstring>

#include "formats/format_common.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer::formats_internal {
namespace {

bool IsPacked(const LayerContext& ctx) {
  return ctx.scheme().format == CheckpointFormat::kCtPackQuantized;
}
bool IsTensorStrategy(const LayerContext& ctx) { return ctx.scheme().group_size == 0; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Reads an int8 element (no alignment concerns).
int32_t LoadI8(const ConstTensorView& t, int64_t i) {
  return static_cast<int32_t>(t.as<int8_t>()[i]);
}

// Copies element (r, c) of a [rows, cols] view to (c, r) of a new tensor.
Tensor Transpose(const ConstTensorView& src, int64_t rows, int64_t cols) {
  const size_t es = DTypeSize(src.dtype);
  Tensor t = Tensor::Zeros(src.dtype, {cols, rows});
  const char* in = static_cast<const char*>(src.data);
  char* out = static_cast<char*>(t.data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(out + (c * rows + r) * es, in + (r * cols + c) * es, es);
  }
  return t;
}

// [1, N] filled with the single element of `src`.
Tensor Broadcast(const ConstTensorView& src, int64_t N) {
  const size_t es = DTypeSize(src.dtype);
  Tensor t = Tensor::Zeros(src.dtype, {1, N});
  for (int64_t n = 0; n < N; ++n) std::memcpy(t.as<char>() + n * es, src.data, es);
  return t;
}

// K and N plus the canonical qweight, from weight_packed (+ weight_shape) or
// the int8 weight.
struct DecodedWeight {
  int64_t K = 0;
  int64_t N = 0;
  Tensor qweight;
};

absl::StatusOr<DecodedWeight> DecodePackedWeight(const TensorSource& source,
                                                 const LayerContext& ctx, int bits) {
  const int pack = 32 / bits;
  QLAYER_ASSIGN_OR_RETURN(
      const ConstTensorView* shape,
      RequireTensor(source, ctx, "weight_shape", {DType::kI32, DType::kI64}, 1));
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_shape", *shape, {2}));
  DecodedWeight d;
  if (shape->dtype == DType::kI32) {
    d.N = static_cast<int32_t>(LoadU32(*shape, 0));
    d.K = static_cast<int32_t>(LoadU32(*shape, 1));
  } else {
    d.N = LoadI64(*shape, 0);
    d.K = LoadI64(*shape, 1);
  }
  // Bound the dims so later products cannot overflow; real layers are far smaller.
  constexpr int64_t kMaxDim = int64_t{1} << 31;
  if (d.N <= 0 || d.K <= 0 || d.N > kMaxDim || d.K > kMaxDim) {
    return ctx.Invalid("weight_shape [", d.N, ", ", d.K, "] is not a valid [N, K]");
  }
  if (d.K % pack != 0) {
    return ctx.Invalid("K=", d.K, " is not a multiple of the pack factor ", pack);
  }
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* packed,
                          RequireTensor(source, ctx, "weight_packed", {DType::kI32}, 2));
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_packed", *packed, {d.N, d.K / pack}));
  // Both layouts pack along K sequentially, so each word moves unchanged from
  // [n][k/pack] to [k/pack][n].
  const int64_t words = d.K / pack;
  d.qweight = Tensor::Zeros(DType::kI32, {words, d.N});
  uint32_t* out = d.qweight.as<uint32_t>();
  for (int64_t n = 0; n < d.N; ++n) {
    for (int64_t w = 0; w < words; ++w) out[w * d.N + n] = LoadU32(*packed, n * words + w);
  }
  return d;
}

absl::StatusOr<DecodedWeight> DecodeInt8Weight(const TensorSource& source, const LayerContext& ctx,
                                               int bits) {
  const int pack = 32 / bits;
  const int32_t offset = 1 << (bits - 1);
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* weight,
                          RequireTensor(source, ctx, "weight", {DType::kI8}, 2));
  QLAYER_RETURN_IF_ERROR(CheckPositiveDims(ctx, "weight", *weight));
  DecodedWeight d;
  d.N = weight->dim(0);
  d.K = weight->dim(1);
  // naive-quantized writes no weight_shape; when one is present it must agree.
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* shape,
                          FindTensor(source, ctx, "weight_shape", {DType::kI32, DType::kI64}, 1));
  if (shape != nullptr) {
    QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_shape", *shape, {2}));
    const int64_t sn =
        shape->dtype == DType::kI32 ? static_cast<int32_t>(LoadU32(*shape, 0)) : LoadI64(*shape, 0);
    const int64_t sk =
        shape->dtype == DType::kI32 ? static_cast<int32_t>(LoadU32(*shape, 1)) : LoadI64(*shape, 1);
    if (sn != d.N || sk != d.K) {
      return ctx.Invalid("weight_shape [", sn, ", ", sk, "] does not match weight ",
                         ShapeToString(weight->shape));
    }
  }
  if (d.K % pack != 0) {
    return ctx.Invalid("K=", d.K, " is not a multiple of the pack factor ", pack);
  }
  for (int64_t i = 0; i < d.N * d.K; ++i) {
    const int32_t v = LoadI8(*weight, i);
    if (v < -offset || v >= offset) {
      return ctx.Invalid("tensor '", ctx.Name("weight"), "' holds ", v, " at [", i / d.K, ", ",
                         i % d.K, "], outside the signed ", bits, "-bit range");
    }
  }
  d.qweight = PackAlongK(
      d.K, d.N, bits, [&](int64_t k, int64_t n) { return LoadI8(*weight, n * d.K + k) + offset; });
  return d;
}

// Canonical scales [groups, N] from weight_scale.
absl::StatusOr<Tensor> DecodeScales(const TensorSource& source, const LayerContext& ctx, int64_t N,
                                    int64_t groups) {
  const bool tensor = IsTensorStrategy(ctx);
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* scale,
                          RequireTensor(source, ctx, "weight_scale", kFloatDTypes, tensor ? 1 : 2));
  if (tensor) {
    QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_scale", *scale, {1}));
    return Broadcast(*scale, N);
  }
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_scale", *scale, {N, groups}));
  return Transpose(*scale, N, groups);
}

// True zero points z[g][n] (zp_s + 2^(bits-1)) from weight_zero_point, or an
// empty tensor when it is absent (symmetric only).
absl::StatusOr<Tensor> DecodeZeroPoints(const TensorSource& source, const LayerContext& ctx,
                                        int64_t N, int64_t groups) {
  const LayerScheme& s = ctx.scheme();
  const bool tensor = IsTensorStrategy(ctx);
  const int bits = s.bits;
  const int pack = 32 / bits;
  const int32_t offset = 1 << (bits - 1);
  // Packed zero points exist only in pack-quantized group/channel files.
  const bool may_pack = IsPacked(ctx) && !tensor;
  const int rank = tensor ? 1 : 2;
  // (Two literal lists: an initializer_list chosen by ?: would dangle.)
  absl::StatusOr<const ConstTensorView*> found =
      may_pack ? FindTensor(source, ctx, "weight_zero_point", {DType::kI32, DType::kI8}, rank)
               : FindTensor(source, ctx, "weight_zero_point", {DType::kI8}, rank);
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* zp, std::move(found));
  if (zp == nullptr && !s.sym) {
    return ctx.Invalid("tensor '", ctx.Name("weight_zero_point"),
                       "' is missing (symmetric=false needs zero points)");
  }
  if (zp == nullptr) return Tensor();

  Tensor zeros = Tensor::Zeros(DType::kI32, {groups, N});
  int32_t* z = zeros.as<int32_t>();
  if (zp->dtype == DType::kI32) {
    QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_zero_point", *zp, {CeilDiv(N, pack), groups}));
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t g = 0; g < groups; ++g) {
        z[g * N + n] =
            static_cast<int32_t>(Slot(LoadU32(*zp, (n / pack) * groups + g), bits, n % pack));
      }
    }
  } else {
    QLAYER_RETURN_IF_ERROR(
        CheckShape(ctx, "weight_zero_point", *zp, tensor ? Shape{1} : Shape{N, groups}));
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t g = 0; g < groups; ++g) {
        const int32_t zs = LoadI8(*zp, tensor ? 0 : n * groups + g);
        if (zs < -offset || zs >= offset) {
          return ctx.Invalid("tensor '", ctx.Name("weight_zero_point"), "' holds ", zs,
                             ", outside the signed ", bits, "-bit range");
        }
        z[g * N + n] = zs + offset;
      }
    }
  }
  if (s.sym) {
    // A symmetric file may carry an all-zero zero point; anything else
    // contradicts the scheme.
    for (int64_t i = 0; i < groups * N; ++i) {
      if (z[i] != offset) {
        return ctx.Invalid("symmetric=true but '", ctx.Name("weight_zero_point"), "' is ",
                           z[i] - offset, " (not 0) at group ", i / N, ", column ", i % N);
      }
    }
    return Tensor();
  }
  return zeros;
}

}  // namespace

absl::StatusOr<QuantizedLinear> DecodeCompressedTensors(const TensorSource& source,
                                                        const LayerContext& ctx) {
  const LayerScheme& s = ctx.scheme();
  QLAYER_RETURN_IF_ERROR(CheckBits(ctx));
  DecodedWeight d;
  if (IsPacked(ctx)) {
    QLAYER_ASSIGN_OR_RETURN(d, DecodePackedWeight(source, ctx, s.bits));
  } else {
    QLAYER_ASSIGN_OR_RETURN(d, DecodeInt8Weight(source, ctx, s.bits));
  }
  QLAYER_ASSIGN_OR_RETURN(const int64_t G, ResolveGroupSize(ctx, d.K, /*allow_tensor=*/true));
  const int64_t groups = d.K / G;

  QuantizedLinear w;
  w.K = d.K;
  w.N = d.N;
  w.wtype = QuantizedType(s.bits, s.sym);
  w.group_size = G;
  w.qweight = std::move(d.qweight);
  QLAYER_ASSIGN_OR_RETURN(w.scales, DecodeScales(source, ctx, d.N, groups));
  QLAYER_ASSIGN_OR_RETURN(w.zeros, DecodeZeroPoints(source, ctx, d.N, groups));

  const ConstTensorView* g_idx = nullptr;
  if (s.act_order) {
    QLAYER_ASSIGN_OR_RETURN(g_idx, RequireTensor(source, ctx, "weight_g_idx", {DType::kI32}, 1));
  } else {
    QLAYER_ASSIGN_OR_RETURN(g_idx, FindTensor(source, ctx, "weight_g_idx", {DType::kI32}, 1));
  }
  if (g_idx != nullptr) {
    QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "weight_g_idx", *g_idx, {d.K}));
    QLAYER_ASSIGN_OR_RETURN(w.g_idx, TakeGIdx(ctx, "weight_g_idx", *g_idx, d.K, G));
  }
  QLAYER_RETURN_IF_ERROR(DecodeBias(source, ctx, d.N, w));
  QLAYER_RETURN_IF_ERROR(ValidateDecoded(ctx, w));
  return w;
}

absl::Status EncodeCompressedTensors(const QuantizedLinear& w, const LayerContext& ctx,
                                     NamedTensors& out) {
  const LayerScheme& s = ctx.scheme();
  QLAYER_RETURN_IF_ERROR(CheckEncodable(ctx, w, /*allow_tensor=*/true));
  const bool packed = IsPacked(ctx);
  const bool tensor = IsTensorStrategy(ctx);
  const int bits = WeightBits(w.wtype);
  const int pack = 32 / bits;
  const int32_t offset = 1 << (bits - 1);
  const int64_t K = w.K;
  const int64_t N = w.N;
  const int64_t groups = w.num_groups();

  const size_t es = DTypeSize(w.scales.dtype());
  if (tensor) {
    // One scale (and zero) for the whole tensor: every column must agree.
    for (int64_t n = 1; n < N; ++n) {
      if (std::memcmp(w.scales.as<char>() + n * es, w.scales.data(), es) != 0 ||
          w.zero(0, n) != w.zero(0, 0)) {
        return ctx.Invalid("tensor strategy needs one scale and zero point, but column ", n,
                           " differs from column 0");
      }
    }
  }
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < N; ++n) {
      if (w.zero(g, n) >= 2 * offset) {
        return ctx.Invalid("zero point ", w.zero(g, n), " at group ", g, ", column ", n,
                           " does not fit the signed ", bits, "-bit zero point");
      }
    }
  }

  if (packed) {
    const int64_t words = K / pack;
    Tensor wp = Tensor::Zeros(DType::kI32, {N, words});
    const uint32_t* q = w.qweight.as<uint32_t>();
    for (int64_t kw = 0; kw < words; ++kw) {
      for (int64_t n = 0; n < N; ++n) wp.as<uint32_t>()[n * words + kw] = q[kw * N + n];
    }
    out.insert_or_assign(ctx.Name("weight_packed"), std::move(wp));
    Tensor shape = Tensor::Zeros(DType::kI32, {2});
    shape.as<int32_t>()[0] = static_cast<int32_t>(N);
    shape.as<int32_t>()[1] = static_cast<int32_t>(K);
    out.insert_or_assign(ctx.Name("weight_shape"), std::move(shape));
  } else {
    Tensor weight = Tensor::Zeros(DType::kI8, {N, K});
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        weight.as<int8_t>()[n * K + k] = static_cast<int8_t>(w.q(k, n) - offset);
      }
    }
    out.insert_or_assign(ctx.Name("weight"), std::move(weight));
  }

  if (tensor) {
    Tensor scale = Tensor::Zeros(w.scales.dtype(), {1});
    std::memcpy(scale.data(), w.scales.data(), es);
    out.insert_or_assign(ctx.Name("weight_scale"), std::move(scale));
  } else {
    out.insert_or_assign(ctx.Name("weight_scale"), Transpose(w.scales.view(), groups, N));
  }

  if (HasZeroPoints(w.wtype)) {
    if (packed && !tensor) {
      Tensor zp = Tensor::Zeros(DType::kI32, {CeilDiv(N, pack), groups});
      for (int64_t n = 0; n < N; ++n) {
        for (int64_t g = 0; g < groups; ++g) {
          zp.as<uint32_t>()[(n / pack) * groups + g] |= static_cast<uint32_t>(w.zero(g, n))
                                                        << (bits * (n % pack));
        }
      }
      out.insert_or_assign(ctx.Name("weight_zero_point"), std::move(zp));
    } else {
      Tensor zp = Tensor::Zeros(DType::kI8, tensor ? Shape{1} : Shape{N, groups});
      for (int64_t n = 0; n < (tensor ? 1 : N); ++n) {
        for (int64_t g = 0; g < (tensor ? 1 : groups); ++g) {
          zp.as<int8_t>()[n * groups + g] = static_cast<int8_t>(w.zero(g, n) - offset);
        }
      }
      out.insert_or_assign(ctx.Name("weight_zero_point"), std::move(zp));
    }
  }
  if (s.act_order) out.insert_or_assign(ctx.Name("weight_g_idx"), GIdxToWrite(w));
  EncodeBias(w, ctx, out);
  return absl::OkStatus();
}

}  // namespace qlayer::formats_internal
