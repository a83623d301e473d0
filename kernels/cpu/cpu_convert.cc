#include "cpu/cpu_convert.h"

namespace qlayer {

void ConvertToF32(const void* src, DType t, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = LoadAsFloat(src, t, i);
}

void ConvertFromF32(const float* src, int64_t n, DType t, void* dst) {
  switch (t) {
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = FloatToHalf(src[i]);
      break;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(src[i]);
      break;
    }
    case DType::kF32: {
      auto* d = static_cast<float*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = src[i];
      break;
    }
    default:
      break;
  }
}

}  // namespace qlayer
