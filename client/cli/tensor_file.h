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
// bf16 into .npy is refused here; callers widen first (see WriteAnswerFile).
absl::Status WriteTensorFile(const std::string& path, const ConstTensorView& t,
                             absl::string_view name = "output");

// Activations to send, from a file: converted to `dtype` ("f16", "bf16",
// "f32"), or when that is empty kept in the file's dtype, f64 sent as f32.
absl::StatusOr<Tensor> ReadActivationFile(const std::string& path, absl::string_view name,
                                          absl::string_view dtype);
// Writes an answer; a bf16 one into .npy is widened to f32 first (numpy has
// no bf16; every bf16 value is exactly an f32). Returns a note saying so for
// the printout, else "".
absl::StatusOr<std::string> WriteAnswerFile(const std::string& path, const ConstTensorView& y);

bool IsNpyPath(absl::string_view path);

// Float tensor -> `to` (f16, bf16, f32, f64), rounding to nearest even.
absl::StatusOr<Tensor> ConvertFloat(const ConstTensorView& t, DType to);

// "f16" | "bf16" | "f32" -> dtype; anything else INVALID_ARGUMENT.
absl::StatusOr<DType> ParseActivationDType(absl::string_view name);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_TENSOR_FILE_H_
