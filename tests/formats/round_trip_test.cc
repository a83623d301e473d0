// QuantizeRtn -> EncodeLinear -> DecodeLinear gives back the canonical weight
// exactly, for every format x bits x group size x sym/asym x act-order, with
// K and N off the usual multiples of 256. The encoder's output is also held
// to the tensor names, shapes and dtypes each upstream packer writes.
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/formats.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

struct RoundTripCase {
  CheckpointFormat format;
  int bits;
  int64_t group;  // -1 channel, 0 tensor (compressed-tensors only)
  bool sym;
  bool act_order;
  int64_t K;
  int64_t N;
  DType scale_dtype;
  bool bias;
};

std::string FormatTag(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kGptq:
      return "gptq";
    case CheckpointFormat::kGptqV2:
      return "gptqv2";
    case CheckpointFormat::kAwq:
      return "awq";
    case CheckpointFormat::kCtPackQuantized:
      return "ctpack";
    case CheckpointFormat::kCtIntQuantized:
      return "ctint";
    default:
      return "dense";
  }
}

std::string CaseName(const RoundTripCase& c) {
  const std::string group = c.group == -1  ? "ch"
                            : c.group == 0 ? "tensor"
                                           : absl::StrCat("g", c.group);
  return absl::StrCat(FormatTag(c.format), "_", c.bits, "bit_", group, c.sym ? "_sym" : "_asym",
                      c.act_order ? "_actorder" : "", "_K", c.K, "_N", c.N, "_",
                      DTypeName(c.scale_dtype), c.bias ? "_bias" : "");
}

// gtest prints parameters of failing cases with this.
void PrintTo(const RoundTripCase& c, std::ostream* os) { *os << CaseName(c); }

std::vector<RoundTripCase> AllCases() {
  std::vector<RoundTripCase> cases;
  const DType scale_dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  int i = 0;
  for (CheckpointFormat f :
       {CheckpointFormat::kGptq, CheckpointFormat::kGptqV2, CheckpointFormat::kAwq,
        CheckpointFormat::kCtPackQuantized, CheckpointFormat::kCtIntQuantized}) {
    const bool ct =
        f == CheckpointFormat::kCtPackQuantized || f == CheckpointFormat::kCtIntQuantized;
    for (int bits : {4, 8}) {
      if (f == CheckpointFormat::kAwq && bits == 8) continue;
      std::vector<int64_t> groups = {32, 128, -1};
      if (ct) groups.push_back(0);
      for (int64_t group : groups) {
        for (bool sym : {true, false}) {
          for (bool act_order : {false, true}) {
            if (f == CheckpointFormat::kAwq && act_order) continue;
            // K a multiple of the group (and of 8), not of 256; N a multiple
            // of 8 where qzeros pack along N, else deliberately not.
            const int64_t K = group == 128 ? 384 : (i % 2 ? 96 : 192);
            const int64_t N = ct ? (i % 2 ? 37 : 44) : (i % 2 ? 40 : 72);
            cases.push_back(
                {f, bits, group, sym, act_order, K, N, scale_dtypes[i % 3], i % 2 == 0});
            ++i;
          }
        }
      }
    }
  }
  return cases;
}

WeightType TypeFor(int bits, bool sym) {
  if (bits == 4) return sym ? WeightType::kUint4b8 : WeightType::kUint4;
  return sym ? WeightType::kUint8b128 : WeightType::kUint8;
}

struct Expected {
  Shape shape;
  DType dtype;
};

