// .npy reading and writing: random round trips, hand-built headers for the
// variants numpy writes (v2.0, Fortran order, 0-d, empty), malformed files,
// and, when /usr/bin/python3 has numpy, files written and read by numpy.
#include "client/npy.h"

#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/file_bytes.h"
#include "gtest/gtest.h"
#include "tests/cli/cli_process_util.h"

namespace qlayer {
namespace {

using cli_testing::MakeTempDir;
using cli_testing::RemoveTree;
using cli_testing::RunProgram;
using cli_testing::TestSeed;

// Random bytes for any dtype; floats kept finite (f16 from random floats).
Tensor RandomTensor(DType dtype, Shape shape, std::mt19937_64& rng) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  std::uniform_real_distribution<double> dist(-8.0, 8.0);
  if (IsFloatActivation(dtype) || dtype == DType::kF64) {
    for (int64_t i = 0; i < t.numel(); ++i) StoreFromDouble(t.data(), dtype, i, dist(rng));
  } else {
    auto* bytes = static_cast<unsigned char*>(t.data());
    for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<unsigned char>(rng());
    if (dtype == DType::kBool) {
      for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] &= 1;
    }
  }
  return t;
}

// A .npy file with a given header dict and payload.
std::string NpyFile(const std::string& dict, absl::string_view payload, int major = 1) {
  std::string header = dict;
  const size_t len_bytes = major == 1 ? 2 : 4;
  while ((8 + len_bytes + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t i = 0; i < len_bytes; ++i)
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xff));
  return out + header + std::string(payload);
}

class NpyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = TestSeed();
    std::cout << "QLAYER_TEST_SEED=" << seed_ << "\n";
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(NpyTest, RoundTripsRandomArraysOfEveryDType) {
  const DType dtypes[] = {DType::kF16, DType::kF32, DType::kF64, DType::kI8,
                          DType::kU8,  DType::kI16, DType::kU16, DType::kI32,
                          DType::kU32, DType::kI64, DType::kU64, DType::kBool};
  std::uniform_int_distribution<int64_t> dim(0, 9);
  for (DType dtype : dtypes) {
    for (int rank = 0; rank <= 4; ++rank) {
      Shape shape;
      for (int r = 0; r < rank; ++r) shape.push_back(dim(rng_));
      const Tensor t = RandomTensor(dtype, shape, rng_);
      auto bytes = SerializeNpy(t.view());
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      // numpy aligns the data to 64 bytes; so do we.
      const size_t header_len = static_cast<unsigned char>((*bytes)[8]) |
                                static_cast<size_t>(static_cast<unsigned char>((*bytes)[9])) << 8;
      EXPECT_EQ((10 + header_len) % 64, 0u);
      auto back = ParseNpy(*bytes);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_TRUE(SameTensor(back->view(), t.view()))
          << DTypeName(dtype) << " " << ShapeToString(shape);
    }
  }
}

TEST_F(NpyTest, ReadsVersion2AndFortranOrder) {
  // A 3 x 4 f32 matrix stored column-major: element (i, j) at j * 3 + i.
  std::vector<float> col(12);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (float& v : col) v = dist(rng_);
  const std::string payload(reinterpret_cast<const char*>(col.data()), col.size() * 4);
  for (int major : {1, 2, 3}) {
    auto t = ParseNpy(
        NpyFile("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 4), }", payload, major));
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->shape(), (Shape{3, 4}));
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 4; ++j)
        EXPECT_EQ(t->as<float>()[i * 4 + j], col[j * 3 + i]) << i << "," << j;
    }
  }
}

TEST_F(NpyTest, ReadsScalarsAndEmptyArrays) {
  const float v = std::uniform_real_distribution<float>(1, 2)(rng_);
  auto scalar = ParseNpy(NpyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                                 absl::string_view(reinterpret_cast<const char*>(&v), 4)));
  ASSERT_TRUE(scalar.ok()) << scalar.status();
  EXPECT_TRUE(scalar->shape().empty());
  EXPECT_EQ(scalar->as<float>()[0], v);
  auto empty = ParseNpy(NpyFile("{'descr': '<f2', 'fortran_order': False, 'shape': (0, 5), }", ""));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->shape(), (Shape{0, 5}));
}

