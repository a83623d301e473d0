// AWQ "GEMM" layout (FORMATS.md §3; AutoAWQ WQLinear_GEMM, AutoRound's
// auto_awq export). 4-bit only.
//   P.qweight [K, N/8] i32    along N, interleaved
//   P.qzeros  [K/G, N/8] i32  along N, same interleave, true zero points
//   P.scales  [K/G, N]        f16 (bf16/f32 kept as stored)
// Slot i of word w holds column 8w + kOrder[i]; column 8w + j sits in slot
// kInverse[j]. zero_point=false (sym) means zero 8 and qzeros are ignored.
#include "formats/format_common.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer::formats_internal {
namespace {

constexpr int kBits = 4;
constexpr int kPack = 8;
constexpr int kOrder[kPack] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int kInverse[kPack] = {0, 4, 1, 5, 2, 6, 3, 7};

absl::Status CheckAwqScheme(const LayerContext& ctx) {
  QLAYER_RETURN_IF_ERROR(CheckBits(ctx));
  if (ctx.scheme().bits != kBits) {
    return ctx.Unimplemented("bits=", ctx.scheme().bits, " is not supported: AWQ stores 4 bits");
  }
  if (ctx.scheme().act_order) {
    return ctx.Invalid("act_order is set but AWQ stores no g_idx");
  }
  return absl::OkStatus();
}

absl::Status CheckColumnsPackable(const LayerContext& ctx, int64_t N) {
  if (N % kPack == 0) return absl::OkStatus();
  return ctx.Invalid("N=", N, " is not a multiple of 8: AWQ packs 8 columns per int32");
}

// Value of column n from row `row` (N/8 words) of an interleaved tensor.
inline uint32_t InterleavedAt(const ConstTensorView& t, int64_t row, int64_t words_per_row,
                              int64_t n) {
  return Slot(LoadU32(t, row * words_per_row + n / kPack), kBits, kInverse[n % kPack]);
}

// Packs v(row, n) for n in [0, N) into interleaved words [rows, N/8].
template <typename ValueOf>
Tensor Interleave(int64_t rows, int64_t N, ValueOf v) {
  Tensor t = Tensor::Zeros(DType::kI32, {rows, N / kPack});
  uint32_t* out = t.as<uint32_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t wi = 0; wi < N / kPack; ++wi) {
      uint32_t word = 0;
      for (int i = 0; i < kPack; ++i) {
        word |= static_cast<uint32_t>(v(r, wi * kPack + kOrder[i])) << (kBits * i);
      }
      out[r * (N / kPack) + wi] = word;
    }
  }
  return t;
}

}  // namespace

absl::StatusOr<QuantizedLinear> DecodeAwq(const TensorSource& source, const LayerContext& ctx) {
  const LayerScheme& s = ctx.scheme();
  QLAYER_RETURN_IF_ERROR(CheckAwqScheme(ctx));
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* qweight,
                          RequireTensor(source, ctx, "qweight", {DType::kI32}, 2));
  QLAYER_RETURN_IF_ERROR(CheckPositiveDims(ctx, "qweight", *qweight));
  const int64_t K = qweight->dim(0);
  const int64_t words = qweight->dim(1);
  const int64_t N = words * kPack;
  if (K % kPack != 0) {
    return ctx.Invalid("K=", K, " is not a multiple of 8 (the canonical layout packs 8 rows)");
  }
  QLAYER_ASSIGN_OR_RETURN(const int64_t G, ResolveGroupSize(ctx, K, /*allow_tensor=*/false));
  const int64_t groups = K / G;
  QLAYER_ASSIGN_OR_RETURN(const ConstTensorView* scales,
                          RequireTensor(source, ctx, "scales", kFloatDTypes, 2));
  QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "scales", *scales, {groups, N}));
  const ConstTensorView* qzeros = nullptr;
  if (!s.sym) {
    QLAYER_ASSIGN_OR_RETURN(qzeros, RequireTensor(source, ctx, "qzeros", {DType::kI32}, 2));
    QLAYER_RETURN_IF_ERROR(CheckShape(ctx, "qzeros", *qzeros, {groups, words}));
  }

  QuantizedLinear w;
  w.K = K;
  w.N = N;
  w.wtype = QuantizedType(kBits, s.sym);
  w.group_size = G;
  w.qweight = PackAlongK(
      K, N, kBits, [&](int64_t k, int64_t n) { return InterleavedAt(*qweight, k, words, n); });
  w.scales = Tensor::CopyOf(*scales);
  if (qzeros != nullptr) {
    w.zeros = Tensor::Zeros(DType::kI32, {groups, N});
    int32_t* z = w.zeros.as<int32_t>();
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t n = 0; n < N; ++n) {
        z[g * N + n] = static_cast<int32_t>(InterleavedAt(*qzeros, g, words, n));
      }
    }
  }
  QLAYER_RETURN_IF_ERROR(DecodeBias(source, ctx, N, w));
  QLAYER_RETURN_IF_ERROR(ValidateDecoded(ctx, w));
  return w;
}

absl::Status EncodeAwq(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out) {
  QLAYER_RETURN_IF_ERROR(CheckAwqScheme(ctx));
  QLAYER_RETURN_IF_ERROR(CheckEncodable(ctx, w, /*allow_tensor=*/false));
  QLAYER_RETURN_IF_ERROR(CheckColumnsPackable(ctx, w.N));
  if (!w.g_idx.empty()) return ctx.Invalid("the weight has a g_idx, which AWQ cannot store");
  for (int64_t g = 0; g < w.num_groups(); ++g) {
    for (int64_t n = 0; n < w.N; ++n) {
      if (w.zero(g, n) > 15) {
        return ctx.Invalid("zero point ", w.zero(g, n), " at group ", g, ", column ", n,
                           " does not fit in 4 bits");
      }
    }
  }
  out.insert_or_assign(ctx.Name("qweight"),
                       Interleave(w.K, w.N, [&](int64_t k, int64_t n) { return w.q(k, n); }));
  // AutoAWQ always carries qzeros; a symmetric weight writes its fixed 8 so
  // that readers which do apply qzeros still get the right zero.
  out.insert_or_assign(
      ctx.Name("qzeros"),
      Interleave(w.num_groups(), w.N, [&](int64_t g, int64_t n) { return w.zero(g, n); }));
  out.insert_or_assign(ctx.Name("scales"), w.scales.Clone());
  EncodeBias(w, ctx, out);
  return absl::OkStatus();
}

}  // namespace qlayer::formats_internal
