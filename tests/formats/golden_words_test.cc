// Hand-worked packed words (FORMATS.md worked examples and a few more),
// decoded from tensors built by hand, so that an encoder and a decoder that
// share a mistake still fail here. Expected values were worked out on paper;
// the comments show the working.
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/formats.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

constexpr char kPrefix[] = "model.layers.0.mlp.up_proj";

std::string Name(absl::string_view suffix) { return absl::StrCat(kPrefix, ".", suffix); }

QuantizedLinear Decode(const NamedTensors& t, const LayerScheme& s) {
  absl::StatusOr<QuantizedLinear> w = DecodeLinear(NamedTensorSource(t), kPrefix, s);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? std::move(w).value() : QuantizedLinear();
}

std::vector<uint32_t> Words(const QuantizedLinear& w) {
  const uint32_t* p = w.qweight.as<uint32_t>();
  return std::vector<uint32_t>(p, p + w.qweight.numel());
}

std::vector<int32_t> Zeros(const QuantizedLinear& w) {
  const int32_t* p = w.zeros.as<int32_t>();
  return std::vector<int32_t>(p, p + w.zeros.numel());
}

// K = 8, N = 8, one group; column n has scale (n + 1) / 4 (exact in f16).
NamedTensors GptqFourBit(uint32_t qzeros_word) {
  NamedTensors t;
  t.emplace(Name("qweight"),
            I32Tensor({1, 8}, {0x76543210u, 0xFEDCBA98u, 0x01234567u, 0x00000000u, 0xFFFFFFFFu,
                               0x0000000Fu, 0xF0000000u, 0x80000001u}));
  t.emplace(Name("qzeros"), I32Tensor({1, 1}, {qzeros_word}));
  t.emplace(Name("scales"),
            FloatTensor(DType::kF16, {1, 8}, {0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}));
  return t;
}

TEST(GoldenWordsTest, GptqV1FourBitWorkedExample) {
  // FORMATS.md §2: 0x76543210 holds rows 0..7 of column 0 with q = 0..7;
  // qzeros 0x00000007: column 0 stored 7 -> z = 8, columns 1..7 stored 0 -> 1.
  const QuantizedLinear w =
      Decode(GptqFourBit(0x00000007u), Scheme(CheckpointFormat::kGptq, 4, -1, false, false));
  ASSERT_EQ(w.wtype, WeightType::kUint4);
  EXPECT_EQ(w.K, 8);
  EXPECT_EQ(w.N, 8);
  EXPECT_EQ(w.group_size, 8);
  EXPECT_EQ(Zeros(w), (std::vector<int32_t>{8, 1, 1, 1, 1, 1, 1, 1}));
  // GPTQ's qweight is the canonical layout: words unchanged.
  EXPECT_EQ(Words(w), (std::vector<uint32_t>{0x76543210u, 0xFEDCBA98u, 0x01234567u, 0x00000000u,
                                             0xFFFFFFFFu, 0x0000000Fu, 0xF0000000u, 0x80000001u}));
  for (int k = 0; k < 8; ++k) {
    EXPECT_EQ(w.q(k, 0), k);
    EXPECT_EQ(w.q(k, 1), 8 + k);  // 0xFEDCBA98
    EXPECT_EQ(w.q(k, 2), 7 - k);  // 0x01234567
    EXPECT_DOUBLE_EQ(w.Dequant(k, 0), (k - 8) * 0.25);
    EXPECT_DOUBLE_EQ(w.Dequant(k, 4), (15 - 1) * 1.25);
  }
  EXPECT_EQ(w.q(0, 5), 15);  // 0x0000000F: row 0 only
  EXPECT_EQ(w.q(1, 5), 0);
  EXPECT_EQ(w.q(7, 6), 15);  // 0xF0000000: row 7 only
  EXPECT_EQ(w.q(0, 7), 1);   // 0x80000001
  EXPECT_EQ(w.q(7, 7), 8);
  EXPECT_DOUBLE_EQ(w.Dequant(7, 7), (8 - 1) * 2.0);
  EXPECT_TRUE(w.g_idx.empty());
}

