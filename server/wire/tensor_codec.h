// qlayer.v1.Tensor <-> validated tensor views. Requests are checked field by
// field before anything reads their bytes: dtype, rank, K, the row limit, and
// that `data` holds exactly numel * size bytes (or `values` exactly numel
// numbers). Every failure is INVALID_ARGUMENT naming the layer and the values.
#ifndef QLAYER_SERVER_WIRE_TENSOR_CODEC_H_
#define QLAYER_SERVER_WIRE_TENSOR_CODEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/dtype.h"
#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/tensor.pb.h"

namespace qlayer {

// kInvalid for DTYPE_UNSPECIFIED and unknown enum values.
DType FromProtoDType(v1::DType dtype);
// DTYPE_UNSPECIFIED for types the wire does not carry (f64, u8, ...).
v1::DType ToProtoDType(DType dtype);

// An activation input [M, K] taken from a request. `view` points either into
// the request's `data` bytes (so the request must outlive it) or into
// `owned` (the `values` path, converted to `view.dtype`).
struct DecodedInput {
  ConstTensorView view;
  Tensor owned;
  bool used_values = false;  // the request used `values`: ENCODING_AUTO answers in values
};

// Validates `t` as the input of layer `layer` with K = `K`, at most
// `max_rows` rows. A 1-D tensor [K] is one row; a tensor without shape is one
// row of all its elements. `values` without dtype means f32.
absl::StatusOr<DecodedInput> DecodeLinearInput(const v1::Tensor& t, int64_t K, int64_t max_rows,
                                               absl::string_view layer);

// Writes `y` into `out` as raw little-endian `data` or as `values` (floats).
// ENCODING_AUTO picks what the request used (`request_used_values`).
void EncodeTensor(const ConstTensorView& y, v1::Encoding encoding, bool request_used_values,
                  v1::Tensor* out);

}  // namespace qlayer

#endif  // QLAYER_SERVER_WIRE_TENSOR_CODEC_H_
