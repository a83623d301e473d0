// server/wire: request tensors are validated before anything reads them, and
// outputs are encoded the way the caller asked.
#include <cstring>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "server/wire/status_codec.h"
#include "server/wire/tensor_codec.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RandomInput;
using ::qlayer::testing::TestSeed;
using ::qlayer::testing::ToWire;

constexpr int64_t kK = 24;
constexpr int64_t kMaxRows = 8;

TEST(DecodeLinearInput, DataPathIsAViewOfTheRequestBytes) {
  std::mt19937_64 rng(TestSeed());
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    Tensor x = RandomInput(dt, 3, kK, rng);
    v1::Tensor wire = ToWire(x.view());
    auto in = DecodeLinearInput(wire, kK, kMaxRows, "L");
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ(in->view.dtype, dt);
    EXPECT_EQ(in->view.shape, (Shape{3, kK}));
    EXPECT_EQ(in->view.data, wire.data().data());  // no copy
    EXPECT_FALSE(in->used_values);
    EXPECT_TRUE(SameTensor(in->view, x.view()));
  }
}

TEST(DecodeLinearInput, OneDimensionalInputIsOneRow) {
  std::mt19937_64 rng(TestSeed() + 1);
  Tensor x = RandomInput(DType::kF16, 1, kK, rng);
  v1::Tensor wire = ToWire(x.view());
  wire.clear_shape();
  wire.add_shape(kK);
  auto in = DecodeLinearInput(wire, kK, kMaxRows, "L");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->view.shape, (Shape{1, kK}));
  // No shape at all: one row of everything sent.
  wire.clear_shape();
  in = DecodeLinearInput(wire, kK, kMaxRows, "L");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->view.shape, (Shape{1, kK}));
}

TEST(DecodeLinearInput, ValuesAreConvertedToTheDtypeAndDefaultToF32) {
  std::mt19937_64 rng(TestSeed() + 2);
  std::uniform_real_distribution<float> u(-4, 4);
  v1::Tensor wire;
  wire.add_shape(2);
  wire.add_shape(kK);
  for (int i = 0; i < 2 * kK; ++i) wire.add_values(u(rng));
  auto in = DecodeLinearInput(wire, kK, kMaxRows, "L");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->view.dtype, DType::kF32);
  EXPECT_TRUE(in->used_values);
  for (int i = 0; i < 2 * kK; ++i) EXPECT_EQ(in->view.as<float>()[i], wire.values(i));

  wire.set_dtype(v1::DTYPE_BF16);
  in = DecodeLinearInput(wire, kK, kMaxRows, "L");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->view.dtype, DType::kBF16);
  for (int i = 0; i < 2 * kK; ++i) {
    EXPECT_EQ(in->view.as<uint16_t>()[i], FloatToBf16(wire.values(i)));
  }
}

// Every malformed input is INVALID_ARGUMENT and the message carries the
// numbers a caller needs to fix it.
struct BadCase {
  const char* name;
  void (*mutate)(v1::Tensor&);
  const char* expect_in_message;
};

TEST(DecodeLinearInput, MalformedInputsAreInvalidArgumentWithValues) {
  std::mt19937_64 rng(TestSeed() + 3);
  Tensor x = RandomInput(DType::kF16, 2, kK, rng);
  const BadCase cases[] = {
      {"integer dtype", [](v1::Tensor& t) { t.set_dtype(v1::DTYPE_I32); }, "DTYPE_I32"},
      {"no dtype with data", [](v1::Tensor& t) { t.set_dtype(v1::DTYPE_UNSPECIFIED); }, "no dtype"},
      {"wrong K",
       [](v1::Tensor& t) {
         t.set_shape(1, kK + 8);
         t.mutable_data()->append(2 * 8 * 2, '\0');
       },
       "K=24"},
      {"truncated data", [](v1::Tensor& t) { t.mutable_data()->resize(t.data().size() - 3); },
       "93 bytes, expected 96"},
      {"oversized data", [](v1::Tensor& t) { t.mutable_data()->append(2, '\0'); },
       "98 bytes, expected 96"},
      {"rank 3",
       [](v1::Tensor& t) {
         t.clear_shape();
         t.add_shape(1);
         t.add_shape(2);
         t.add_shape(kK);
       },
       "[1, 2, 24]"},
      {"zero rows", [](v1::Tensor& t) { t.set_shape(0, 0); }, "no rows"},
      {"negative rows", [](v1::Tensor& t) { t.set_shape(0, -2); }, "[-2, 24]"},
      {"too many rows",
       [](v1::Tensor& t) {
         t.set_shape(0, kMaxRows + 1);
         t.mutable_data()->resize((kMaxRows + 1) * kK * 2);
       },
       "9 rows, above the server's limit of 8"},
      {"both data and values", [](v1::Tensor& t) { t.add_values(1.0f); }, "set one"},
      {"values count",
       [](v1::Tensor& t) {
         t.clear_data();
         t.add_values(1.0f);
       },
       "1 values, expected 48"},
  };
  for (const BadCase& c : cases) {
    v1::Tensor wire = ToWire(x.view());
    c.mutate(wire);
    auto in = DecodeLinearInput(wire, kK, kMaxRows, "model.q");
    ASSERT_FALSE(in.ok()) << c.name;
    EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(in.status().message().find(c.expect_in_message), absl::string_view::npos)
        << c.name << ": " << in.status();
    EXPECT_NE(in.status().message().find("model.q"), absl::string_view::npos) << c.name;
  }
}

TEST(EncodeTensor, AutoAnswersInTheRequestsEncoding) {
  std::mt19937_64 rng(TestSeed() + 4);
  Tensor y = RandomInput(DType::kBF16, 2, 5, rng);
  v1::Tensor data, values, forced_data, forced_values;
  EncodeTensor(y.view(), v1::ENCODING_AUTO, /*request_used_values=*/false, &data);
  EncodeTensor(y.view(), v1::ENCODING_AUTO, /*request_used_values=*/true, &values);
  EncodeTensor(y.view(), v1::ENCODING_DATA, /*request_used_values=*/true, &forced_data);
  EncodeTensor(y.view(), v1::ENCODING_VALUES, /*request_used_values=*/false, &forced_values);
  for (const v1::Tensor* t : {&data, &forced_data}) {
    EXPECT_EQ(t->dtype(), v1::DTYPE_BF16);
    EXPECT_EQ(t->shape_size(), 2);
    EXPECT_EQ(t->values_size(), 0);
    ASSERT_EQ(t->data().size(), y.nbytes());
    EXPECT_EQ(std::memcmp(t->data().data(), y.data(), y.nbytes()), 0);
  }
  for (const v1::Tensor* t : {&values, &forced_values}) {
    EXPECT_TRUE(t->data().empty());
    ASSERT_EQ(t->values_size(), 10);
    for (int i = 0; i < 10; ++i) EXPECT_EQ(t->values(i), LoadAsDouble(y.data(), y.dtype(), i));
  }
}

TEST(StatusCodec, CodesAndMessagesSurviveBothWireForms) {
  const absl::Status s = absl::ResourceExhaustedError("queue full (5 waiting)");
  const google::rpc::Status rpc = ToRpcStatus(s);
  EXPECT_EQ(rpc.code(), 8);
  EXPECT_EQ(rpc.message(), "queue full (5 waiting)");
  const grpc::Status g = ToGrpcStatus(s);
  EXPECT_EQ(g.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(g.error_message(), "queue full (5 waiting)");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_STREQ(StatusCodeName(absl::StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
}

}  // namespace
}  // namespace qlayer