TEST(GoldenWordsTest, GptqV1SymmetricStoresSevens) {
  // 0x77777777: every column stored 7 -> z = 8 -> uint4b8, no zeros tensor.
  const QuantizedLinear w =
      Decode(GptqFourBit(0x77777777u), Scheme(CheckpointFormat::kGptq, 4, -1, true, false));
  ASSERT_EQ(w.wtype, WeightType::kUint4b8);
  EXPECT_TRUE(w.zeros.empty());
  for (int k = 0; k < 8; ++k) EXPECT_DOUBLE_EQ(w.Dequant(k, 2), (7 - k - 8) * 0.75);
  // The worked example's qzeros are not symmetric: columns 1..7 decode to 1.
  absl::StatusOr<QuantizedLinear> bad =
      DecodeLinear(NamedTensorSource(GptqFourBit(0x00000007u)), kPrefix,
                   Scheme(CheckpointFormat::kGptq, 4, -1, true, false));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find(kPrefix), absl::string_view::npos) << bad.status();
}

TEST(GoldenWordsTest, GptqV1StoredMinusOneReadsSixteen) {
  // A true zero of 0 in column 1 is stored as -1 = 0xFFFFFFFF, which ORs ones
  // into slots 1..7: 0x00000007 | 0xFFFFFFF0 = 0xFFFFFFF7. Slot + 1 with no
  // mask (qlinear_cuda / vLLM) reads 16 for columns 1..7.
  const QuantizedLinear w =
      Decode(GptqFourBit(0xFFFFFFF7u), Scheme(CheckpointFormat::kGptq, 4, -1, false, false));
  EXPECT_EQ(Zeros(w), (std::vector<int32_t>{8, 16, 16, 16, 16, 16, 16, 16}));
  EXPECT_DOUBLE_EQ(w.Dequant(0, 1), (8 - 16) * 0.5);
}

