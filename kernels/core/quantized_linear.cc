#include "qlayer/kernels/quantized_linear.h"

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

absl::Status CheckTensor(const Tensor& t, absl::string_view role, const Shape& shape,
                         std::initializer_list<DType> dtypes) {
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat(role, " is missing"));
  bool dtype_ok = false;
  for (DType d : dtypes) dtype_ok |= (t.dtype() == d);
  if (!dtype_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(role, " has dtype ", DTypeName(t.dtype()), ", which is not allowed"));
  }
  if (t.shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(role, " has shape ", ShapeToString(t.shape()),
                                                   ", expected ", ShapeToString(shape)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view WeightTypeName(WeightType t) {
  switch (t) {
    case WeightType::kUint4:
      return "uint4";
    case WeightType::kUint4b8:
      return "uint4b8";
    case WeightType::kUint8:
      return "uint8";
    case WeightType::kUint8b128:
      return "uint8b128";
    case WeightType::kDense:
      return "dense";
  }
  return "invalid";
}

int64_t QuantizedLinear::weight_bytes() const {
  if (wtype == WeightType::kDense) return static_cast<int64_t>(dense.nbytes());
  return static_cast<int64_t>(qweight.nbytes() + scales.nbytes() + zeros.nbytes());
}

absl::Status QuantizedLinear::Validate() const {
  if (K <= 0 || N <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape K=", K, " N=", N));
  }
  if (!bias.empty()) {
    QLAYER_RETURN_IF_ERROR(
        CheckTensor(bias, "bias", {N}, {DType::kF16, DType::kBF16, DType::kF32}));
  }
  if (wtype == WeightType::kDense) {
    return CheckTensor(dense, "weight", {N, K}, {DType::kF16, DType::kBF16, DType::kF32});
  }
  const int pack = PackFactor(wtype);
  if (K % pack != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", K, " is not a multiple of the pack factor ", pack));
  }
  if (group_size <= 0 || K % group_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", K, " is not divisible by group size ", group_size));
  }
  const int64_t groups = K / group_size;
  QLAYER_RETURN_IF_ERROR(CheckTensor(qweight, "qweight", {K / pack, N}, {DType::kI32}));
  QLAYER_RETURN_IF_ERROR(
      CheckTensor(scales, "scales", {groups, N}, {DType::kF16, DType::kBF16, DType::kF32}));
  if (HasZeroPoints(wtype)) {
    QLAYER_RETURN_IF_ERROR(CheckTensor(zeros, "zeros", {groups, N}, {DType::kI32}));
    const int32_t* z = zeros.as<int32_t>();
    // GPTQ v1's +1 offset can give 2^bits (FORMATS.md §2), never more.
    const int32_t zmax = 1 << WeightBits(wtype);
    for (int64_t i = 0; i < groups * N; ++i) {
      if (z[i] < 0 || z[i] > zmax) {
        return absl::InvalidArgumentError(
            absl::StrCat("zero point ", z[i], " out of range [0, ", zmax, "]"));
      }
    }
  } else if (!zeros.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("symmetric type ", WeightTypeName(wtype), " must not carry zeros"));
  }
  if (!g_idx.empty()) {
    QLAYER_RETURN_IF_ERROR(CheckTensor(g_idx, "g_idx", {K}, {DType::kI32}));
    const int32_t* g = g_idx.as<int32_t>();
    for (int64_t k = 0; k < K; ++k) {
      if (g[k] < 0 || g[k] >= groups) {
        return absl::InvalidArgumentError(
            absl::StrCat("g_idx[", k, "] = ", g[k], " is outside [0, ", groups, ")"));
      }
    }
  }
  return absl::OkStatus();
}

int32_t QuantizedLinear::q(int64_t k, int64_t n) const {
  const int bits = WeightBits(wtype);
  const int pack = 32 / bits;
  const uint32_t word = static_cast<uint32_t>(qweight.as<int32_t>()[(k / pack) * N + n]);
  return static_cast<int32_t>((word >> (bits * (k % pack))) & ((1u << bits) - 1));
}

int64_t QuantizedLinear::group_of(int64_t k) const {
  return g_idx.empty() ? k / group_size : g_idx.as<int32_t>()[k];
}

int32_t QuantizedLinear::zero(int64_t g, int64_t n) const {
  return HasZeroPoints(wtype) ? zeros.as<int32_t>()[g * N + n] : SymmetricZero(wtype);
}

double QuantizedLinear::Dequant(int64_t k, int64_t n) const {
  if (wtype == WeightType::kDense) return LoadAsDouble(dense.data(), dense.dtype(), n * K + k);
  const int64_t g = group_of(k);
  return static_cast<double>(q(k, n) - zero(g, n)) *
         LoadAsDouble(scales.data(), scales.dtype(), g * N + n);
}

QuantizedLinear QuantizedLinear::Clone() const {
  QuantizedLinear c;
  c.K = K;
  c.N = N;
  c.wtype = wtype;
  c.group_size = group_size;
  c.qweight = qweight.Clone();
  c.scales = scales.Clone();
  c.zeros = zeros.Clone();
  c.g_idx = g_idx.Clone();
  c.bias = bias.Clone();
  c.dense = dense.Clone();
  return c;
}

}  // namespace qlayer
