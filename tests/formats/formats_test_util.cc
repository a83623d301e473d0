#include "tests/formats/formats_test_util.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace qlayer::formats_test {

std::string SeedTrace(uint64_t salt) {
  return absl::StrCat("QLAYER_TEST_SEED=", TestSeed(), " salt=", salt);
}

std::vector<float> RandomWeights(int64_t N, int64_t K, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> spread(0.01f, 2.0f);
  std::uniform_int_distribution<int> outlier(0, 99);
  std::vector<float> w(static_cast<size_t>(N * K));
  for (int64_t n = 0; n < N; ++n) {
    const float row_scale = spread(rng);
    for (int64_t k = 0; k < K; ++k) {
      float v = normal(rng) * row_scale;
      if (outlier(rng) == 0) v *= 6.0f;
      w[static_cast<size_t>(n * K + k)] = v;
    }
  }
  return w;
}

Tensor RandomBias(int64_t N, DType dtype, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(N));
  for (double& x : v) x = u(rng);
  return FloatTensor(dtype, {N}, v);
}

Tensor I32Tensor(const Shape& shape, const std::vector<uint32_t>& words) {
  Tensor t = Tensor::Zeros(DType::kI32, shape);
  EXPECT_EQ(static_cast<int64_t>(words.size()), t.numel());
  std::memcpy(t.data(), words.data(), words.size() * 4);
  return t;
}

Tensor I64Tensor(const Shape& shape, const std::vector<int64_t>& values) {
  Tensor t = Tensor::Zeros(DType::kI64, shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.numel());
  std::memcpy(t.data(), values.data(), values.size() * 8);
  return t;
}

Tensor I8Tensor(const Shape& shape, const std::vector<int8_t>& values) {
  Tensor t = Tensor::Zeros(DType::kI8, shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.numel());
  std::memcpy(t.data(), values.data(), values.size());
  return t;
}

Tensor FloatTensor(DType dtype, const Shape& shape, const std::vector<double>& values) {
  Tensor t = Tensor::Zeros(dtype, shape);
  EXPECT_EQ(static_cast<int64_t>(values.size()), t.numel());
  for (size_t i = 0; i < values.size(); ++i) {
    StoreFromDouble(t.data(), dtype, static_cast<int64_t>(i), values[i]);
  }
  return t;
}

Tensor HalfBitsTensor(DType dtype, const Shape& shape, const std::vector<uint16_t>& bits) {
  Tensor t = Tensor::Zeros(dtype, shape);
  EXPECT_EQ(static_cast<int64_t>(bits.size()), t.numel());
  std::memcpy(t.data(), bits.data(), bits.size() * 2);
  return t;
}

double HalfBitsToDouble(uint16_t h) {
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f) return mant ? std::nan("") : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

double Bf16BitsToDouble(uint16_t b) {
  const double sign = (b & 0x8000) ? -1.0 : 1.0;
  const int exp = (b >> 7) & 0xff;
  const int mant = b & 0x7f;
  if (exp == 0xff) return mant ? std::nan("") : sign * INFINITY;
  if (exp == 0) return sign * std::ldexp(mant, -133);
  return sign * std::ldexp(128 + mant, exp - 134);
}

double RefLoad(const ConstTensorView& t, int64_t i) {
  uint16_t h;
  float f;
  switch (t.dtype) {
    case DType::kF16:
      std::memcpy(&h, static_cast<const char*>(t.data) + i * 2, 2);
      return HalfBitsToDouble(h);
    case DType::kBF16:
      std::memcpy(&h, static_cast<const char*>(t.data) + i * 2, 2);
      return Bf16BitsToDouble(h);
    case DType::kF32:
      std::memcpy(&f, static_cast<const char*>(t.data) + i * 4, 4);
      return f;
    default:
      ADD_FAILURE() << "RefLoad: unexpected dtype " << DTypeName(t.dtype);
      return std::nan("");
  }
}

void ExpectSameCanonical(const QuantizedLinear& want, const QuantizedLinear& got) {
  EXPECT_EQ(want.K, got.K);
  EXPECT_EQ(want.N, got.N);
  EXPECT_EQ(WeightTypeName(want.wtype), WeightTypeName(got.wtype));
  EXPECT_EQ(want.group_size, got.group_size);
  EXPECT_TRUE(SameTensor(want.qweight.view(), got.qweight.view())) << "qweight differs";
  EXPECT_TRUE(SameTensor(want.scales.view(), got.scales.view())) << "scales differ";
  EXPECT_TRUE(SameTensor(want.zeros.view(), got.zeros.view())) << "zeros differ";
  EXPECT_TRUE(SameTensor(want.g_idx.view(), got.g_idx.view()))
      << "g_idx differs (want " << (want.g_idx.empty() ? "none" : "present") << ", got "
      << (got.g_idx.empty() ? "none" : "present") << ")";
  EXPECT_TRUE(SameTensor(want.bias.view(), got.bias.view())) << "bias differs";
  EXPECT_TRUE(SameTensor(want.dense.view(), got.dense.view())) << "dense differs";
}

LayerScheme Scheme(CheckpointFormat format, int bits, int64_t group_size, bool sym,
                   bool act_order) {
  LayerScheme s;
  s.format = format;
  s.bits = bits;
  s.group_size = group_size;
  s.sym = sym;
  s.act_order = act_order;
  s.origin = std::string(CheckpointFormatName(format));
  return s;
}

}  // namespace qlayer::formats_test
