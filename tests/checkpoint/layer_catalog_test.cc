// Layer catalog: globs, which modules count as linear layers, and scheme
// resolution driven by what is stored.
#include "server/checkpoint/layer_catalog.h"

#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

using json = nlohmann::json;
using ::qlayer::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(GlobMatchTest, Basics) {
  EXPECT_TRUE(GlobMatch("", "anything"));
  EXPECT_TRUE(GlobMatch("*", "model.layers.0.mlp.up_proj"));
  EXPECT_TRUE(GlobMatch("model.layers.*.mlp.*", "model.layers.12.mlp.down_proj"));
  EXPECT_FALSE(GlobMatch("model.layers.*.mlp.*", "model.layers.12.self_attn.q_proj"));
  EXPECT_TRUE(GlobMatch("*q_proj", "model.layers.0.self_attn.q_proj"));
  EXPECT_FALSE(GlobMatch("*q_proj", "model.layers.0.self_attn.q_proj.x"));
  EXPECT_TRUE(GlobMatch("model.layers.?.mlp.up_proj", "model.layers.7.mlp.up_proj"));
  EXPECT_FALSE(GlobMatch("model.layers.?.mlp.up_proj", "model.layers.17.mlp.up_proj"));
  EXPECT_TRUE(GlobMatch("lm_head, *.down_proj", "lm_head"));
  EXPECT_TRUE(GlobMatch("lm_head,*.down_proj", "model.layers.0.mlp.down_proj"));
  EXPECT_FALSE(GlobMatch("lm_head,*.down_proj", "model.layers.0.mlp.up_proj"));
  EXPECT_TRUE(GlobMatch("a*b*c", "aXXbYYbZZc"));
  EXPECT_FALSE(GlobMatch("a*b*c", "aXXbYYbZZ"));
  EXPECT_TRUE(GlobMatch("**", ""));
  EXPECT_FALSE(GlobMatch("x", ""));
}

// Writes a GPTQ-style checkpoint by hand: one quantized module (encoded with
// the real encoder), dense lm_head and router, norms, an embedding table.
class CatalogTest : public ::testing::Test {
 protected:
  void Write(const json& config, const std::function<void(NamedTensors&)>& mutate = nullptr) {
    std::mt19937_64 rng(testing::TestSeed());
    NamedTensors t;
    std::vector<float> w(32 * 64);
    for (float& x : w) x = static_cast<float>(std::uniform_real_distribution<>(-1, 1)(rng));
    QuantizeOptions o;
    o.wtype = WeightType::kUint4b8;
    o.group_size = 32;
    auto q = QuantizeRtn(w.data(), 32, 64, o);
    ASSERT_TRUE(q.ok()) << q.status();
    LayerScheme gptq;
    gptq.format = CheckpointFormat::kGptq;
    gptq.bits = 4;
    gptq.group_size = 32;
    gptq.sym = true;
    ASSERT_TRUE(EncodeLinear(*q, "model.layers.0.mlp.up_proj", gptq, t).ok());
    t.emplace("lm_head.weight", testing::RandomTensor(DType::kF16, {100, 64}, rng));
    t.emplace("model.layers.0.mlp.gate.weight", testing::RandomTensor(DType::kF32, {4, 64}, rng));
    t.emplace("model.layers.0.input_layernorm.weight",
              testing::RandomTensor(DType::kF16, {64}, rng));
    t.emplace("model.embed_tokens.weight", testing::RandomTensor(DType::kF16, {100, 64}, rng));
    t.emplace("model.layers.0.mlp.up_proj.bias", testing::RandomTensor(DType::kF16, {32}, rng));
    if (mutate) mutate(t);
    ASSERT_TRUE(WriteCheckpoint(dir_.path(), config, t).ok());
  }
  std::unique_ptr<Checkpoint> Open() {
    auto c = Checkpoint::Open(dir_.path());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  TempDir dir_;
};

const json kGptqConfig = {
    {"quantization_config",
     {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 32}, {"sym", true}}}};

std::vector<std::string> Names(const std::vector<LinearLayerEntry>& v) {
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(e.name);
  return out;
}

