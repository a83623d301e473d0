// Malformed or out-of-scope layers are rejected with the right code and a
// message naming the layer, the format and the offending tensor. Each case
// starts from a valid encoded layer and breaks one thing.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/formats.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

constexpr char kPrefix[] = "model.layers.7.self_attn.k_proj";
std::string Name(absl::string_view s) { return absl::StrCat(kPrefix, ".", s); }

constexpr CheckpointFormat kQuantizedFormats[] = {
    CheckpointFormat::kGptq, CheckpointFormat::kGptqV2, CheckpointFormat::kAwq,
    CheckpointFormat::kCtPackQuantized, CheckpointFormat::kCtIntQuantized};

WeightType TypeFor(int bits, bool sym) {
  if (bits == 4) return sym ? WeightType::kUint4b8 : WeightType::kUint4;
  return sym ? WeightType::kUint8b128 : WeightType::kUint8;
}

QuantizedLinear MakeWeight(int bits, int64_t group, bool sym, bool act_order, int64_t K, int64_t N,
                           uint64_t salt) {
  std::mt19937_64 rng(TestSeed() ^ salt);
  const std::vector<float> dense = RandomWeights(N, K, rng);
  QuantizeOptions opt;
  opt.wtype = TypeFor(bits, sym);
  opt.group_size = group;
  opt.act_order = act_order;
  opt.seed = rng();
  absl::StatusOr<QuantizedLinear> w = QuantizeRtn(dense.data(), N, K, opt);
  EXPECT_TRUE(w.ok()) << w.status();
  return std::move(w).value();
}

// A valid layer in `format` (K = 128, N = 32, groups of 32) and its scheme.
struct Layer {
  NamedTensors t;
  LayerScheme scheme;
};
Layer ValidLayer(CheckpointFormat format, bool sym = false, bool act_order = false, int bits = 4) {
  Layer l;
  l.scheme = Scheme(format, bits, 32, sym, act_order);
  l.scheme.origin = "auto-round:test";  // messages show where the scheme came from
  const QuantizedLinear w = MakeWeight(bits, 32, sym, act_order, 128, 32, 99);
  const absl::Status s = EncodeLinear(w, kPrefix, l.scheme, l.t);
  EXPECT_TRUE(s.ok()) << s;
  return l;
}

std::string ScalesName(CheckpointFormat f) {
  return f == CheckpointFormat::kCtPackQuantized || f == CheckpointFormat::kCtIntQuantized
             ? "weight_scale"
             : "scales";
}

// Decoding fails with `code`; the message names the layer, the format and
// each string in `mentions`.
void ExpectDecodeError(const NamedTensors& t, const LayerScheme& scheme, absl::StatusCode code,
                       std::vector<std::string> mentions) {
  absl::StatusOr<QuantizedLinear> w = DecodeLinear(NamedTensorSource(t), kPrefix, scheme);
  ASSERT_FALSE(w.ok()) << "decoded a malformed layer (" << CheckpointFormatName(scheme.format)
                       << ")";
  EXPECT_EQ(w.status().code(), code) << w.status();
  mentions.push_back(kPrefix);
  mentions.push_back(std::string(CheckpointFormatName(scheme.format)));
  for (const std::string& m : mentions) {
    EXPECT_NE(w.status().message().find(m), absl::string_view::npos)
        << "message does not mention '" << m << "': " << w.status();
  }
}

void ExpectEncodeError(const QuantizedLinear& w, const LayerScheme& scheme,
                       std::vector<std::string> mentions) {
  NamedTensors out;
  const absl::Status s = EncodeLinear(w, kPrefix, scheme, out);
  ASSERT_FALSE(s.ok()) << "encoded an unrepresentable weight";
  EXPECT_TRUE(out.empty()) << "a failed encode must not write";
  mentions.push_back(kPrefix);
  for (const std::string& m : mentions) {
    EXPECT_NE(s.message().find(m), absl::string_view::npos)
        << "message does not mention '" << m << "': " << s;
  }
}

TEST(RejectionTest, TwoAndThreeBitsAreUnimplemented) {
  SCOPED_TRACE(SeedTrace(99));
  for (CheckpointFormat f : kQuantizedFormats) {
    Layer l = ValidLayer(f);
    for (int bits : {2, 3}) {
      l.scheme.bits = bits;
      ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kUnimplemented,
                        {absl::StrCat("bits=", bits)});
    }
  }
}

