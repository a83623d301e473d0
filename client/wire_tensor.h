// qlayer::Tensor <-> qlayer.v1.Tensor (proto/qlayer/v1/tensor.proto).
// The client always sends the `data` fast path (raw little-endian bytes) and
// accepts either form back, checking sizes so that a malformed answer is an
// error, never an out-of-bounds read.
#ifndef QLAYER_CLIENT_WIRE_TENSOR_H_
#define QLAYER_CLIENT_WIRE_TENSOR_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/tensor.pb.h"

namespace qlayer {

// F16/BF16/F32/I32/I64 have wire codes; other dtypes are INVALID_ARGUMENT.
absl::StatusOr<v1::DType> ToWireDType(DType t);
// DTYPE_UNSPECIFIED is INVALID_ARGUMENT (callers of the values form map it to
// f32 themselves, as the contract says).
absl::StatusOr<DType> FromWireDType(v1::DType t);

// Sets dtype, shape and `data` of `out` from `x` (copies the bytes; clears `values`).
absl::Status ToWireTensor(const ConstTensorView& x, v1::Tensor* out);

// Decodes either form. `data` must hold exactly product(shape) * size(dtype)
// bytes; `values` exactly product(shape) numbers (converted to dtype, f32 when
// unspecified). Setting both is INVALID_ARGUMENT.
absl::StatusOr<Tensor> FromWireTensor(const v1::Tensor& t);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_WIRE_TENSOR_H_
