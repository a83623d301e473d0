// GPTQ v1 and gptq_v2 (FORMATS.md §2; AutoGPTQ / GPTQModel / AutoRound's
// auto_gptq export).
//   P.qweight [K/pack, N] i32   along K, sequential: the canonical layout as is
//   P.qzeros  [K/G, N/pack] i32 along N, sequential; v1 stores z - 1, v2 z
//   P.scales  [K/G, N]          f16 (bf16/f32 kept as stored)
//   P.g_idx   [K] i32           trivial k/G unless desc_act
// v1 decodes a zero as slot + 1 with no mask (AutoGPTQ qlinear_cuda, vLLM):
// a stored -1 (true zero 0) fills its slot with ones and reads 16.
#include "formats/format_common.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer::formats_internal {
namespace {

bool IsV1(const LayerContext& ctx) { return ctx.scheme().format == CheckpointFormat::kGptq; }

absl::Status CheckQzerosPackable(const LayerContext& ctx, int64_t N, int pack) {
  if (N % pack == 0) return absl::OkStatus();
  return ctx.Invalid("N=", N, " is not a multiple of ", pack, ": qzeros pack ", pack,
                     " columns per int32");
}

}  // namespace

absl::StatusOr<QuantizedLinear> DecodeGptq(const TensorSource& source, const LayerContext& ctx) {
  const LayerScheme& s = ctx.scheme();
  QLAYER_RETURN_IF_ERROR(CheckBits(ctx));
  const int bits = s.bits;
  const int pack = 32 / bits;
  const int32_t offset = IsV1(ctx) ? 1 : 0;

  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* qweight,
                          RequireTensor(source, ctx, "qweight", {DType::kI32}, 2));
  QLAYER_RETURN_IF_ERROR(CheckPositiveDims(ctx, "qweight", *qweight));
  const int64_t K = qweight->dim(0) * pack;
  const int64_t N = qweight->dim(1);
  QLAYER_ASSIGN_OR_RETURN(const int64_t G, ResolveGroupSize(ctx, K, /*allow_tensor=*/false));
  const int64_t groups = K / G;
  QLAYER_RETURN_IF_ERROR(CheckQzerosPackable(ctx, N, pack));

  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* scales,
                          RequireTensor(source, ctx, "scales", kFloatDTypes, 2));
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "scales", *scales, {groups, N}));
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* qzeros,
                          RequireTensor(source, ctx, "qzeros", {DType::kI32}, 2));
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "qzeros", *qzeros, {groups, N / pack}));
  // Without desc_act the g_idx is optional (and trivial); with it, required.
  const ConstTensorView* g_idx = nullptr;
  if (s.act_order) {
    QLAYER_ASSIGN_OR_RETURN(g_idx, RequireTensor(source, ctx, "g_idx", {DType::kI32}, 1));
  } else {
    QLAYER_ASSIGN_OR_RETURN(g_idx, FindTensor(source, ctx, "g_idx", {DType::kI32}, 1));
  }
  if (g_idx != nullptr) QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "g_idx", *g_idx, {K}));

  QuantizedLinear w;
  w.K = K;
  w.N = N;
  w.wtype = QuantizedType(bits, s.sym);
  w.group_size = G;
  w.qweight = Tensor::CopyOf(*qweight);
  w.scales = Tensor::CopyOf(*scales);

  const int32_t sym_zero = SymmetricZero(w.wtype);
  if (!s.sym) w.zeros = Tensor::Zeros(DType::kI32, {groups, N});
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < N; ++n) {
      const uint32_t word = LoadU32(*qzeros, g * (N / pack) + n / pack);
      const int32_t z = static_cast<int32_t>(Slot(word, bits, n % pack)) + offset;
      if (!s.sym) {
        w.zeros.as<int32_t>()[g * N + n] = z;
      } else if (z != sym_zero) {
        return ctx.Invalid("sym=true but qzeros decode to zero point ", z, " at group ", g,
                           ", column ", n, " (word 0x", absl::Hex(word, absl::kZeroPad8),
                           "); a symmetric checkpoint stores ", sym_zero - offset,
                           " in every slot");
      }
    }
  }
  if (g_idx != nullptr) {
    QLAYER_ASSIGN_OR_RETURN(w.g_idx, TakeGIdx(ctx, "g_idx", *g_idx, K, G));
  }
  QLAYER_RETURN_IF_ERROR(DecodeBias(source, ctx, N, w));
  QLAYER_RETURN_IF_ERROR(ValidateDecoded(ctx, w));
  return w;
}

absl::Status EncodeGptq(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out) {
  QLAYER_RETURN_IF_ERROR(CheckEncodable(ctx, w, /*allow_tensor=*/false));
  const bool v1 = IsV1(ctx);
  const int bits = WeightBits(w.wtype);
  const int pack = 32 / bits;
  const int32_t offset = v1 ? 1 : 0;
  const int32_t max_stored = (1 << bits) - 1;
  const int64_t N = w.N;
  const int64_t groups = w.num_groups();
  QLAYER_RETURN_IF_ERROR(CheckQzerosPackable(ctx, N, pack));

  // Symmetric types store their fixed zero too (7 / 127 per slot in v1).
  Tensor qzeros = Tensor::Zeros(DType::kI32, {groups, N / pack});
  uint32_t* qz = qzeros.as<uint32_t>();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n = 0; n < N; ++n) {
      const int32_t z = w.zero(g, n);
      const int32_t stored = z - offset;
      if (stored < 0 || stored > max_stored) {
        if (v1 && z == 0) {
          return ctx.Invalid("zero point 0 at group ", g, ", column ", n,
                             " cannot be stored in GPTQ v1 (it stores z - 1); use gptq_v2");
        }
        return ctx.Invalid("zero point ", z, " at group ", g, ", column ", n, " does not fit in ",
                           bits, " bits", v1 ? " after the v1 offset of 1" : "");
      }
      qz[g * (N / pack) + n / pack] |= static_cast<uint32_t>(stored) << (bits * (n % pack));
    }
  }
  out.insert_or_assign(ctx.Name("qweight"), w.qweight.Clone());
  out.insert_or_assign(ctx.Name("qzeros"), std::move(qzeros));
  out.insert_or_assign(ctx.Name("scales"), w.scales.Clone());
  // AutoGPTQ writes g_idx for every layer: k / G without desc_act.
  out.insert_or_assign(ctx.Name("g_idx"), GIdxToWrite(w));
  EncodeBias(w, ctx, out);
  return absl::OkStatus();
}

}  // namespace qlayer::formats_internal