TEST(RejectionTest, AwqEightBitIsUnimplemented) {
  SCOPED_TRACE(SeedTrace(99));
  Layer l = ValidLayer(CheckpointFormat::kAwq);
  l.scheme.bits = 8;
  ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kUnimplemented, {"bits=8"});
  const QuantizedLinear w8 = MakeWeight(8, 32, false, false, 128, 32, 5);
  NamedTensors out;
  const absl::Status s = EncodeLinear(w8, kPrefix, l.scheme, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
}

TEST(RejectionTest, MissingTensors) {
  SCOPED_TRACE(SeedTrace(99));
  struct Missing {
    CheckpointFormat f;
    std::string suffix;
    bool act_order;
  };
  const std::vector<Missing> cases = {
      {CheckpointFormat::kGptq, "qweight", false},
      {CheckpointFormat::kGptq, "scales", false},
      {CheckpointFormat::kGptq, "qzeros", false},
      {CheckpointFormat::kGptqV2, "g_idx", true},
      {CheckpointFormat::kAwq, "qweight", false},
      {CheckpointFormat::kAwq, "scales", false},
      {CheckpointFormat::kAwq, "qzeros", false},
      {CheckpointFormat::kCtPackQuantized, "weight_packed", false},
      {CheckpointFormat::kCtPackQuantized, "weight_shape", false},
      {CheckpointFormat::kCtPackQuantized, "weight_scale", false},
      {CheckpointFormat::kCtPackQuantized, "weight_zero_point", false},
      {CheckpointFormat::kCtPackQuantized, "weight_g_idx", true},
      {CheckpointFormat::kCtIntQuantized, "weight", false},
      {CheckpointFormat::kCtIntQuantized, "weight_scale", false},
      {CheckpointFormat::kCtIntQuantized, "weight_zero_point", false},
  };
  for (const Missing& m : cases) {
    SCOPED_TRACE(absl::StrCat(CheckpointFormatName(m.f), " without ", m.suffix));
    Layer l = ValidLayer(m.f, /*sym=*/false, m.act_order);
    ASSERT_EQ(l.t.erase(Name(m.suffix)), 1u);
    ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument,
                      {Name(m.suffix), "missing"});
  }
}

TEST(RejectionTest, WrongDtypeForARole) {
  SCOPED_TRACE(SeedTrace(99));
  struct Wrong {
    CheckpointFormat f;
    std::string suffix;
    DType dtype;
  };
  const std::vector<Wrong> cases = {
      {CheckpointFormat::kGptq, "qweight", DType::kF32},  // same bytes, wrong role
      {CheckpointFormat::kGptq, "scales", DType::kI32},
      {CheckpointFormat::kGptq, "qzeros", DType::kF32},
      {CheckpointFormat::kGptq, "g_idx", DType::kI64},
      {CheckpointFormat::kAwq, "qweight", DType::kU32},
      {CheckpointFormat::kAwq, "scales", DType::kF64},
      {CheckpointFormat::kCtPackQuantized, "weight_packed", DType::kU32},
      {CheckpointFormat::kCtPackQuantized, "weight_scale", DType::kI32},
      {CheckpointFormat::kCtPackQuantized, "weight_shape", DType::kI16},
      {CheckpointFormat::kCtIntQuantized, "weight", DType::kU8},
      {CheckpointFormat::kCtIntQuantized, "weight_zero_point", DType::kI32},  // naive never packs
  };
  for (const Wrong& c : cases) {
    SCOPED_TRACE(
        absl::StrCat(CheckpointFormatName(c.f), " ", c.suffix, " as ", DTypeName(c.dtype)));
    Layer l = ValidLayer(c.f);
    Tensor& t = l.t.at(Name(c.suffix));
    t = Tensor::Zeros(c.dtype, t.shape());
    ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument,
                      {Name(c.suffix), std::string(DTypeName(c.dtype))});
  }
  // A bias must be a float type too.
  Layer l = ValidLayer(CheckpointFormat::kGptq);
  l.t.insert_or_assign(Name("bias"), Tensor::Zeros(DType::kI32, {32}));
  ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument, {Name("bias"), "i32"});
}

