// safetensors reader and writer: hostile files get a clear INVALID_ARGUMENT
// (never a crash, never a view outside the file); written files read back
// bit-exactly.
#include "server/checkpoint/safetensors.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RawSafetensors;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::WriteFile;
using ::testing::HasSubstr;

class SafetensorsHostileTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(const std::string& bytes) {
    const std::string path = dir_.file("t.safetensors");
    WriteFile(path, bytes);
    return SafetensorsFile::Open(path);
  }
  void ExpectInvalid(const std::string& bytes, const std::string& substr) {
    auto f = OpenBytes(bytes);
    ASSERT_FALSE(f.ok()) << "accepted a hostile file; expected: " << substr;
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
    EXPECT_THAT(f.status().message(), HasSubstr(substr));
    EXPECT_THAT(f.status().message(), HasSubstr("t.safetensors")) << "error must name the file";
  }
  TempDir dir_;
};

// 16 bytes of F32 [2, 2].
const std::string kBuf16(16, '\x01');

TEST_F(SafetensorsHostileTest, EmptyFile) { ExpectInvalid("", "shorter than the 8-byte"); }

TEST_F(SafetensorsHostileTest, ShorterThanLength) { ExpectInvalid("\x05\0\0", "shorter than"); }

TEST_F(SafetensorsHostileTest, ZeroHeaderLength) {
  ExpectInvalid(RawSafetensors("", "", 0), "empty header");
}

TEST_F(SafetensorsHostileTest, HeaderLengthPastEnd) {
  ExpectInvalid(RawSafetensors("{}", "", 1000), "past the end of the file");
}

TEST_F(SafetensorsHostileTest, HeaderLengthHuge) {
  ExpectInvalid(RawSafetensors("{}", "", uint64_t{1} << 62), "100 MB");
}

TEST_F(SafetensorsHostileTest, HeaderNotObject) {
  ExpectInvalid(RawSafetensors("[1, 2]  ", ""), "does not start with '{'");
  ExpectInvalid(RawSafetensors(" {}", ""), "does not start with '{'");
}

TEST_F(SafetensorsHostileTest, BadJson) {
  ExpectInvalid(RawSafetensors(R"({"a": {"dtype": "F32",)", ""), "not valid JSON");
  ExpectInvalid(RawSafetensors("{}\x01", ""), "not valid JSON");
}

TEST_F(SafetensorsHostileTest, UnknownDtype) {
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}})", "\0"),
      "unknown safetensors dtype 'F4'");
}

TEST_F(SafetensorsHostileTest, MissingFields) {
  ExpectInvalid(RawSafetensors(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", kBuf16),
                "no string \"dtype\"");
  ExpectInvalid(RawSafetensors(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", kBuf16),
                "no array \"shape\"");
  ExpectInvalid(RawSafetensors(R"({"w": {"dtype": "F32", "shape": [2]}})", kBuf16), "data_offsets");
  ExpectInvalid(RawSafetensors(R"({"w": 3})", ""), "not a JSON object");
}

TEST_F(SafetensorsHostileTest, NegativeAndFractionalDims) {
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})",
                     kBuf16),
      "negative dimension -1");
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", "abcd"),
      "not an integer");
}

TEST_F(SafetensorsHostileTest, BadOffsets) {
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", kBuf16),
      "two non-negative integers");
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", kBuf16),
      "two non-negative integers");
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", kBuf16),
      "end 0 < begin 8");
}

TEST_F(SafetensorsHostileTest, ShapeTimesDtypeNotSpan) {
  ExpectInvalid(
      RawSafetensors(R"({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}})",
                     std::string(8, 'x')),
      "needs 16 bytes but data_offsets [0, 8] span 8");
}

TEST_F(SafetensorsHostileTest, ShapeProductOverflows) {
  ExpectInvalid(
      RawSafetensors(
          R"({"w": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}})",
          ""),
      "overflows");
  // Product fits int64 but times 8 bytes does not.
  ExpectInvalid(
      RawSafetensors(
          R"({"w": {"dtype": "F64", "shape": [2305843009213693952], "data_offsets": [0, 0]}})", ""),
      "overflows");
}

