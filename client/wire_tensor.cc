#include "client/wire_tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace qlayer {

absl::StatusOr<v1::DType> ToWireDType(DType t) {
  switch (t) {
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
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(t), " has no wire code (f16, bf16, f32, i32, i64)"));
  }
}

absl::StatusOr<DType> FromWireDType(v1::DType t) {
  switch (t) {
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
      return absl::InvalidArgumentError(absl::StrCat("unknown wire dtype code ", t));
  }
}

absl::Status ToWireTensor(const ConstTensorView& x, v1::Tensor* out) {
  auto wire = ToWireDType(x.dtype);
  if (!wire.ok()) return wire.status();
  const int64_t nbytes = CheckedNumBytes(x.shape, DTypeSize(x.dtype));
  if (nbytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor shape ", ShapeToString(x.shape), " is negative or overflows"));
  }
  out->Clear();
  out->set_dtype(*wire);
  for (int64_t d : x.shape) out->add_shape(d);
  if (nbytes > 0) out->set_data(x.data, static_cast<size_t>(nbytes));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> FromWireTensor(const v1::Tensor& t) {
  Shape shape(t.shape().begin(), t.shape().end());
  const bool has_values = t.values_size() > 0;
  if (has_values && !t.data().empty()) {
    return absl::InvalidArgumentError("tensor sets both data and values; send one");
  }
  DType dtype = DType::kF32;
  if (t.dtype() != v1::DTYPE_UNSPECIFIED || !has_values) {
    auto d = FromWireDType(t.dtype());
    if (!d.ok()) return d.status();
    dtype = *d;
  }
  const int64_t nbytes = CheckedNumBytes(shape, DTypeSize(dtype));
  if (nbytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor shape ", ShapeToString(shape), " is negative or overflows"));
  }
  Tensor out = Tensor::Zeros(dtype, shape);
  if (has_values) {
    if (t.values_size() != out.numel()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor of shape ", ShapeToString(shape),
                                                     " has ", t.values_size(), " values, expected ",
                                                     out.numel()));
    }
    if (!IsFloatActivation(dtype)) {
      return absl::InvalidArgumentError(
          absl::StrCat("values form is for float tensors, got dtype ", DTypeName(dtype)));
    }
    for (int64_t i = 0; i < out.numel(); ++i) {
      StoreFromDouble(out.data(), dtype, i, static_cast<double>(t.values(static_cast<int>(i))));
    }
    return out;
  }
  if (static_cast<int64_t>(t.data().size()) != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", DTypeName(dtype),
                                                   ShapeToString(shape), " needs ", nbytes,
                                                   " bytes of data, got ", t.data().size()));
  }
  if (nbytes > 0) std::memcpy(out.data(), t.data().data(), static_cast<size_t>(nbytes));
  return out;
}

}  // namespace qlayer
