// qlayer-quantize as a user runs it: flag spellings, clear errors for bad
// flags, seeds, and quantizing a dense safetensors file.
#include "server/tools/quantize_tool.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/safetensors.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RunCommand;
using ::qlayer::testing::TempDir;
using ::testing::HasSubstr;

testing::CommandResult Quantize(std::vector<std::string> args) {
  args.insert(args.begin(), testing::QuantizeBinary());
  return RunCommand(args);
}

TEST(QuantizeToolTest, BadFlagsAreClearErrors) {
  TempDir dir;
  const std::string out = dir.file("o");
  struct Bad {
    std::vector<std::string> args;
    int code;
    const char* substr;
  };
  const Bad bad[] = {
      {{"--shape", "a=8x32", "--out", out}, 2, "--format is required"},
      {{"--format", "gptq", "--bits", "3", "--shape", "a=8x32", "--out", out}, 2, "--bits 3"},
      {{"--format", "gptq", "--group-size", "0", "--shape", "a=8x32", "--out", out},
       2,
       "--group-size 0"},
      {{"--format", "gptq", "--shape", "a=8y32", "--out", out}, 2, "is not NxK"},
      {{"--format", "gptq", "--shape", "=8x32", "--out", out}, 2, "is not NAME=NxK"},
      {{"--format", "gptq", "--shape", "a=0x32", "--out", out}, 2, "positive N and K"},
      {{"--format", "gptq", "--scale-dtype", "f64", "--shape", "a=8x32", "--out", out},
       2,
       "--scale-dtype 'f64'"},
      {{"--format", "gptq", "--seed", "-3", "--shape", "a=8x32", "--out", out},
       2,
       "not an unsigned integer"},
      {{"--format", "gptq", "--shape", "a=8x32", "stray", "--out", out},
       2,
       "unexpected argument 'stray'"},
      {{"--format", "gguf", "--shape", "a=8x32", "--out", out}, 1, "unknown format 'gguf'"},
      {{"--format", "awq", "--bits", "8", "--shape", "a=8x32", "--out", out},
       1,
       "4-bit weights only"},
      {{"--format", "gptq", "--shape", "a=8x32"}, 1, "--out DIR is required"},
      {{"--format", "gptq", "--out", out}, 1, "either --shape"},
      {{"--format", "gptq", "--shape", "a=8x32,a=8x32", "--out", out}, 1, "names a twice"},
      {{"--format", "gptq", "--group-size", "32", "--shape", "m.x=8x48", "--out", out},
       1,
       "layer m.x [8 x 48]"},
  };
  for (const Bad& b : bad) {
    const testing::CommandResult r = Quantize(b.args);
    EXPECT_EQ(r.exit_code, b.code) << b.substr << "\n" << r.output;
    EXPECT_THAT(r.output, HasSubstr(b.substr));
  }
  const testing::CommandResult unknown = Quantize({"--frobnicate", "--format", "gptq"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.output, HasSubstr("frobnicate"));
}

TEST(QuantizeToolTest, SeedsAndFlagSpellings) {
  TempDir dir;
  auto run = [&](const std::string& sub, const std::string& seed) {
    return Quantize({"--format=gptq", "--bits=4", "--group_size=32", "--act-order",
                     "--shape=m.a=16x64", "--shape", "m.b=8x32,m.c=8x64", "--seed", seed, "--out",
                     dir.file(sub)});
  };
  const uint64_t seed = testing::TestSeed();
  auto a = run("a", std::to_string(seed));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_THAT(a.output, HasSubstr(absl::StrCat("seed ", seed)));
  auto b = run("b", std::to_string(seed));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  auto c = run("c", std::to_string(seed + 1));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  const std::string fa = testing::ReadFile(dir.file("a/model.safetensors"));
  EXPECT_EQ(fa, testing::ReadFile(dir.file("b/model.safetensors"))) << "same seed, same bytes";
  EXPECT_NE(fa, testing::ReadFile(dir.file("c/model.safetensors")));

  auto ckpt = Checkpoint::Open(dir.file("a"));
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->config()["torch_dtype"], "float16");
  EXPECT_EQ((*ckpt)->config()["_qlayer_quantize"]["seed"].get<uint64_t>(), seed);
  for (const char* m : {"m.a", "m.b", "m.c"}) {
    EXPECT_NE((*ckpt)->Find(absl::StrCat(m, ".qweight")), nullptr) << m;
    EXPECT_NE((*ckpt)->Find(absl::StrCat(m, ".qzeros")), nullptr) << m;
  }

  // Without --seed one is drawn and printed.
  auto d = Quantize({"--format", "dense", "--shape", "m=3x5", "--out", dir.file("d")});
  ASSERT_EQ(d.exit_code, 0) << d.output;
  EXPECT_THAT(d.output, HasSubstr("seed "));
}