TEST_F(SafetensorsHostileTest, OverlappingTensors) {
  ExpectInvalid(RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                               std::string(12, 'x')),
                "overlaps");
  // The same bytes twice (aliasing views).
  ExpectInvalid(RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})",
                               std::string(8, 'x')),
                "overlaps");
}

TEST_F(SafetensorsHostileTest, HoleInBuffer) {
  ExpectInvalid(RawSafetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}})",
                               kBuf16),
                "hole in the byte buffer: bytes [8, 12)");
  ExpectInvalid(RawSafetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                               std::string(8, 'x')),
                "bytes [0, 4)");
}

TEST_F(SafetensorsHostileTest, OffsetsPastBuffer) {
  ExpectInvalid(
      RawSafetensors(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", "abcd"),
      "byte buffer is 4 bytes but the tensors need 16");
  ExpectInvalid(
      RawSafetensors(
          R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [18446744073709551614, 18446744073709551615]}})",
          "abcd"),
      "bytes [0, 18446744073709551614)");
}

TEST_F(SafetensorsHostileTest, TrailingBytes) {
  ExpectInvalid(
      RawSafetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", "abcdXY"),
      "2 trailing bytes");
}

TEST_F(SafetensorsHostileTest, TruncatedRealFile) {
  std::mt19937_64 rng(testing::TestSeed());
  NamedTensors t;
  t.emplace("w", testing::RandomTensor(DType::kF16, {8, 16}, rng));
  const std::string path = dir_.file("good.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, t).ok());
  const std::string bytes = testing::ReadFile(path);
  for (size_t cut : {size_t{1}, size_t{100}, bytes.size() - 8, bytes.size() - 3}) {
    SCOPED_TRACE(cut);
    auto f = OpenBytes(bytes.substr(0, bytes.size() - cut));
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  }
  ExpectInvalid(bytes.substr(0, bytes.size() - 1), "file truncated?");
}

TEST_F(SafetensorsHostileTest, DeeplyNestedHeader) {
  // A million nested arrays: must not overflow the stack while parsing or
  // destroying the JSON; nesting past kMaxJsonDepth is refused up front.
  const int depth = 1000000;
  ExpectInvalid(
      RawSafetensors("{\"a\": " + std::string(depth, '[') + std::string(depth, ']') + "}", ""),
      "nests deeper than 128 levels");
}

// Regression (fuzz/regressions/safetensors/deep-shape-entry): a shape entry
// nested 200000 deep overflowed the stack in the error message's dump().
TEST_F(SafetensorsHostileTest, DeeplyNestedShapeEntry) {
  const int depth = 200000;
  ExpectInvalid(RawSafetensors(R"({"t": {"dtype": "F16", "shape": [)" + std::string(depth, '[') +
                                   std::string(depth, ']') + R"(], "data_offsets": [0, 0]}})",
                               ""),
                "nests deeper than 128 levels");
  // 128 levels are still JSON we read (the shape entry is then just wrong).
  ExpectInvalid(RawSafetensors(R"({"t": {"dtype": "F16", "shape": [)" + std::string(125, '[') +
                                   std::string(125, ']') + R"(], "data_offsets": [0, 0]}})",
                               ""),
                "shape entry that is not an integer");
}

TEST_F(SafetensorsHostileTest, BracketsInsideStringsAreNotNesting) {
  // Tensor names and metadata may hold any characters; only structure counts.
  // JSON text [[[...\"{ : an escaped quote must not end the string early.
  const std::string name = std::string(500, '[') + "\\\"{";
  auto f = OpenBytes(
      RawSafetensors(R"({"__metadata__": {"m": ")" + std::string(500, '{') + R"("}, ")" + name +
                         R"(": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}})",
                     kBuf16));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_NE((*f)->Find(std::string(500, '[') + "\"{"), nullptr);
  EXPECT_EQ((*f)->metadata().at("m"), std::string(500, '{'));
}