TEST_F(NpyTest, RejectsMalformedFiles) {
  const std::string good =
      NpyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", std::string(16, '\1'));
  ASSERT_TRUE(ParseNpy(good).ok());
  // Every truncation fails cleanly.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(ParseNpy(good.substr(0, n)).ok()) << "truncated to " << n;
  }
  EXPECT_FALSE(ParseNpy(good + "x").ok());  // trailing byte
  std::string bad_magic = good;
  bad_magic[1] = 'M';
  EXPECT_EQ(ParseNpy(bad_magic).status().code(), absl::StatusCode::kInvalidArgument);
  std::string bad_version = good;
  bad_version[6] = 9;
  EXPECT_EQ(ParseNpy(bad_version).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ParseNpy(NpyFile("{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
                             std::string(16, '\0')))
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(ParseNpy(NpyFile("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }",
                             std::string(16, '\0')))
                .status()
                .code(),
            absl::StatusCode::kUnimplemented);
  for (const char* dict : {"{'descr': '<f4', 'shape': (4,), }",
                           "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (4,), }",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': (4,",
                           "{'descr': '<f4', 'fortran_order': False, 'shape': "
                           "(99999999999, 99999999999, 99999999999), }",
                           "['descr', '<f4']"}) {
    EXPECT_EQ(ParseNpy(NpyFile(dict, std::string(16, '\0'))).status().code(),
              absl::StatusCode::kInvalidArgument)
        << dict;
  }
}

TEST_F(NpyTest, RefusesBf16BecauseNumpyHasNone) {
  Tensor t = Tensor::Zeros(DType::kBF16, {2});
  EXPECT_EQ(SerializeNpy(t.view()).status().code(), absl::StatusCode::kUnimplemented);
}

// Cross-check with numpy itself: it reads what we write (checked by value)
// and we read what it writes, C and Fortran order.
TEST_F(NpyTest, InteroperatesWithNumpy) {
  const std::string dir = MakeTempDir("qlayer_npy_");
  std::uniform_int_distribution<int64_t> dim(1, 7);
  const Tensor x = RandomTensor(DType::kF16, {dim(rng_), dim(rng_), dim(rng_)}, rng_);
  ASSERT_TRUE(WriteNpy(dir + "/x.npy", x.view()).ok());
  // numpy: checks the values we wrote (their sum in float64 against ours),
  // then writes them back C-order and as a Fortran-order f4 copy.
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += LoadAsDouble(x.data(), x.dtype(), i);
  const std::string script = absl::StrCat(
      "import numpy as np, sys\n"
      "a = np.load(sys.argv[1] + '/x.npy')\n"
      "assert a.dtype == np.float16 and a.shape == ",
      "(", x.dim(0), ", ", x.dim(1), ", ", x.dim(2), ")\n",
      "assert abs(float(a.astype(np.float64).sum()) - (", absl::StrFormat("%.17g", sum),
      ")) < 1e-9, a.sum()\n"
      "np.save(sys.argv[1] + '/c.npy', a)\n"
      "np.save(sys.argv[1] + '/f.npy', np.asfortranarray(a.astype('<f4')))\n");
  const auto run = RunProgram({"/usr/bin/python3", "-c", script, dir});
  if (run.exit_code != 0 && (run.output.find("No module named 'numpy'") != std::string::npos ||
                             run.output.find("cannot run") != std::string::npos)) {
    RemoveTree(dir);
    GTEST_SKIP() << "/usr/bin/python3 with numpy is needed: " << run.output;
  }
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto c = ReadNpy(dir + "/c.npy");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(SameTensor(c->view(), x.view()));
  auto f = ReadNpy(dir + "/f.npy");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ(f->shape(), x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(f->as<float>()[i], LoadAsDouble(x.data(), x.dtype(), i)) << i;
  }
  RemoveTree(dir);
}

}  // namespace
}  // namespace qlayer
