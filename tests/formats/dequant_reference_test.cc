// Decoded canonical Dequant(k, n) against a float64 value computed straight
// from random packed tensors by a tiny decoder written here, per format, from
// FORMATS.md alone: fields by integer division (not the library's shifts),
// fp16/bf16 from their IEEE definition, AWQ's slot by searching the pack
// order. Random words exercise every slot value, including the GPTQ v1 16.
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "qlayer/kernels/formats.h"
#include "tests/formats/formats_test_util.h"

namespace qlayer::formats_test {
namespace {

constexpr char kPrefix[] = "model.layers.5.mlp.down_proj";
std::string Name(absl::string_view s) { return absl::StrCat(kPrefix, ".", s); }

// floor(word / 2^(bits * slot)) mod 2^bits.
int64_t Field(uint32_t word, int bits, int slot) {
  uint64_t unit = 1;
  for (int i = 0; i < bits * slot; ++i) unit *= 2;
  uint64_t range = 1;
  for (int i = 0; i < bits; ++i) range *= 2;
  return static_cast<int64_t>((word / unit) % range);
}

uint32_t WordAt(const Tensor& t, int64_t i) { return t.as<uint32_t>()[i]; }

std::vector<uint32_t> RandomWords(int64_t n, std::mt19937_64& rng) {
  std::vector<uint32_t> w(static_cast<size_t>(n));
  for (uint32_t& x : w) x = static_cast<uint32_t>(rng());
  return w;
}

// Non-zero scales in ±[0.01, 4), rounded to dtype by the library; the
// reference re-reads the stored bits independently.
Tensor RandomScales(DType dt, const Shape& shape, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> mag(0.01, 4.0);
  std::vector<double> v(static_cast<size_t>(NumElements(shape)));
  for (double& x : v) x = (rng() & 1) ? mag(rng) : -mag(rng);
  return FloatTensor(dt, shape, v);
}

std::vector<uint32_t> RandomGroups(int64_t K, int64_t groups, std::mt19937_64& rng) {
  std::vector<uint32_t> g(static_cast<size_t>(K));
  for (uint32_t& x : g) x = static_cast<uint32_t>(rng() % static_cast<uint64_t>(groups));
  g[0] = static_cast<uint32_t>(groups - 1);  // never the trivial map
  return g;
}

void ExpectDequantMatches(const NamedTensors& t, const LayerScheme& scheme, int64_t K, int64_t N,
                          const std::function<double(int64_t, int64_t)>& ref) {
  absl::StatusOr<QuantizedLinear> w = DecodeLinear(NamedTensorSource(t), kPrefix, scheme);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_EQ(w->K, K);
  ASSERT_EQ(w->N, N);
  int64_t mismatches = 0;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t n = 0; n < N; ++n) {
      const double want = ref(k, n);
      const double got = w->Dequant(k, n);
      if (got != want && mismatches++ < 5) {
        ADD_FAILURE() << "w[" << k << "][" << n << "] = " << got << ", reference " << want;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(DequantReferenceTest, GptqV1AndV2) {
  SCOPED_TRACE(SeedTrace(1));
  std::mt19937_64 rng(TestSeed() ^ 1);
  const int64_t K = 64, N = 24, G = 16, groups = K / G;
  for (int bits : {4, 8}) {
    for (CheckpointFormat f : {CheckpointFormat::kGptq, CheckpointFormat::kGptqV2}) {
      for (bool sym : {false, true}) {
        SCOPED_TRACE(absl::StrCat(CheckpointFormatName(f), " bits=", bits, " sym=", sym));
        const int pack = 32 / bits;
        const bool v1 = f == CheckpointFormat::kGptq;
        NamedTensors t;
        t.emplace(Name("qweight"), I32Tensor({K / pack, N}, RandomWords(K / pack * N, rng)));
        // Symmetric: v1 stores z - 1 = 7 / 127 per slot, v2 stores 8 / 128.
        const uint32_t sym_word =
            bits == 4 ? (v1 ? 0x77777777u : 0x88888888u) : (v1 ? 0x7F7F7F7Fu : 0x80808080u);
        t.emplace(Name("qzeros"), I32Tensor({groups, N / pack},
                                            sym ? std::vector<uint32_t>(groups * N / pack, sym_word)
                                                : RandomWords(groups * N / pack, rng)));
        t.emplace(Name("scales"), RandomScales(DType::kF16, {groups, N}, rng));
        t.emplace(Name("g_idx"), I32Tensor({K}, RandomGroups(K, groups, rng)));
        t.emplace(Name("bias"), RandomBias(N, DType::kF16, rng));
        const Tensor& qw = t.at(Name("qweight"));
        const Tensor& qz = t.at(Name("qzeros"));
        const Tensor& sc = t.at(Name("scales"));
        const Tensor& gi = t.at(Name("g_idx"));
        ExpectDequantMatches(t, Scheme(f, bits, G, sym, true), K, N, [&](int64_t k, int64_t n) {
          const int64_t q = Field(WordAt(qw, (k / pack) * N + n), bits, k % pack);
          const int64_t g = gi.as<int32_t>()[k];
          const int64_t z =
              Field(WordAt(qz, g * (N / pack) + n / pack), bits, n % pack) + (v1 ? 1 : 0);
          return static_cast<double>(q - z) * RefLoad(sc.view(), g * N + n);
        });
      }
    }
  }
}

TEST(DequantReferenceTest, Awq) {
  SCOPED_TRACE(SeedTrace(2));
  std::mt19937_64 rng(TestSeed() ^ 2);
  const int64_t K = 64, N = 24, G = 32, groups = K / G;
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // slot i holds column 8w + order[i]
  const auto slot_of = [&](int64_t n) {
    for (int i = 0; i < 8; ++i) {
      if (order[i] == n % 8) return i;
    }
    return -1;
  };
  for (bool sym : {false, true}) {
    NamedTensors t;
    t.emplace(Name("qweight"), I32Tensor({K, N / 8}, RandomWords(K * N / 8, rng)));
    t.emplace(Name("qzeros"), I32Tensor({groups, N / 8}, RandomWords(groups * N / 8, rng)));
    t.emplace(Name("scales"), RandomScales(DType::kBF16, {groups, N}, rng));
    const Tensor& qw = t.at(Name("qweight"));
    const Tensor& qz = t.at(Name("qzeros"));
    const Tensor& sc = t.at(Name("scales"));
    ExpectDequantMatches(
        t, Scheme(CheckpointFormat::kAwq, 4, G, sym, false), K, N, [&](int64_t k, int64_t n) {
          const int64_t q = Field(WordAt(qw, k * (N / 8) + n / 8), 4, slot_of(n));
          const int64_t g = k / G;
          // zero_point=false: fixed 8, qzeros ignored.
          const int64_t z = sym ? 8 : Field(WordAt(qz, g * (N / 8) + n / 8), 4, slot_of(n));
          return static_cast<double>(q - z) * RefLoad(sc.view(), g * N + n);
        });
  }
}

TEST(DequantReferenceTest, CompressedTensorsPacked) {
  SCOPED_TRACE(SeedTrace(3));
  std::mt19937_64 rng(TestSeed() ^ 3);
  // N = 21 is not a multiple of either pack factor: the packed zero point
  // has padding slots, filled with random bits here.
  const int64_t K = 64, N = 21, G = 16, groups = K / G;
  for (int bits : {4, 8}) {
    for (bool sym : {false, true}) {
      SCOPED_TRACE(absl::StrCat("bits=", bits, " sym=", sym));
      const int pack = 32 / bits;
      const int64_t offset = bits == 4 ? 8 : 128;
      const int64_t zp_rows = (N + pack - 1) / pack;
      NamedTensors t;
      t.emplace(Name("weight_packed"), I32Tensor({N, K / pack}, RandomWords(N * K / pack, rng)));
      t.emplace(Name("weight_shape"),
                I32Tensor({2}, {static_cast<uint32_t>(N), static_cast<uint32_t>(K)}));
      t.emplace(Name("weight_scale"), RandomScales(DType::kF32, {N, groups}, rng));
      if (!sym) {
        t.emplace(Name("weight_zero_point"),
                  I32Tensor({zp_rows, groups}, RandomWords(zp_rows * groups, rng)));
      }
      t.emplace(Name("weight_g_idx"), I32Tensor({K}, RandomGroups(K, groups, rng)));
      const Tensor& wp = t.at(Name("weight_packed"));
      const Tensor& sc = t.at(Name("weight_scale"));
      const Tensor& gi = t.at(Name("weight_g_idx"));
      const Tensor* zp = sym ? nullptr : &t.at(Name("weight_zero_point"));
      ExpectDequantMatches(
          t, Scheme(CheckpointFormat::kCtPackQuantized, bits, G, sym, true), K, N,
          [&](int64_t k, int64_t n) {
            const int64_t q_s =
                Field(WordAt(wp, n * (K / pack) + k / pack), bits, k % pack) - offset;
            const int64_t g = gi.as<int32_t>()[k];
            const int64_t zp_s =
                sym ? 0 : Field(WordAt(*zp, (n / pack) * groups + g), bits, n % pack) - offset;
            return static_cast<double>(q_s - zp_s) * RefLoad(sc.view(), n * groups + g);
          });
    }
  }
}

TEST(DequantReferenceTest, CompressedTensorsInt8) {
  SCOPED_TRACE(SeedTrace(4));
  std::mt19937_64 rng(TestSeed() ^ 4);
  const int64_t K = 64, N = 13, G = 32, groups = K / G;
  for (int bits : {4, 8}) {
    const int lo = bits == 4 ? -8 : -128;
    const int span = bits == 4 ? 16 : 256;
    std::vector<int8_t> q(static_cast<size_t>(N * K)), zp(static_cast<size_t>(N * groups));
    for (int8_t& x : q) x = static_cast<int8_t>(lo + static_cast<int>(rng() % span));
    for (int8_t& x : zp) x = static_cast<int8_t>(lo + static_cast<int>(rng() % span));
    NamedTensors t;
    t.emplace(Name("weight"), I8Tensor({N, K}, q));
    t.emplace(Name("weight_scale"), RandomScales(DType::kF16, {N, groups}, rng));
    t.emplace(Name("weight_zero_point"), I8Tensor({N, groups}, zp));
    const Tensor& sc = t.at(Name("weight_scale"));
    ExpectDequantMatches(t, Scheme(CheckpointFormat::kCtIntQuantized, bits, G, false, false), K, N,
                         [&](int64_t k, int64_t n) {
                           const int64_t g = k / G;
                           return static_cast<double>(q[n * K + k] - zp[n * groups + g]) *
                                  RefLoad(sc.view(), n * groups + g);
                         });
  }
}

}  // namespace
}  // namespace qlayer::formats_test