TEST(RejectionTest, MisShapedScalesZerosGIdx) {
  SCOPED_TRACE(SeedTrace(99));
  // K = 128, N = 32, 4 groups.
  struct Bad {
    CheckpointFormat f;
    std::string suffix;
    Shape shape;
    bool act_order;
  };
  const std::vector<Bad> cases = {
      {CheckpointFormat::kGptq, "scales", {5, 32}, false},
      {CheckpointFormat::kGptq, "scales", {32, 4}, false},
      {CheckpointFormat::kGptq, "qzeros", {4, 5}, false},
      {CheckpointFormat::kGptq, "g_idx", {127}, true},
      {CheckpointFormat::kGptq, "bias", {33}, false},
      {CheckpointFormat::kAwq, "scales", {4, 31}, false},
      {CheckpointFormat::kAwq, "qzeros", {3, 4}, false},
      {CheckpointFormat::kCtPackQuantized, "weight_scale", {4, 32}, false},  // GPTQ orientation
      {CheckpointFormat::kCtPackQuantized, "weight_zero_point", {4, 5}, false},
      {CheckpointFormat::kCtPackQuantized, "weight_packed", {32, 15}, false},
      {CheckpointFormat::kCtPackQuantized, "weight_shape", {3}, false},
      {CheckpointFormat::kCtPackQuantized, "weight_g_idx", {129}, true},
      {CheckpointFormat::kCtIntQuantized, "weight_zero_point", {32, 3}, false},
  };
  for (const Bad& c : cases) {
    SCOPED_TRACE(
        absl::StrCat(CheckpointFormatName(c.f), " ", c.suffix, " as ", ShapeToString(c.shape)));
    Layer l = ValidLayer(c.f, false, c.act_order);
    if (c.suffix == "bias") l.t.emplace(Name("bias"), Tensor::Zeros(DType::kF16, {32}));
    Tensor& t = l.t.at(Name(c.suffix));
    t = Tensor::Zeros(t.dtype(), c.shape);
    ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument,
                      {Name(c.suffix), ShapeToString(c.shape)});
  }
}

TEST(RejectionTest, GIdxOutOfRange) {
  SCOPED_TRACE(SeedTrace(99));
  for (CheckpointFormat f : {CheckpointFormat::kGptq, CheckpointFormat::kCtPackQuantized}) {
    const std::string suffix = f == CheckpointFormat::kGptq ? "g_idx" : "weight_g_idx";
    for (int32_t bad : {4, -1, 1000}) {  // 4 groups: valid values are 0..3
      Layer l = ValidLayer(f, false, true);
      l.t.at(Name(suffix)).as<int32_t>()[5] = bad;
      ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument,
                        {Name(suffix), absl::StrCat(bad)});
    }
  }
}

TEST(RejectionTest, KNotDivisibleByGroup) {
  SCOPED_TRACE(SeedTrace(99));
  for (CheckpointFormat f : kQuantizedFormats) {
    Layer l = ValidLayer(f);
    l.scheme.group_size = 48;  // K = 128
    ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument,
                      {"K=128", "group_size 48"});
  }
  // Tensor strategy (group 0) is a compressed-tensors notion only.
  Layer l = ValidLayer(CheckpointFormat::kGptq);
  l.scheme.group_size = 0;
  ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument, {"group_size 0"});
  const std::vector<float> dense(32 * 96, 1.0f);
  QuantizeOptions opt;
  opt.group_size = 64;
  EXPECT_EQ(QuantizeRtn(dense.data(), 32, 96, opt).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RejectionTest, ColumnsNotPackable) {
  SCOPED_TRACE(SeedTrace(99));
  // GPTQ qzeros pack 8 columns per word: N = 36 cannot be stored.
  NamedTensors t;
  t.emplace(Name("qweight"), Tensor::Zeros(DType::kI32, {4, 36}));
  t.emplace(Name("qzeros"), Tensor::Zeros(DType::kI32, {1, 4}));
  t.emplace(Name("scales"), Tensor::Zeros(DType::kF16, {1, 36}));
  ExpectDecodeError(t, Scheme(CheckpointFormat::kGptq, 4, -1, false, false),
                    absl::StatusCode::kInvalidArgument, {"N=36"});
  const QuantizedLinear w = MakeWeight(4, -1, false, false, 64, 36, 3);
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptq, 4, -1, false, false), {"N=36"});
  ExpectEncodeError(w, Scheme(CheckpointFormat::kAwq, 4, -1, false, false), {"N=36"});
  // K must be a multiple of the pack factor for the canonical layout.
  NamedTensors ct;
  ct.emplace(Name("weight_packed"), Tensor::Zeros(DType::kI32, {8, 2}));
  ct.emplace(Name("weight_shape"), I32Tensor({2}, {8, 12}));
  ct.emplace(Name("weight_scale"), Tensor::Zeros(DType::kF16, {8, 1}));
  ExpectDecodeError(ct, Scheme(CheckpointFormat::kCtPackQuantized, 4, -1, true, false),
                    absl::StatusCode::kInvalidArgument, {"K=12"});
}

