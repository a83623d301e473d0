// qlayer-quantize --format compressed-tensors-int writes what compressed-
// tensors' IntQuantizationCompressor (an alias of naive-quantized) writes,
// checked here from the file itself, independently of qlayer's decoder
// (FORMATS.md §4 and upstream naive_quantized.py / quantized_compressors/
// base.py):
//   - per quantized module P exactly: P.weight int8 [N, K] holding the signed
//     values (in [-2^(b-1), 2^(b-1)) for b = 4 too: the storage dtype is int8
//     for every int width <= 8), P.weight_scale [N, K/G] or [N, 1] in the
//     model dtype, P.weight_zero_point int8 of the scale's shape only when
//     asymmetric (upstream skips symmetric zero points), P.weight_g_idx int32
//     [K] only with actorder "group", P.bias if any, and no weight_packed /
//     weight_shape;
//   - config.json's quantization_config: quant_method compressed-tensors,
//     format (top level and in the group) "int-quantized", status compressed;
//   - upstream's dequantization (q - zp) * scale, with the group of input k
//     from g_idx when stored, stays within one scale step of the source
//     weights (--dump-canonical's .original) and equals qlayer's loaded
//     canonical exactly.
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/quant_config.h"
#include "server/checkpoint/safetensors.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RunCommand;
using ::qlayer::testing::TempDir;

struct IntCase {
  int bits;
  int64_t group;  // -1 = channel
  bool sym;
  bool act_order;
  const char* scale_dtype;
};

class CtIntQuantizedTest : public ::testing::TestWithParam<IntCase> {};

double At(const ConstTensorView& t, int64_t i) {
  // Views into a .safetensors file are byte-aligned only: copy the element.
  if (t.dtype == DType::kI8) return static_cast<int8_t>(t.as<char>()[i]);
  if (t.dtype == DType::kI32) {
    int32_t v;
    std::memcpy(&v, t.as<char>() + 4 * i, 4);
    return v;
  }
  return LoadAsDouble(t.data, t.dtype, i);
}

