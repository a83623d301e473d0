// The float64 reference qlayer-cli verify compares a server's answer with:
// the layer decoded from the same checkpoint the server loaded (same reader,
// QuantConfig and format decoders), dequantized element by element with
// QuantizedLinear::Dequant, and multiplied in double.
#ifndef QLAYER_CLIENT_CLI_REFERENCE_H_
#define QLAYER_CLIENT_CLI_REFERENCE_H_

#include <string>

#include "absl/status/statusor.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// Opens `model_dir` and decodes linear layer `layer` (NOT_FOUND naming the
// layers there when absent).
absl::StatusOr<QuantizedLinear> LoadReferenceLayer(const std::string& model_dir,
                                                   const std::string& layer);

// y = x W^T + b in double: x is [M, K] (or [K]) of any float dtype; returns
// f64 [M, N] (or [N]).
absl::StatusOr<Tensor> ReferenceForward(const QuantizedLinear& w, const ConstTensorView& x);

// ||out - ref|| / ||ref|| over all elements (both float tensors of one
// shape); +inf when shapes differ or out has a NaN/inf.
double RelativeError(const ConstTensorView& out, const ConstTensorView& ref);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_REFERENCE_H_
