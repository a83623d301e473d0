// qlayer::Tensor <-> qlayer.v1.Tensor: both encodings, and malformed
// answers rejected with sizes in the message.
#include "client/wire_tensor.h"

#include <random>

#include "gtest/gtest.h"
#include "tests/cli/cli_process_util.h"

namespace qlayer {
namespace {

TEST(WireTensorTest, DataFormRoundTripsRandomTensors) {
  const uint64_t seed = cli_testing::TestSeed();
  std::cout << "QLAYER_TEST_SEED=" << seed << "\n";
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-4, 4);
  for (DType dtype : {DType::kF16, DType::kBF16, DType::kF32}) {
    Tensor t = Tensor::Zeros(dtype, {3, 17});
    for (int64_t i = 0; i < t.numel(); ++i) StoreFromDouble(t.data(), dtype, i, dist(rng));
    v1::Tensor wire;
    ASSERT_TRUE(ToWireTensor(t.view(), &wire).ok());
    EXPECT_EQ(wire.data().size(), t.nbytes());
    EXPECT_EQ(wire.values_size(), 0);
    auto back = FromWireTensor(wire);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_TRUE(SameTensor(back->view(), t.view())) << DTypeName(dtype);
  }
}

TEST(WireTensorTest, ValuesFormIsConvertedToTheDType) {
  v1::Tensor wire;
  wire.set_dtype(v1::DTYPE_F16);
  wire.add_shape(2);
  wire.add_shape(2);
  for (float v : {0.5f, -1.25f, 3.0f, 1e-3f}) wire.add_values(v);
  auto t = FromWireTensor(wire);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), DType::kF16);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(LoadAsDouble(t->data(), DType::kF16, i),
              static_cast<double>(HalfToFloat(FloatToHalf(wire.values(i)))));
  }
  wire.set_dtype(v1::DTYPE_UNSPECIFIED);  // values without dtype: f32
  t = FromWireTensor(wire);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), DType::kF32);
}

TEST(WireTensorTest, RejectsMalformedTensors) {
  v1::Tensor wire;
  wire.set_dtype(v1::DTYPE_F32);
  wire.add_shape(2);
  wire.add_shape(3);
  wire.set_data(std::string(23, '\0'));  // one byte short
  auto t = FromWireTensor(wire);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("24"), absl::string_view::npos) << t.status();
  wire.set_data(std::string(24, '\0'));
  wire.add_values(1);  // both forms
  EXPECT_FALSE(FromWireTensor(wire).ok());
  wire.clear_values();
  wire.set_dtype(static_cast<v1::DType>(77));
  EXPECT_FALSE(FromWireTensor(wire).ok());
  v1::Tensor huge;
  huge.set_dtype(v1::DTYPE_F32);
  huge.add_shape(int64_t{1} << 40);
  huge.add_shape(int64_t{1} << 40);
  EXPECT_FALSE(FromWireTensor(huge).ok());
  huge.set_shape(0, -1);
  EXPECT_FALSE(FromWireTensor(huge).ok());
}

}  // namespace
}  // namespace qlayer