TEST(GoldenWordsTest, GptqV2StoresTrueZero) {
  const QuantizedLinear w =
      Decode(GptqFourBit(0x00000007u), Scheme(CheckpointFormat::kGptqV2, 4, -1, false, false));
  EXPECT_EQ(Zeros(w), (std::vector<int32_t>{7, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(w.Dequant(3, 0), (3 - 7) * 0.25);
  EXPECT_DOUBLE_EQ(w.Dequant(3, 1), (11 - 0) * 0.5);
  // v2 symmetric stores 8 in every slot.
  const QuantizedLinear sym =
      Decode(GptqFourBit(0x88888888u), Scheme(CheckpointFormat::kGptqV2, 4, -1, true, false));
  EXPECT_EQ(sym.wtype, WeightType::kUint4b8);
}

// K = 4, N = 4, 8-bit, one group; scales 1, 2, 4, 8.
NamedTensors GptqEightBit(uint32_t qzeros_word) {
  NamedTensors t;
  t.emplace(Name("qweight"),
            I32Tensor({1, 4}, {0x03020100u, 0xFF807F01u, 0x00000000u, 0x12345678u}));
  t.emplace(Name("qzeros"), I32Tensor({1, 1}, {qzeros_word}));
  t.emplace(Name("scales"), FloatTensor(DType::kF16, {1, 4}, {1, 2, 4, 8}));
  return t;
}

TEST(GoldenWordsTest, GptqEightBit) {
  // Column 1 word 0xFF807F01: rows 0..3 = 0x01, 0x7F, 0x80, 0xFF.
  // Column 3 word 0x12345678: rows 0..3 = 0x78, 0x56, 0x34, 0x12.
  // qzeros 0x00FF807F: columns 0..3 stored 0x7F, 0x80, 0xFF, 0x00.
  const QuantizedLinear v1 =
      Decode(GptqEightBit(0x00FF807Fu), Scheme(CheckpointFormat::kGptq, 8, -1, false, false));
  ASSERT_EQ(v1.wtype, WeightType::kUint8);
  EXPECT_EQ(Zeros(v1), (std::vector<int32_t>{128, 129, 256, 1}));
  EXPECT_EQ(v1.q(0, 0), 0);
  EXPECT_EQ(v1.q(3, 0), 3);
  EXPECT_EQ(v1.q(0, 1), 1);
  EXPECT_EQ(v1.q(1, 1), 127);
  EXPECT_EQ(v1.q(2, 1), 128);
  EXPECT_EQ(v1.q(3, 1), 255);
  EXPECT_EQ(v1.q(0, 3), 120);
  EXPECT_EQ(v1.q(3, 3), 18);
  EXPECT_DOUBLE_EQ(v1.Dequant(1, 1), (127 - 129) * 2.0);
  EXPECT_DOUBLE_EQ(v1.Dequant(2, 3), (52 - 1) * 8.0);

  const QuantizedLinear v2 =
      Decode(GptqEightBit(0x00FF807Fu), Scheme(CheckpointFormat::kGptqV2, 8, -1, false, false));
  EXPECT_EQ(Zeros(v2), (std::vector<int32_t>{127, 128, 255, 0}));
  EXPECT_DOUBLE_EQ(v2.Dequant(3, 1), (255 - 128) * 2.0);

  // Symmetric 8-bit v1 stores 127 = 0x7F per slot -> 128 -> uint8b128.
  const QuantizedLinear sym =
      Decode(GptqEightBit(0x7F7F7F7Fu), Scheme(CheckpointFormat::kGptq, 8, -1, true, false));
  EXPECT_EQ(sym.wtype, WeightType::kUint8b128);
  EXPECT_DOUBLE_EQ(sym.Dequant(0, 3), (120 - 128) * 8.0);
}

TEST(GoldenWordsTest, GptqActOrderGIdx) {
  // K = 16, G = 8: a non-trivial g_idx is kept, the trivial k / 8 dropped.
  NamedTensors t;
  t.emplace(Name("qweight"), I32Tensor({2, 8}, std::vector<uint32_t>(16, 0x76543210u)));
  t.emplace(Name("qzeros"), I32Tensor({2, 1}, {0x77777777u, 0x77777777u}));
  t.emplace(Name("scales"), FloatTensor(DType::kF16, {2, 8}, std::vector<double>(16, 1.0)));
  std::vector<uint32_t> alternating, trivial;
  for (int k = 0; k < 16; ++k) {
    alternating.push_back(k % 2);
    trivial.push_back(k / 8);
  }
  t.emplace(Name("g_idx"), I32Tensor({16}, alternating));
  const QuantizedLinear w = Decode(t, Scheme(CheckpointFormat::kGptq, 4, 8, true, true));
  ASSERT_FALSE(w.g_idx.empty());
  EXPECT_EQ(w.group_of(2), 0);
  EXPECT_EQ(w.group_of(3), 1);
  t.insert_or_assign(Name("g_idx"), I32Tensor({16}, trivial));
  const QuantizedLinear plain = Decode(t, Scheme(CheckpointFormat::kGptq, 4, 8, true, false));
  EXPECT_TRUE(plain.g_idx.empty());
}

NamedTensors AwqTensors() {
  // Rows of q[k][c]; slot i holds column order[i] = [0, 2, 4, 6, 1, 3, 5, 7][i].
  NamedTensors t;
  t.emplace(Name("qweight"), I32Tensor({8, 1}, {
                                                   0x75316420u,  // row 0: q = column index
                                                   0x0000000Fu,  // row 1: slot 0 -> column 0
                                                   0x000000F0u,  // row 2: slot 1 -> column 2
                                                   0x0000F000u,  // row 3: slot 3 -> column 6
                                                   0x000F0000u,  // row 4: slot 4 -> column 1
                                                   0xF0000000u,  // row 5: slot 7 -> column 7
                                                   0xFFFFFFFFu,  // row 6: all 15
                                                   0x00000000u,  // row 7: all 0
                                               }));
  t.emplace(Name("qzeros"), I32Tensor({1, 1}, {0x75316420u}));  // z[c] = c
  t.emplace(Name("scales"), FloatTensor(DType::kF16, {1, 8}, std::vector<double>(8, 0.5)));
  return t;
}

TEST(GoldenWordsTest, AwqWorkedExample) {
  const QuantizedLinear w =
      Decode(AwqTensors(), Scheme(CheckpointFormat::kAwq, 4, -1, false, false));
  ASSERT_EQ(w.wtype, WeightType::kUint4);
  for (int c = 0; c < 8; ++c) EXPECT_EQ(w.q(0, c), c) << "column " << c;
  EXPECT_EQ(Zeros(w), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  // Canonical word of column n holds q[k][n] in nibble k:
  //   col 0: q = 0 (row 0), 15 (rows 1, 6) -> 0x0F0000F0
  //   col 1: 1, 15 (rows 4, 6)             -> 0x0F0F0001
  //   col 2: 2, 15 (rows 2, 6)             -> 0x0F000F02
  //   col 6: 6, 15 (rows 3, 6)             -> 0x0F00F006
  //   col 7: 7, 15 (rows 5, 6)             -> 0x0FF00007
  EXPECT_EQ(Words(w), (std::vector<uint32_t>{0x0F0000F0u, 0x0F0F0001u, 0x0F000F02u, 0x0F000003u,
                                             0x0F000004u, 0x0F000005u, 0x0F00F006u, 0x0FF00007u}));
  EXPECT_DOUBLE_EQ(w.Dequant(4, 1), (15 - 1) * 0.5);
  EXPECT_DOUBLE_EQ(w.Dequant(0, 7), (7 - 7) * 0.5);

  // zero_point=false: uint4b8, qzeros ignored.
  const QuantizedLinear sym =
      Decode(AwqTensors(), Scheme(CheckpointFormat::kAwq, 4, -1, true, false));
  EXPECT_EQ(sym.wtype, WeightType::kUint4b8);
  EXPECT_TRUE(sym.zeros.empty());
  EXPECT_DOUBLE_EQ(sym.Dequant(0, 3), (3 - 8) * 0.5);
}

TEST(GoldenWordsTest, CompressedTensorsWorkedExample) {
  // Signed [-8, -7, -1, 0, 1, 2, 6, 7] + 8 = nibbles [0, 1, 7, 8, 9, 10, 14, 15]
  // -> 0xFEA98710; row 1 all -8 -> 0x00000000.
  NamedTensors t;
  t.emplace(Name("weight_packed"), I32Tensor({2, 1}, {0xFEA98710u, 0x00000000u}));
  t.emplace(Name("weight_shape"), I32Tensor({2}, {2, 8}));
  t.emplace(Name("weight_scale"), FloatTensor(DType::kBF16, {2, 1}, {0.5, 0.25}));
  const QuantizedLinear w =
      Decode(t, Scheme(CheckpointFormat::kCtPackQuantized, 4, -1, true, false));
  ASSERT_EQ(w.wtype, WeightType::kUint4b8);
  EXPECT_EQ(w.K, 8);
  EXPECT_EQ(w.N, 2);
  EXPECT_EQ(Words(w), (std::vector<uint32_t>{0xFEA98710u, 0x00000000u}));
  const int signed_q[8] = {-8, -7, -1, 0, 1, 2, 6, 7};
  for (int k = 0; k < 8; ++k) {
    EXPECT_DOUBLE_EQ(w.Dequant(k, 0), signed_q[k] * 0.5);
    EXPECT_DOUBLE_EQ(w.Dequant(k, 1), -8 * 0.25);
  }
  // Scales are transposed to [K/G, N] and keep their dtype.
  EXPECT_EQ(w.scales.dtype(), DType::kBF16);
  EXPECT_EQ(w.scales.shape(), (Shape{1, 2}));

  // The same values as naive/int-quantized int8 [N, K] give the same canonical.
  NamedTensors t8;
  t8.emplace(Name("weight"), I8Tensor({2, 8}, {-8, -7, -1, 0, 1, 2, 6, 7,  //
                                               -8, -8, -8, -8, -8, -8, -8, -8}));
  t8.emplace(Name("weight_scale"), FloatTensor(DType::kBF16, {2, 1}, {0.5, 0.25}));
  ExpectSameCanonical(w, Decode(t8, Scheme(CheckpointFormat::kCtIntQuantized, 4, -1, true, false)));
}

TEST(GoldenWordsTest, CompressedTensorsEightBit) {
  // [-128, -1, 0, 127] + 128 = [0x00, 0x7F, 0x80, 0xFF] -> 0xFF807F00.
  NamedTensors t;
  t.emplace(Name("weight_packed"), I32Tensor({1, 1}, {0xFF807F00u}));
  t.emplace(Name("weight_shape"), I64Tensor({2}, {1, 4}));
  t.emplace(Name("weight_scale"), FloatTensor(DType::kF32, {1}, {0.125}));
  const QuantizedLinear w =
      Decode(t, Scheme(CheckpointFormat::kCtPackQuantized, 8, 0, true, false));
  ASSERT_EQ(w.wtype, WeightType::kUint8b128);
  EXPECT_EQ(w.group_size, 4);  // tensor strategy: one group of K
  const int signed_q[4] = {-128, -1, 0, 127};
  for (int k = 0; k < 4; ++k) EXPECT_DOUBLE_EQ(w.Dequant(k, 0), signed_q[k] * 0.125);
}

TEST(GoldenWordsTest, CompressedTensorsZeroPoints) {
  // Asymmetric, channel: packed zero point [ceil(2/8), 1] = 0x00000039:
  // column 0 slot 0 = 9 (zp_s = 1), column 1 slot 1 = 3 (zp_s = -5).
  NamedTensors t;
  t.emplace(Name("weight_packed"), I32Tensor({2, 1}, {0xFEA98710u, 0x00000000u}));
  t.emplace(Name("weight_shape"), I32Tensor({2}, {2, 8}));
  t.emplace(Name("weight_scale"), FloatTensor(DType::kF16, {2, 1}, {0.5, 0.25}));
  t.emplace(Name("weight_zero_point"), I32Tensor({1, 1}, {0x00000039u}));
  const LayerScheme scheme = Scheme(CheckpointFormat::kCtPackQuantized, 4, -1, false, false);
  const QuantizedLinear w = Decode(t, scheme);
  ASSERT_EQ(w.wtype, WeightType::kUint4);
  EXPECT_EQ(Zeros(w), (std::vector<int32_t>{9, 3}));
  // (q_s - zp_s) * s: column 0 row 7: (7 - 1) * 0.5; column 1: (-8 + 5) * 0.25.
  EXPECT_DOUBLE_EQ(w.Dequant(7, 0), 6 * 0.5);
  EXPECT_DOUBLE_EQ(w.Dequant(0, 1), -3 * 0.25);
  // Older files: unpacked int8 zp_s [N, K/G] = [1, -5].
  t.insert_or_assign(Name("weight_zero_point"), I8Tensor({2, 1}, {1, -5}));
  ExpectSameCanonical(w, Decode(t, scheme));
}

TEST(GoldenWordsTest, DenseKeepsWeightAndBias) {
  NamedTensors t;
  t.emplace(Name("weight"), FloatTensor(DType::kF32, {2, 3}, {1, 2, 3, 4, 5, 6}));
  t.emplace(Name("bias"), FloatTensor(DType::kBF16, {2}, {0.5, -1}));
  const QuantizedLinear w = Decode(t, Scheme(CheckpointFormat::kDense, 0, -1, true, false));
  ASSERT_EQ(w.wtype, WeightType::kDense);
  EXPECT_EQ(w.K, 3);
  EXPECT_EQ(w.N, 2);
  EXPECT_DOUBLE_EQ(w.Dequant(2, 1), 6);  // dense[n=1][k=2]
  EXPECT_EQ(w.bias.dtype(), DType::kBF16);
}

}  // namespace
}  // namespace qlayer::formats_test
