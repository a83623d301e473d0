// Element types of tensors qlayer reads from checkpoints and exchanges on the
// wire, and the scalar conversions between fp16 / bf16 and float.
#ifndef QLAYER_KERNELS_DTYPE_H_
#define QLAYER_KERNELS_DTYPE_H_

#include <cstdint>
#include <cstring>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace qlayer {

enum class DType : uint8_t {
  kInvalid = 0,
  kF16,
  kBF16,
  kF32,
  kF64,
  kI8,
  kU8,
  kI16,
  kU16,
  kI32,
  kU32,
  kI64,
  kU64,
  kBool,
  kF8E4M3,
  kF8E5M2,
};

// Bytes per element (0 for kInvalid).
size_t DTypeSize(DType t);
// Lower-case name used in messages and on the wire ("f16", "bf16", "i32", ...).
absl::string_view DTypeName(DType t);
// safetensors spelling ("F16", "BF16", "I32", ...); unknown codes are an error.
absl::StatusOr<DType> DTypeFromSafetensors(absl::string_view code);
absl::string_view DTypeToSafetensors(DType t);
// True for the activation / scale float types qlayer computes with.
inline bool IsFloatActivation(DType t) {
  return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32;
}

// IEEE binary16 <-> float, round-to-nearest-even, inf/nan preserved.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);

// bfloat16 <-> float, round-to-nearest-even, nan kept quiet.
inline float Bf16ToFloat(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline uint16_t FloatToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Reads element i of a buffer of float type t (f16, bf16, f32, f64) as double.
double LoadAsDouble(const void* data, DType t, int64_t i);
// Writes v to element i of a buffer of float type t (f16, bf16, f32, f64).
void StoreFromDouble(void* data, DType t, int64_t i, double v);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_DTYPE_H_
