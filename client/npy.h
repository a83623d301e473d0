// numpy's .npy format (NEP 1 / numpy.lib.format), versions 1.0, 2.0 and 3.0:
//   "\x93NUMPY" major minor, header length (u16 LE for 1.0, u32 LE after),
//   a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
//   padded with spaces and a final '\n' to a multiple of 64 bytes, then the raw
//   elements.
// Little-endian (or byte-order-free) floats and integers only: '<f2' '<f4'
// '<f8' '|i1' '|u1' '<i2' '<u2' '<i4' '<u4' '<i8' '<u8' '|b1'. numpy has no
// bfloat16 dtype, so bf16 tensors are not representable: callers keep them in
// .safetensors (or widen to f32, which is exact). Fortran-order arrays are
// read and transposed to row-major; writing is always C order.
#ifndef QLAYER_CLIENT_NPY_H_
#define QLAYER_CLIENT_NPY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// Parses a whole .npy file held in memory. Every length, dim and size is
// checked against `bytes` (INVALID_ARGUMENT naming the problem);
// big-endian and other unsupported dtypes are UNIMPLEMENTED.
absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes);
absl::StatusOr<Tensor> ReadNpy(const std::string& path);

// Version 1.0 unless the header needs more than 65535 bytes (then 2.0).
// bf16 and f8 are UNIMPLEMENTED (numpy cannot name them).
absl::StatusOr<std::string> SerializeNpy(const ConstTensorView& t);
absl::Status WriteNpy(const std::string& path, const ConstTensorView& t);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_NPY_H_