TEST_F(CatalogTest, ListsLinearsWithSchemes) {
  Write(kGptqConfig);
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  auto qc = QuantConfig::Parse(ckpt->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  auto layers = ListLinearLayers(*ckpt, *qc);
  ASSERT_TRUE(layers.ok()) << layers.status();
  EXPECT_THAT(Names(*layers),
              ElementsAre("lm_head", "model.layers.0.mlp.gate", "model.layers.0.mlp.up_proj"));
  EXPECT_EQ((*layers)[0].scheme.format, CheckpointFormat::kDense);
  EXPECT_EQ((*layers)[1].scheme.format, CheckpointFormat::kDense);
  EXPECT_EQ((*layers)[2].scheme.format, CheckpointFormat::kGptq);
  EXPECT_EQ((*layers)[2].scheme.group_size, 32);

  auto only = ListLinearLayers(*ckpt, *qc, "*.mlp.*");
  ASSERT_TRUE(only.ok());
  EXPECT_THAT(Names(*only), ElementsAre("model.layers.0.mlp.gate", "model.layers.0.mlp.up_proj"));

  for (const LinearLayerEntry& e : *layers) {
    auto w = LoadLinearLayer(*ckpt, e);
    ASSERT_TRUE(w.ok()) << e.name << ": " << w.status();
    EXPECT_TRUE(w->Validate().ok());
  }
  auto up = LoadLinearLayer(*ckpt, (*layers)[2]);
  ASSERT_TRUE(up.ok());
  EXPECT_EQ(up->K, 64);
  EXPECT_EQ(up->N, 32);
  EXPECT_EQ(up->wtype, WeightType::kUint4b8);
  EXPECT_FALSE(up->bias.empty());
  auto head = LoadLinearLayer(*ckpt, (*layers)[0]);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->N, 100);
  EXPECT_TRUE(SameTensor(head->dense.view(), *ckpt->Find("lm_head.weight")));
}

TEST_F(CatalogTest, OutOfScopeLayerFailsOnlyWhenSelected) {
  json config = kGptqConfig;
  config["quantization_config"]["bits"] = 3;
  Write(config);
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  auto qc = QuantConfig::Parse(ckpt->config());
  ASSERT_TRUE(qc.ok());
  auto dense_only = ListLinearLayers(*ckpt, *qc, "lm_head");
  ASSERT_TRUE(dense_only.ok()) << dense_only.status();
  auto all = ListLinearLayers(*ckpt, *qc);
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(all.status().message(), HasSubstr("model.layers.0.mlp.up_proj"));
  EXPECT_THAT(all.status().message(), HasSubstr("3-bit"));
}

TEST_F(CatalogTest, DecoderErrorsNameTheLayer) {
  Write(kGptqConfig);
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  LinearLayerEntry e;
  e.name = "model.layers.0.mlp.up_proj";
  e.scheme.format = CheckpointFormat::kAwq;  // wrong format for these tensors
  e.scheme.bits = 4;
  e.scheme.group_size = 32;
  e.scheme.origin = "awq";
  auto w = LoadLinearLayer(*ckpt, e);
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(w.status().message(), HasSubstr("model.layers.0.mlp.up_proj"));
}

TEST_F(CatalogTest, QuantizedTensorsWithoutConfigAreAnError) {
  Write(json::object());
  auto ckpt = Open();
  ASSERT_NE(ckpt, nullptr);
  auto qc = QuantConfig::Parse(ckpt->config());
  ASSERT_TRUE(qc.ok());
  auto all = ListLinearLayers(*ckpt, *qc);
  ASSERT_FALSE(all.ok());
  EXPECT_THAT(all.status().message(), HasSubstr("no quantization_config"));
}

// Malformed module tensors: each a load error naming the layer and the role.
TEST_F(CatalogTest, HostileModuleTensors) {
  const std::string up = "model.layers.0.mlp.up_proj";
  struct Case {
    const char* what;
    json config;
    std::function<void(NamedTensors&)> mutate;
    const char* substr;
  };
  json g64 = kGptqConfig;
  g64["quantization_config"]["group_size"] = 64;
  const Case cases[] = {
      {"missing scales", kGptqConfig, [&](NamedTensors& t) { t.erase(up + ".scales"); }, "scales"},
      {"scales of the wrong dtype", kGptqConfig,
       [&](NamedTensors& t) {
         const Shape shape = t.at(up + ".scales").shape();
         t.insert_or_assign(up + ".scales", Tensor::Zeros(DType::kI32, shape));
       },
       "scales"},
      {"inconsistent group size", g64, nullptr, "scales"},
      {"qweight of the wrong dtype", kGptqConfig,
       [&](NamedTensors& t) {
         const Shape shape = t.at(up + ".qweight").shape();
         t.insert_or_assign(up + ".qweight", Tensor::Zeros(DType::kF32, shape));
       },
       "qweight"},
      {"truncated qzeros", kGptqConfig,
       [&](NamedTensors& t) {
         t.insert_or_assign(up + ".qzeros", Tensor::Zeros(DType::kI32, {1, 1}));
       },
       "qzeros"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Write(c.config, c.mutate);
    auto ckpt = Open();
    ASSERT_NE(ckpt, nullptr);
    auto qc = QuantConfig::Parse(ckpt->config());
    ASSERT_TRUE(qc.ok());
    auto layers = ListLinearLayers(*ckpt, *qc, up);
    ASSERT_TRUE(layers.ok()) << layers.status();
    ASSERT_EQ(layers->size(), 1u);
    auto w = LoadLinearLayer(*ckpt, (*layers)[0]);
    ASSERT_FALSE(w.ok()) << "loaded a module with " << c.what;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
    EXPECT_THAT(w.status().message(), HasSubstr(up));
    EXPECT_THAT(w.status().message(), HasSubstr(c.substr));
  }
}

}  // namespace
}  // namespace qlayer
