#include "qlayer/kernels/dtype.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qlayer {
namespace {

struct DTypeRow {
  DType type;
  size_t size;
  absl::string_view name;
  absl::string_view safetensors;
};

constexpr DTypeRow kRows[] = {
    {DType::kF16, 2, "f16", "F16"},
    {DType::kBF16, 2, "bf16", "BF16"},
    {DType::kF32, 4, "f32", "F32"},
    {DType::kF64, 8, "f64", "F64"},
    {DType::kI8, 1, "i8", "I8"},
    {DType::kU8, 1, "u8", "U8"},
    {DType::kI16, 2, "i16", "I16"},
    {DType::kU16, 2, "u16", "U16"},
    {DType::kI32, 4, "i32", "I32"},
    {DType::kU32, 4, "u32", "U32"},
    {DType::kI64, 8, "i64", "I64"},
    {DType::kU64, 8, "u64", "U64"},
    {DType::kBool, 1, "bool", "BOOL"},
    {DType::kF8E4M3, 1, "f8_e4m3", "F8_E4M3"},
    {DType::kF8E5M2, 1, "f8_e5m2", "F8_E5M2"},
};

const DTypeRow* Row(DType t) {
  for (const auto& r : kRows) {
    if (r.type == t) return &r;
  }
  return nullptr;
}

}  // namespace

size_t DTypeSize(DType t) {
  const DTypeRow* r = Row(t);
  return r ? r->size : 0;
}

absl::string_view DTypeName(DType t) {
  const DTypeRow* r = Row(t);
  return r ? r->name : "invalid";
}

absl::StatusOr<DType> DTypeFromSafetensors(absl::string_view code) {
  for (const auto& r : kRows) {
    if (r.safetensors == code) return r.type;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown safetensors dtype '", code, "'"));
}

absl::string_view DTypeToSafetensors(DType t) {
  const DTypeRow* r = Row(t);
  return r ? r->safetensors : "";
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof(x));
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // nan
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow (rounds to) inf
  if (abs < 0x38800000u) {                        // fp16 subnormal or zero: units of 2^-24
    float mag;
    std::memcpy(&mag, &abs, sizeof(mag));
    // Scaling by 2^24 is exact; nearbyint rounds half to even. 1024 lands on
    // the smallest normal's encoding, which is right.
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(mag * 16777216.0f)));
  }
  // Normal: rebias exponent, round mantissa to 10 bits (nearest even).
  uint32_t r = abs - ((127u - 15u) << 23);
  const uint32_t rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<uint16_t>(sign | r);
}

// Element i of `data` as double. memcpy, not a typed load: tensors inside a
// safetensors file start wherever the header puts them, so `data` need not be
// aligned for the type (UBSan: "load of misaligned address"); compilers turn
// these memcpys into plain loads.
namespace {
template <typename T>
T LoadAt(const void* data, int64_t i) {
  T v;
  std::memcpy(&v, static_cast<const unsigned char*>(data) + i * static_cast<int64_t>(sizeof(T)),
              sizeof(T));
  return v;
}
template <typename T>
void StoreAt(void* data, int64_t i, T v) {
  std::memcpy(static_cast<unsigned char*>(data) + i * static_cast<int64_t>(sizeof(T)), &v,
              sizeof(T));
}
}  // namespace

double LoadAsDouble(const void* data, DType t, int64_t i) {
  switch (t) {
    case DType::kF16:
      return HalfToFloat(LoadAt<uint16_t>(data, i));
    case DType::kBF16:
      return Bf16ToFloat(LoadAt<uint16_t>(data, i));
    case DType::kF32:
      return LoadAt<float>(data, i);
    case DType::kF64:
      return LoadAt<double>(data, i);
    default:
      return std::nan("");
  }
}

void StoreFromDouble(void* data, DType t, int64_t i, double v) {
  switch (t) {
    case DType::kF16:
      StoreAt<uint16_t>(data, i, FloatToHalf(static_cast<float>(v)));
      break;
    case DType::kBF16:
      StoreAt<uint16_t>(data, i, FloatToBf16(static_cast<float>(v)));
      break;
    case DType::kF32:
      StoreAt<float>(data, i, static_cast<float>(v));
      break;
    case DType::kF64:
      StoreAt<double>(data, i, v);
      break;
    default:
      break;
  }
}

}  // namespace qlayer