TEST(QuantizeToolTest, FromDenseFile) {
  std::mt19937_64 rng(testing::TestSeed());
  TempDir dir;
  NamedTensors src;
  src.emplace("model.embed_tokens.weight", testing::RandomTensor(DType::kBF16, {50, 64}, rng));
  src.emplace("model.norm.weight", testing::RandomTensor(DType::kBF16, {64}, rng));
  src.emplace("model.layers.0.mlp.gate_proj.weight",
              testing::RandomTensor(DType::kBF16, {96, 64}, rng));
  src.emplace("model.layers.0.mlp.up_proj.weight",
              testing::RandomTensor(DType::kF32, {96, 64}, rng));
  src.emplace("model.layers.0.mlp.up_proj.bias", testing::RandomTensor(DType::kF32, {96}, rng));
  src.emplace("model.layers.0.mlp.down_proj.weight",
              testing::RandomTensor(DType::kF16, {64, 96}, rng));
  src.emplace("model.layers.0.mlp.gate.weight", testing::RandomTensor(DType::kBF16, {4, 64}, rng));
  src.emplace("lm_head.weight", testing::RandomTensor(DType::kBF16, {50, 64}, rng));
  const std::string from = dir.file("dense.safetensors");
  ASSERT_TRUE(WriteSafetensors(from, src).ok());

  for (const char* format : {"awq", "compressed-tensors", "auto-round-gptq", "gptq"}) {
    SCOPED_TRACE(format);
    const std::string out = dir.file(std::string("out_") + format);
    auto r =
        Quantize({"--format", format, "--bits", "4", "--group-size", "32", "--from", from,
                  "--keep-dense", "lm_head,*.mlp.gate", "--scale-dtype", "bf16", "--out", out});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    auto ckpt = Checkpoint::Open(out);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status();
    // Everything not quantized is copied through bit for bit.
    for (const char* t : {"model.embed_tokens.weight", "model.norm.weight",
                          "model.layers.0.mlp.gate.weight", "lm_head.weight"}) {
      const ConstTensorView* v = (*ckpt)->Find(t);
      ASSERT_NE(v, nullptr) << t;
      EXPECT_TRUE(SameTensor(*v, src.at(t).view())) << t;
    }
    EXPECT_EQ((*ckpt)->Find("model.layers.0.mlp.up_proj.weight"), nullptr);
    auto qc = QuantConfig::Parse((*ckpt)->config());
    ASSERT_TRUE(qc.ok()) << qc.status();
    auto layers = ListLinearLayers(**ckpt, *qc);
    ASSERT_TRUE(layers.ok()) << layers.status();
    std::map<std::string, CheckpointFormat> got;
    for (const auto& e : *layers) got[e.name] = e.scheme.format;
    EXPECT_EQ(got.size(), 5u);
    EXPECT_EQ(got["lm_head"], CheckpointFormat::kDense);
    EXPECT_EQ(got["model.layers.0.mlp.gate"], CheckpointFormat::kDense);
    EXPECT_NE(got["model.layers.0.mlp.up_proj"], CheckpointFormat::kDense);
    EXPECT_NE(got["model.layers.0.mlp.down_proj"], CheckpointFormat::kDense);
    for (const auto& e : *layers) {
      auto w = LoadLinearLayer(**ckpt, e);
      ASSERT_TRUE(w.ok()) << w.status();
      if (e.name == "model.layers.0.mlp.up_proj") {
        ASSERT_FALSE(w->bias.empty());
        EXPECT_TRUE(SameTensor(w->bias.view(), src.at("model.layers.0.mlp.up_proj.bias").view()));
        // Dequantized weights stay near the source (asymmetric 4-bit, g32).
        const ConstTensorView& sw = src.at("model.layers.0.mlp.up_proj.weight").view();
        double err = 0, ref = 0;
        for (int64_t n = 0; n < w->N; ++n) {
          for (int64_t k = 0; k < w->K; ++k) {
            const double s = sw.as<float>()[n * w->K + k];
            err += (w->Dequant(k, n) - s) * (w->Dequant(k, n) - s);
            ref += s * s;
          }
        }
        EXPECT_LT(std::sqrt(err / ref), 0.1);
      }
    }
    const auto& qcj = (*ckpt)->config()["quantization_config"];
    if (std::string(format) == "compressed-tensors") {
      EXPECT_THAT(qcj["ignore"].dump(), HasSubstr("model.layers.0.mlp.gate"));
    } else if (std::string(format) == "awq") {
      // "model.layers.0.mlp.gate" is a substring of ...gate_proj: AWQ's
      // substring rule would skip gate_proj too, so it is not listed.
      EXPECT_TRUE(qcj["modules_to_not_convert"].dump().find("mlp.gate\"") == std::string::npos);
      EXPECT_THAT(qcj["modules_to_not_convert"].dump(), HasSubstr("lm_head"));
    } else if (std::string(format) == "auto-round-gptq") {
      EXPECT_EQ(qcj["extra_config"]["lm_head"]["bits"], 16);
    }
  }
}

}  // namespace
}  // namespace qlayer
