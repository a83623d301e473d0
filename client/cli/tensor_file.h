// Tensor files for qlayer-cli, chosen by extension:
//   .npy          numpy (client/npy.h): f16, f32, f64 (forward sends f64 as
//                 f32); no bf16, since numpy has no such dtype
//   .safetensors  any dtype, bf16 included; one tensor is read (the only one,
//                 or the one named), written under one name
#ifndef QLAYER_CLIENT_CLI_TENSOR_FILE_H_
#define QLAYER_CLIENT_CLI_TENSOR_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// `name` picks a tensor in a .safetensors file; empty picks the only one.
absl::StatusOr<Tensor> ReadTensorFile(const std::string& path, absl::string_view name = "");
// bf16 into .npy is refused here; callers widen first (see WidenForNpy).
absl::Status WriteTensorFile(const std::string& path, const ConstTensorView& t,
                             absl::string_view name = "output");

bool IsNpyPath(absl::string_view path);

// Float tensor -> `to` (f16, bf16, f32, f64), rounding to nearest even.
absl::StatusOr<Tensor> ConvertFloat(const ConstTensorView& t, DType to);

// "f16" | "bf16" | "f32" -> dtype; anything else INVALID_ARGUMENT.
absl::StatusOr<DType> ParseActivationDType(absl::string_view name);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_TENSOR_FILE_H_
