#include "server/wire/tensor_codec.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qlayer {

// `data` is little-endian on the wire and copied as-is both ways.
static_assert(std::endian::native == std::endian::little, "qlayer assumes a little-endian host");

DType FromProtoDType(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F16:
      return DType::kF16;
    case v1::DTYPE_BF16:
      return DType::kBF16;
    case v1::DTYPE_F32:
      return DType::kF32;
    case v1::DTYPE_I32:
      return DType::kI32;
    case v1::DTYPE_I64:
      return DType::kI64;
    default:
      return DType::kInvalid;
  }
}

v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return v1::DTYPE_F16;
    case DType::kBF16:
      return v1::DTYPE_BF16;
    case DType::kF32:
      return v1::DTYPE_F32;
    case DType::kI32:
      return v1::DTYPE_I32;
    case DType::kI64:
      return v1::DTYPE_I64;
    default:
      return v1::DTYPE_UNSPECIFIED;
  }
}

namespace {

std::string WireDTypeName(v1::DType d) {
  const std::string& n = v1::DType_Name(d);
  return n.empty() ? absl::StrCat("DType(", static_cast<int>(d), ")") : n;
}

}  // namespace

absl::StatusOr<DecodedInput> DecodeLinearInput(const v1::Tensor& t, int64_t K, int64_t max_rows,
                                               absl::string_view layer) {
  const bool has_data = !t.data().empty();
  const bool has_values = t.values_size() > 0;
  if (has_data && has_values) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": input sets both data (",
                                                   t.data().size(), " bytes) and values (",
                                                   t.values_size(), " numbers); set one"));
  }
  DType dtype = FromProtoDType(t.dtype());
  if (t.dtype() == v1::DTYPE_UNSPECIFIED && !has_data) dtype = DType::kF32;
  if (t.dtype() == v1::DTYPE_UNSPECIFIED && has_data) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer,
                     ": input has data but no dtype (DTYPE_F16, DTYPE_BF16 or "
                     "DTYPE_F32)"));
  }
  if (!IsFloatActivation(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": input dtype ",
                                                   WireDTypeName(t.dtype()),
                                                   " is not DTYPE_F16, DTYPE_BF16 or DTYPE_F32"));
  }
  const size_t elem = DTypeSize(dtype);

  Shape shape(t.shape().begin(), t.shape().end());
  if (shape.empty()) {
    // No shape: one row of whatever was sent (grpcurl users send just values).
    shape.push_back(has_values ? t.values_size() : static_cast<int64_t>(t.data().size() / elem));
  }
  if (shape.size() == 1) shape.insert(shape.begin(), 1);
  if (shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": input shape ",
                                                   ShapeToString(shape), " is not [M, K] or [K]"));
  }
  const int64_t M = shape[0];
  if (shape[1] != K) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": K=", K, " but input shape ",
                                                   ShapeToString(shape), " has ", shape[1],
                                                   " columns"));
  }
  if (M < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, ": input shape ", ShapeToString(shape), " has no rows"));
  }
  if (M > max_rows) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": input has ", M,
                                                   " rows, above the server's limit of ", max_rows,
                                                   " (--max-rows-per-request)"));
  }
  const int64_t nbytes = CheckedNumBytes(shape, elem);
  if (nbytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, ": input shape ", ShapeToString(shape), " overflows"));
  }
  const int64_t numel = nbytes / static_cast<int64_t>(elem);

  DecodedInput out;
  if (!has_values) {
    if (static_cast<int64_t>(t.data().size()) != nbytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", layer, ": input data has ", t.data().size(), " bytes, expected ",
                       nbytes, " (shape ", ShapeToString(shape), " ", DTypeName(dtype), ")"));
    }
    out.view = {dtype, shape, t.data().data()};
    return out;
  }
  if (t.values_size() != numel) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": input has ", t.values_size(),
                                                   " values, expected ", numel, " (shape ",
                                                   ShapeToString(shape), ")"));
  }
  out.owned = Tensor::Zeros(dtype, shape);
  void* dst = out.owned.data();
  for (int64_t i = 0; i < numel; ++i) StoreFromDouble(dst, dtype, i, t.values(static_cast<int>(i)));
  out.view = out.owned.view();
  out.used_values = true;
  return out;
}

void EncodeTensor(const ConstTensorView& y, v1::Encoding encoding, bool request_used_values,
                  v1::Tensor* out) {
  out->set_dtype(ToProtoDType(y.dtype));
  out->mutable_shape()->Assign(y.shape.begin(), y.shape.end());
  const bool values =
      encoding == v1::ENCODING_VALUES || (encoding != v1::ENCODING_DATA && request_used_values);
  if (!values) {
    out->set_data(y.data, y.nbytes());
    return;
  }
  const int64_t n = y.numel();
  auto* v = out->mutable_values();
  v->Resize(static_cast<int>(n), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    v->Set(static_cast<int>(i), static_cast<float>(LoadAsDouble(y.data, y.dtype, i)));
  }
}

}  // namespace qlayer