TEST_F(SafetensorsHostileTest, BadMetadata) {
  ExpectInvalid(RawSafetensors(R"({"__metadata__": {"format": 1}})", ""),
                "__metadata__ value of 'format' is not a string");
  ExpectInvalid(RawSafetensors(R"({"__metadata__": [1]})", ""), "__metadata__ is not an object");
}

TEST_F(SafetensorsHostileTest, MissingFileIsNotFound) {
  auto f = SafetensorsFile::Open(dir_.file("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  auto d = SafetensorsFile::Open(dir_.path());
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(d.status().message(), HasSubstr("not a regular file"));
}

TEST_F(SafetensorsHostileTest, AcceptsPaddingZeroSizeAndEmpty) {
  // Space padding, a zero-size tensor at the same offset as another, metadata.
  auto f = OpenBytes(RawSafetensors(
      R"({"__metadata__": {"format": "pt"}, "z": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
          "a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}       )",
      std::string("\x01\0\0\0\x02\0\0\0", 8)));
  ASSERT_TRUE(f.ok()) << f.status();
  const ConstTensorView* a = (*f)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->as<int32_t>()[0], 1);
  EXPECT_EQ(a->as<int32_t>()[1], 2);
  const ConstTensorView* z = (*f)->Find("z");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->numel(), 0);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->Find("missing"), nullptr);
  // A header with no tensors at all is a valid, empty file.
  auto e = OpenBytes(RawSafetensors("{}", ""));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_TRUE((*e)->TensorNames().empty());
}

TEST(SafetensorsRoundTripTest, EveryDtypeAndShape) {
  std::mt19937_64 rng(testing::TestSeed());
  TempDir dir;
  NamedTensors t;
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32,  DType::kF64,    DType::kI8,
                          DType::kU8,  DType::kI16,  DType::kU16,  DType::kI32,    DType::kU32,
                          DType::kI64, DType::kU64,  DType::kBool, DType::kF8E4M3, DType::kF8E5M2};
  int i = 0;
  for (DType d : dtypes) {
    // Odd sizes so later tensors start unaligned within the buffer.
    t.emplace("t" + std::to_string(i++) + "." + std::string(DTypeName(d)),
              testing::RandomTensor(d, {static_cast<int64_t>(1 + rng() % 7), 3}, rng));
  }
  t.emplace("scalar", testing::RandomTensor(DType::kF32, {}, rng));
  t.emplace("empty", testing::RandomTensor(DType::kF16, {0, 5}, rng));
  const std::string path = dir.file("rt.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, t, {{"k", "v"}}).ok());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  const std::string bytes = testing::ReadFile(path);
  uint64_t header_len = 0;
  for (int b = 7; b >= 0; --b) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[b]);
  EXPECT_EQ(header_len % 8, 0u) << "header must be padded to 8 bytes";

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("k"), "v");
  EXPECT_EQ((*f)->TensorNames().size(), t.size());
  for (const auto& [name, tensor] : t) {
    const ConstTensorView* v = (*f)->Find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_TRUE(SameTensor(*v, tensor.view())) << name;
  }
}

// Regression (fuzz/regressions/moe_catalog/invalid-utf8-tensor-name): a name
// that is not UTF-8 made nlohmann's dump() throw out of WriteSafetensors.
TEST(SafetensorsWriterTest, RejectsNamesThatAreNotUtf8) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  NamedTensors t;
  t.emplace("model.\x87layer.weight", Tensor::Zeros(DType::kF16, {2, 2}));
  absl::Status s = WriteSafetensors(path, t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(s.message(), HasSubstr("not valid UTF-8"));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  NamedTensors ok;
  ok.emplace("w", Tensor::Zeros(DType::kF16, {2, 2}));
  s = WriteSafetensors(path, ok, {{"format", "p\xfft"}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

TEST(SafetensorsWriterTest, RejectsUnstorable) {
  TempDir dir;
  NamedTensors t;
  t.emplace("w", Tensor());
  const absl::Status s = WriteSafetensors(dir.file("x.safetensors"), t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("'w' has no data"));
}

}  // namespace
}  // namespace qlayer
