// Scalar conversions between the activation dtypes (f16, bf16, f32) and f32
// for CPU kernels: the reference kernel's whole data path, and the edges
// (bias, tails) of the others. Compiled without ISA flags.
#ifndef QLAYER_KERNELS_CPU_CPU_CONVERT_H_
#define QLAYER_KERNELS_CPU_CPU_CONVERT_H_

#include <cstdint>

#include "qlayer/kernels/dtype.h"

namespace qlayer {

// dst[i] = float(src[i]) for i < n; src has dtype t (f16, bf16 or f32).
void ConvertToF32(const void* src, DType t, int64_t n, float* dst);
// dst[i] = src[i] rounded to dtype t (nearest even) for i < n.
void ConvertFromF32(const float* src, int64_t n, DType t, void* dst);

// Element i of an f16 / bf16 / f32 buffer as float (0 for other dtypes).
inline float LoadAsFloat(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kF16:
      return HalfToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kBF16:
      return Bf16ToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    default:
      return 0.0f;
  }
}

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_CPU_CONVERT_H_
