// The routing tensors of MoEForward (layer_service.proto): caller router
// logits [T, E] or top-k ids / weights [T, k] in, the chosen ids / weights
// out. Shapes against the block (T, E, k) are checked by MoERouter; this file
// checks what the wire can get wrong: dtype, rank, byte and value counts,
// ids sent as non-integral numbers. Errors are INVALID_ARGUMENT naming the
// layer and the field.
#ifndef QLAYER_SERVER_WIRE_MOE_CODEC_H_
#define QLAYER_SERVER_WIRE_MOE_CODEC_H_

#include <initializer_list>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/v1/tensor.pb.h"
#include "server/wire/tensor_codec.h"

namespace qlayer {

// True when the request set anything in `t` (shape, data or values).
bool TensorIsSet(const v1::Tensor& t);

// A 2-D tensor (a 1-D one is one row) of one of `allowed` dtypes; `values`
// without a dtype take the first allowed one. Integer dtypes from `values`
// must be integral and in range.
absl::StatusOr<DecodedInput> DecodeRoutingTensor(const v1::Tensor& t, absl::string_view field,
                                                 std::initializer_list<DType> allowed,
                                                 absl::string_view layer);

// ids [T, k] as DTYPE_I32 and weights [T, k] as DTYPE_F32, in `data` or
// (ENCODING_VALUES, or AUTO after a `values` request) as numbers.
void EncodeRouting(const Routing& routing, v1::Encoding encoding, bool request_used_values,
                   v1::Tensor* ids, v1::Tensor* weights);

}  // namespace qlayer

#endif  // QLAYER_SERVER_WIRE_MOE_CODEC_H_