// What each upstream packer writes for this case, from FORMATS.md.
std::map<std::string, Expected> ExpectedLayout(const RoundTripCase& c, const std::string& p) {
  const int64_t pack = 32 / c.bits;
  const int64_t G = c.group > 0 ? c.group : c.K;
  const int64_t groups = c.K / G;
  std::map<std::string, Expected> e;
  switch (c.format) {
    case CheckpointFormat::kGptq:
    case CheckpointFormat::kGptqV2:
      e[p + ".qweight"] = {{c.K / pack, c.N}, DType::kI32};
      e[p + ".qzeros"] = {{groups, c.N / pack}, DType::kI32};
      e[p + ".scales"] = {{groups, c.N}, c.scale_dtype};
      e[p + ".g_idx"] = {{c.K}, DType::kI32};
      break;
    case CheckpointFormat::kAwq:
      e[p + ".qweight"] = {{c.K, c.N / 8}, DType::kI32};
      e[p + ".qzeros"] = {{groups, c.N / 8}, DType::kI32};
      e[p + ".scales"] = {{groups, c.N}, c.scale_dtype};
      break;
    case CheckpointFormat::kCtPackQuantized:
    case CheckpointFormat::kCtIntQuantized: {
      const bool packed = c.format == CheckpointFormat::kCtPackQuantized;
      if (packed) {
        e[p + ".weight_packed"] = {{c.N, (c.K + pack - 1) / pack}, DType::kI32};
        e[p + ".weight_shape"] = {{2}, DType::kI32};
      } else {
        e[p + ".weight"] = {{c.N, c.K}, DType::kI8};
      }
      e[p + ".weight_scale"] = {c.group == 0 ? Shape{1} : Shape{c.N, groups}, c.scale_dtype};
      if (!c.sym) {
        if (c.group == 0) {
          e[p + ".weight_zero_point"] = {{1}, DType::kI8};
        } else if (packed) {
          e[p + ".weight_zero_point"] = {{(c.N + pack - 1) / pack, groups}, DType::kI32};
        } else {
          e[p + ".weight_zero_point"] = {{c.N, groups}, DType::kI8};
        }
      }
      if (c.act_order) e[p + ".weight_g_idx"] = {{c.K}, DType::kI32};
      break;
    }
    default:
      break;
  }
  if (c.bias) e[p + ".bias"] = {{c.N}, c.scale_dtype};
  return e;
}

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, EncodeDecodeIsExact) {
  const RoundTripCase& c = GetParam();
  const uint64_t salt = std::hash<std::string>()(CaseName(c));
  SCOPED_TRACE(SeedTrace(salt));
  std::mt19937_64 rng(TestSeed() ^ salt);
  const std::vector<float> dense = RandomWeights(c.N, c.K, rng);
  QuantizeOptions opt;
  opt.wtype = TypeFor(c.bits, c.sym);
  opt.group_size = c.group;
  opt.scale_dtype = c.scale_dtype;
  opt.act_order = c.act_order;
  opt.seed = rng();
  absl::StatusOr<QuantizedLinear> q = QuantizeRtn(dense.data(), c.N, c.K, opt);
  ASSERT_TRUE(q.ok()) << q.status();
  if (c.bias) q->bias = RandomBias(c.N, c.scale_dtype, rng);
  // Act-order with more than one group leaves a real permutation map.
  EXPECT_EQ(!q->g_idx.empty(), c.act_order && c.group > 0);

  const std::string prefix = "model.layers.3.self_attn.o_proj";
  const LayerScheme scheme = Scheme(c.format, c.bits, c.group, c.sym, c.act_order);
  NamedTensors files;
  files.emplace("model.layers.3.other.weight", Tensor::Zeros(DType::kF16, {1}));  // untouched
  const absl::Status enc = EncodeLinear(*q, prefix, scheme, files);
  ASSERT_TRUE(enc.ok()) << enc;

  const std::map<std::string, Expected> want = ExpectedLayout(c, prefix);
  EXPECT_EQ(files.size(), want.size() + 1);
  for (const auto& [name, e] : want) {
    auto it = files.find(name);
    ASSERT_NE(it, files.end()) << "encoder did not write " << name;
    EXPECT_EQ(it->second.shape(), e.shape) << name << " " << ShapeToString(it->second.shape());
    EXPECT_EQ(it->second.dtype(), e.dtype) << name << " " << DTypeName(it->second.dtype());
  }
  // Hand-worked constants: symmetric zero words, GPTQ's trivial g_idx, CT's
  // weight_shape.
  const auto words = [&](const std::string& name) {
    const Tensor& t = files.at(prefix + "." + name);
    return std::vector<uint32_t>(t.as<uint32_t>(), t.as<uint32_t>() + t.numel());
  };
  if (c.sym && (c.format == CheckpointFormat::kGptq || c.format == CheckpointFormat::kGptqV2 ||
                c.format == CheckpointFormat::kAwq)) {
    uint32_t sym_word = c.bits == 4 ? 0x77777777u : 0x7F7F7F7Fu;  // v1: z - 1
    if (c.format != CheckpointFormat::kGptq) sym_word = c.bits == 4 ? 0x88888888u : 0x80808080u;
    for (uint32_t w : words("qzeros")) ASSERT_EQ(w, sym_word);
  }
  if ((c.format == CheckpointFormat::kGptq || c.format == CheckpointFormat::kGptqV2) &&
      !c.act_order) {
    const std::vector<uint32_t> g = words("g_idx");
    const int64_t G = c.group > 0 ? c.group : c.K;
    for (int64_t k = 0; k < c.K; ++k) ASSERT_EQ(g[k], static_cast<uint32_t>(k / G)) << k;
  }
  if (c.format == CheckpointFormat::kCtPackQuantized) {
    EXPECT_EQ(words("weight_shape"),
              (std::vector<uint32_t>{static_cast<uint32_t>(c.N), static_cast<uint32_t>(c.K)}));
  }

  absl::StatusOr<QuantizedLinear> back = DecodeLinear(NamedTensorSource(files), prefix, scheme);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameCanonical(*q, *back);

  // Encoding the decoded weight again writes the same bytes.
  NamedTensors again;
  ASSERT_TRUE(EncodeLinear(*back, prefix, scheme, again).ok());
  for (const auto& [name, t] : again) {
    EXPECT_TRUE(SameTensor(t.view(), files.at(name).view())) << name << " differs on re-encode";
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, RoundTripTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<RoundTripCase>& param_info) {
                           return CaseName(param_info.param);
                         });