TEST(RejectionTest, SymmetricSchemeWithRealZeroPoints) {
  SCOPED_TRACE(SeedTrace(99));
  // An asymmetric GPTQ layer read as sym=true: its qzeros are not 7s.
  Layer g = ValidLayer(CheckpointFormat::kGptq, /*sym=*/false);
  g.scheme.sym = true;
  ExpectDecodeError(g.t, g.scheme, absl::StatusCode::kInvalidArgument, {"sym=true"});
  // compressed-tensors: an all-zero zero point is fine for symmetric, a
  // non-zero one is not.
  Layer c = ValidLayer(CheckpointFormat::kCtIntQuantized, /*sym=*/true);
  c.t.emplace(Name("weight_zero_point"), Tensor::Zeros(DType::kI8, {32, 4}));
  EXPECT_TRUE(DecodeLinear(NamedTensorSource(c.t), kPrefix, c.scheme).ok());
  c.t.at(Name("weight_zero_point")).as<int8_t>()[9] = 2;
  ExpectDecodeError(c.t, c.scheme, absl::StatusCode::kInvalidArgument, {Name("weight_zero_point")});
}

TEST(RejectionTest, CompressedTensorsValuesAndShapeRecord) {
  SCOPED_TRACE(SeedTrace(99));
  Layer l = ValidLayer(CheckpointFormat::kCtIntQuantized);
  l.t.at(Name("weight")).as<int8_t>()[17] = 9;  // outside signed 4-bit
  ExpectDecodeError(l.t, l.scheme, absl::StatusCode::kInvalidArgument, {Name("weight"), "9"});
  Layer p = ValidLayer(CheckpointFormat::kCtPackQuantized);
  p.t.at(Name("weight_shape")).as<int32_t>()[1] = 136;  // K disagrees with weight_packed
  ExpectDecodeError(p.t, p.scheme, absl::StatusCode::kInvalidArgument, {Name("weight_packed")});
  p.t.at(Name("weight_shape")).as<int32_t>()[0] = -32;
  ExpectDecodeError(p.t, p.scheme, absl::StatusCode::kInvalidArgument, {"weight_shape"});
}

TEST(RejectionTest, EncoderRefusesUnrepresentableWeights) {
  SCOPED_TRACE(SeedTrace(99));
  QuantizedLinear w = MakeWeight(4, 32, false, false, 128, 32, 1);
  w.zeros.as<int32_t>()[6] = 0;
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptq, 4, 32, false, false),
                    {"zero point 0", "v1"});
  w.zeros.as<int32_t>()[6] = 16;  // v1 reads it, nothing else stores it
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptqV2, 4, 32, false, false), {"16"});
  ExpectEncodeError(w, Scheme(CheckpointFormat::kAwq, 4, 32, false, false), {"16"});
  ExpectEncodeError(w, Scheme(CheckpointFormat::kCtPackQuantized, 4, 32, false, false), {"16"});
  w.zeros.as<int32_t>()[6] = 3;
  // Scheme disagreements.
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptq, 8, 32, false, false), {"bits=8"});
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptq, 4, 32, true, false), {"sym=true"});
  ExpectEncodeError(w, Scheme(CheckpointFormat::kGptq, 4, 64, false, false), {"group"});
  // Tensor strategy needs one scale for all columns.
  ExpectEncodeError(MakeWeight(4, -1, true, false, 128, 32, 2),
                    Scheme(CheckpointFormat::kCtPackQuantized, 4, 0, true, false),
                    {"tensor strategy"});
  // Act-order maps need a scheme that stores them; AWQ cannot.
  const QuantizedLinear ordered = MakeWeight(4, 32, false, true, 128, 32, 4);
  ASSERT_FALSE(ordered.g_idx.empty());
  ExpectEncodeError(ordered, Scheme(CheckpointFormat::kGptq, 4, 32, false, false), {"g_idx"});
  ExpectEncodeError(ordered, Scheme(CheckpointFormat::kCtPackQuantized, 4, 32, false, false),
                    {"g_idx"});
  ExpectEncodeError(ordered, Scheme(CheckpointFormat::kAwq, 4, 32, false, true), {"g_idx"});
}

}  // namespace
}  // namespace qlayer::formats_test