TEST_P(CtIntQuantizedTest, FileIsUpstreamIntQuantized) {
  const IntCase& c = GetParam();
  const uint64_t seed = testing::TestSeed();
  TempDir dir;
  const std::string out = dir.file("ckpt");
  const std::string dump = dir.file("canonical.safetensors");
  struct Mod {
    std::string name;
    int64_t N, K;
  };
  const std::vector<Mod> mods = {{"model.layers.0.mlp.up_proj", 40, 128},
                                 {"model.layers.0.mlp.down_proj", 33, 96}};
  std::vector<std::string> argv = {testing::QuantizeBinary(),
                                   "--format",
                                   "compressed-tensors-int",
                                   "--bits",
                                   absl::StrCat(c.bits),
                                   "--group-size",
                                   absl::StrCat(c.group),
                                   "--scale-dtype",
                                   c.scale_dtype,
                                   "--seed",
                                   absl::StrCat(seed),
                                   "--bias",
                                   "--out",
                                   out,
                                   "--dump-canonical",
                                   dump};
  if (c.sym) argv.push_back("--sym");
  if (c.act_order) argv.push_back("--act-order");
  for (const Mod& m : mods)
    argv.insert(argv.end(), {"--shape", absl::StrCat(m.name, "=", m.N, "x", m.K)});
  const testing::CommandResult run = RunCommand(argv);
  ASSERT_EQ(run.exit_code, 0) << run.output;

  // config.json as upstream writes it.
  auto ckpt = Checkpoint::Open(out);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  const nlohmann::json& qc = (*ckpt)->config()["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "int-quantized");
  EXPECT_EQ(qc["quantization_status"], "compressed");
  ASSERT_EQ(qc["config_groups"].size(), 1u);
  const nlohmann::json& g = qc["config_groups"]["group_0"];
  EXPECT_EQ(g["format"], "int-quantized");
  EXPECT_EQ(g["targets"], nlohmann::json::array({"Linear"}));
  EXPECT_TRUE(g["input_activations"].is_null());
  const nlohmann::json& wq = g["weights"];
  EXPECT_EQ(wq["num_bits"], c.bits);
  EXPECT_EQ(wq["type"], "int");
  EXPECT_EQ(wq["symmetric"], c.sym);
  EXPECT_EQ(wq["strategy"], c.group < 0 ? "channel" : "group");
  if (c.group < 0) {
    EXPECT_TRUE(wq["group_size"].is_null());
  } else {
    EXPECT_EQ(wq["group_size"], c.group);
  }
  EXPECT_EQ(wq["actorder"], c.act_order ? nlohmann::json("group") : nlohmann::json(nullptr));
  EXPECT_EQ(wq["dynamic"], false);

  auto file = SafetensorsFile::Open(out + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  auto canon = SafetensorsFile::Open(dump);
  ASSERT_TRUE(canon.ok()) << canon.status();
  auto parsed = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  auto layers = ListLinearLayers(**ckpt, *parsed);
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), mods.size());

  const DType model_dtype = c.scale_dtype == std::string("bf16") ? DType::kBF16 : DType::kF16;
  std::set<std::string> expected_names;
  const int32_t lo = -(1 << (c.bits - 1)), hi = (1 << (c.bits - 1)) - 1;
  for (const Mod& m : mods) {
    SCOPED_TRACE(m.name);
    const int64_t G = c.group < 0 ? m.K : c.group;
    const int64_t groups = m.K / G;
    for (const char* t : {"weight", "weight_scale", "bias"}) {
      expected_names.insert(absl::StrCat(m.name, ".", t));
    }
    if (!c.sym) expected_names.insert(m.name + ".weight_zero_point");
    if (c.act_order) expected_names.insert(m.name + ".weight_g_idx");

    const ConstTensorView* q = (*file)->Find(m.name + ".weight");
    const ConstTensorView* s = (*file)->Find(m.name + ".weight_scale");
    const ConstTensorView* zp = (*file)->Find(m.name + ".weight_zero_point");
    const ConstTensorView* gi = (*file)->Find(m.name + ".weight_g_idx");
    ASSERT_NE(q, nullptr);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(q->dtype, DType::kI8);
    EXPECT_EQ(q->shape, (Shape{m.N, m.K}));
    EXPECT_EQ(s->dtype, model_dtype);
    EXPECT_EQ(s->shape, (Shape{m.N, groups}));
    if (zp != nullptr) {
      EXPECT_EQ(zp->dtype, DType::kI8);
      EXPECT_EQ(zp->shape, (Shape{m.N, groups}));
    }
    if (gi != nullptr) {
      EXPECT_EQ(gi->dtype, DType::kI32);
      EXPECT_EQ(gi->shape, (Shape{m.K}));
    }
    EXPECT_EQ((*file)->Find(m.name + ".weight_packed"), nullptr);
    EXPECT_EQ((*file)->Find(m.name + ".weight_shape"), nullptr);

    const ConstTensorView* original = (*canon)->Find(m.name + ".original");
    ASSERT_NE(original, nullptr);
    const LinearLayerEntry* entry = nullptr;
    for (const LinearLayerEntry& e : *layers) {
      if (e.name == m.name) entry = &e;
    }
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->scheme.format, CheckpointFormat::kCtIntQuantized);
    auto loaded = LoadLinearLayer(**ckpt, *entry);
    ASSERT_TRUE(loaded.ok()) << loaded.status();

    int64_t bad = 0, scattered = 0, differs = 0;
    std::set<int32_t> seen_q;
    for (int64_t n = 0; n < m.N; ++n) {
      for (int64_t k = 0; k < m.K; ++k) {
        const int64_t grp = gi != nullptr ? static_cast<int64_t>(At(*gi, k)) : k / G;
        if (grp != k / G) ++scattered;
        ASSERT_GE(grp, 0);
        ASSERT_LT(grp, groups);
        const int32_t qv = static_cast<int32_t>(At(*q, n * m.K + k));
        ASSERT_GE(qv, lo);
        ASSERT_LE(qv, hi);
        seen_q.insert(qv);
        const double scale = At(*s, n * groups + grp);
        const double z = zp != nullptr ? At(*zp, n * groups + grp) : 0.0;
        const double w = (qv - z) * scale;  // upstream dequantize()
        const double src = At(*original, n * m.K + k);
        // Half a step from rounding, one more at a clamped range end, plus
        // the scale's own rounding amplified by up to 2^b steps.
        const double bound = scale * (1.0 + std::ldexp(1.0, c.bits) * 0x1p-8) + 1e-12;
        if (std::fabs(w - src) > bound && ++bad <= 3) {
          ADD_FAILURE() << "[" << n << ", " << k << "]: upstream dequant " << w << ", source "
                        << src;
        }
        if (w != loaded->Dequant(k, n)) ++differs;
      }
    }
    EXPECT_EQ(bad, 0);
    EXPECT_EQ(differs, 0) << "upstream dequantization != qlayer's canonical";
    // Signed storage: both signs occur (an unsigned offset would not).
    EXPECT_LT(*seen_q.begin(), 0);
    EXPECT_GT(*seen_q.rbegin(), 0);
    if (c.act_order && groups > 1) EXPECT_GT(scattered, 0) << "act-order g_idx is trivial";
  }
  std::set<std::string> names;
  for (const std::string& t : (*file)->TensorNames()) names.insert(t);
  EXPECT_EQ(names, expected_names);
}

INSTANTIATE_TEST_SUITE_P(Schemes, CtIntQuantizedTest,
                         ::testing::Values(IntCase{8, 32, false, false, "f16"},
                                           IntCase{8, -1, true, false, "bf16"},
                                           IntCase{4, 32, false, true, "bf16"},
                                           IntCase{4, 32, true, true, "f16"}));

}  // namespace
}  // namespace qlayer