TEST(RoundTripDenseTest, WeightAndBiasCopied) {
  SCOPED_TRACE(SeedTrace(7));
  std::mt19937_64 rng(TestSeed() ^ 7);
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    const int64_t N = 40, K = 96;
    const std::vector<float> dense = RandomWeights(N, K, rng);
    QuantizedLinear w;
    w.K = K;
    w.N = N;
    w.wtype = WeightType::kDense;
    std::vector<double> values(dense.begin(), dense.end());
    w.dense = FloatTensor(dt, {N, K}, values);
    w.bias = RandomBias(N, dt, rng);
    const LayerScheme scheme = Scheme(CheckpointFormat::kDense, 0, -1, true, false);
    NamedTensors files;
    ASSERT_TRUE(EncodeLinear(w, "lm.gate", scheme, files).ok());
    EXPECT_EQ(files.size(), 2u);
    EXPECT_TRUE(SameTensor(files.at("lm.gate.weight").view(), w.dense.view()));
    absl::StatusOr<QuantizedLinear> back =
        DecodeLinear(NamedTensorSource(files), "lm.gate", scheme);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameCanonical(w, *back);
  }
}

// GPTQ v1 cannot store a zero point of 0 but reads back 16 as written; v2
// stores 0 but not 16. The two zero extremes round-trip where representable.
TEST(RoundTripEdgeTest, GptqZeroPointExtremes) {
  SCOPED_TRACE(SeedTrace(11));
  std::mt19937_64 rng(TestSeed() ^ 11);
  const int64_t K = 64, N = 16;
  const std::vector<float> dense = RandomWeights(N, K, rng);
  QuantizeOptions opt;
  opt.wtype = WeightType::kUint4;
  opt.group_size = 32;
  absl::StatusOr<QuantizedLinear> q = QuantizeRtn(dense.data(), N, K, opt);
  ASSERT_TRUE(q.ok()) << q.status();
  q->zeros.as<int32_t>()[3] = 16;
  const LayerScheme v1 = Scheme(CheckpointFormat::kGptq, 4, 32, false, false);
  NamedTensors files;
  ASSERT_TRUE(EncodeLinear(*q, "m.l", v1, files).ok());
  absl::StatusOr<QuantizedLinear> back = DecodeLinear(NamedTensorSource(files), "m.l", v1);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameCanonical(*q, *back);

  q->zeros.as<int32_t>()[3] = 0;
  const LayerScheme v2 = Scheme(CheckpointFormat::kGptqV2, 4, 32, false, false);
  NamedTensors files2;
  ASSERT_TRUE(EncodeLinear(*q, "m.l", v2, files2).ok());
  back = DecodeLinear(NamedTensorSource(files2), "m.l", v2);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameCanonical(*q, *back);
}

}  // namespace
}  // namespace qlayer::formats_test
