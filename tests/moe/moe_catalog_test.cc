// MoE checkpoints round trip: per family (Mixtral, Qwen2-MoE, Qwen3-MoE,
// DeepSeek-V2, DeepSeek-V3) and format (GPTQ, AWQ) a tiny checkpoint is
// written with EncodeLinear + WriteCheckpoint in the family's naming, then
// ListMoEBlocks / LoadMoEBlock must give back exactly the encoder's input
// (stacked [gate; up]) and the family's router settings; the loaded block
// then runs through the experts kernel against the float64 reference.
// Broken checkpoints get errors naming the block and what is missing.
#include "server/checkpoint/moe_catalog.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/quant_config.h"
#include "tests/moe/moe_test_util.h"

namespace qlayer {
namespace {

using moetest::RandomBlock;
using moetest::RandomBlockSpec;
using moetest::Seed;

struct Family {
  std::string model_type;
  std::string block;  // module path of the MoE block
  bool mixtral_naming;
  std::string shared;  // "", "shared_expert" or "shared_experts"
  bool shared_gate;
  bool bias;
};

const Family kMixtral{"mixtral", "model.layers.1.block_sparse_moe", true, "", false, false};
const Family kQwen2{"qwen2_moe", "model.layers.1.mlp", false, "shared_expert", true, false};
const Family kQwen3{"qwen3_moe", "model.layers.1.mlp", false, "", false, false};
const Family kDeepseekV2{"deepseek_v2", "model.layers.1.mlp", false, "shared_experts", false,
                         false};
const Family kDeepseekV3{"deepseek_v3", "model.layers.1.mlp", false, "shared_experts", false, true};

struct Format {
  std::string tool_format;  // MakeQuantConfig's --format
  LayerScheme scheme;
  WeightType wtype;
  bool act_order;
};

Format Gptq(bool act_order) {
  Format f{"gptq", {}, WeightType::kUint4, act_order};
  f.scheme.format = CheckpointFormat::kGptq;
  f.scheme.bits = 4;
  f.scheme.group_size = 32;
  f.scheme.sym = false;
  f.scheme.act_order = act_order;
  f.scheme.origin = "gptq";
  return f;
}

Format Awq() {
  Format f{"awq", {}, WeightType::kUint4, false};
  f.scheme.format = CheckpointFormat::kAwq;
  f.scheme.bits = 4;
  f.scheme.group_size = 32;
  f.scheme.sym = false;
  f.scheme.origin = "awq";
  return f;
}

Format CompressedTensors() {
  Format f{"compressed-tensors", {}, WeightType::kUint4, false};
  f.scheme.format = CheckpointFormat::kCtPackQuantized;
  f.scheme.bits = 4;
  f.scheme.group_size = 32;
  f.scheme.sym = false;
  f.scheme.origin = "compressed-tensors";
  return f;
}

std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::filesystem::path p = std::filesystem::path(::testing::TempDir()) /
                                  ("qlayer_moe_" + tag + "_" + std::to_string(Seed() % 100000) +
                                   "_" + std::to_string(counter++));
  std::filesystem::remove_all(p);
  return p.string();
}

struct Written {
  RandomBlock rb;
  nlohmann::json config;
  NamedTensors tensors;
};

void Encode(const QuantizedLinear& w, const std::string& prefix, const Format& fmt,
            NamedTensors& out) {
  const absl::Status s = EncodeLinear(w, prefix, fmt.scheme, out);
  ASSERT_TRUE(s.ok()) << prefix << ": " << s;
}

Written MakeCheckpointTensors(const Family& fam, const Format& fmt, std::mt19937_64& rng) {
  Written w;
  RandomBlockSpec spec;
  spec.E = 8;
  spec.top_k = 2;
  spec.H = 64;
  spec.I = 96;
  spec.group_size = 32;
  spec.wtype = fmt.wtype;
  spec.act_order = fmt.act_order;
  spec.shared_I = fam.shared.empty() ? 0 : 64;
  spec.shared_gate = fam.shared_gate;
  spec.gate_dtype = DType::kBF16;
  w.rb = moetest::MakeRandomBlock(spec, rng);
  const std::string& P = fam.block;
  for (int64_t e = 0; e < spec.E; ++e) {
    const std::string p = P + ".experts." + std::to_string(e) + ".";
    Encode(w.rb.gate_w[e], p + (fam.mixtral_naming ? "w1" : "gate_proj"), fmt, w.tensors);
    Encode(w.rb.up_w[e], p + (fam.mixtral_naming ? "w3" : "up_proj"), fmt, w.tensors);
    Encode(w.rb.down_w[e], p + (fam.mixtral_naming ? "w2" : "down_proj"), fmt, w.tensors);
  }
  if (!fam.shared.empty()) {
    const std::string p = P + "." + fam.shared + ".";
    Encode(w.rb.shared_w[0], p + "gate_proj", fmt, w.tensors);
    Encode(w.rb.shared_w[1], p + "up_proj", fmt, w.tensors);
    Encode(w.rb.shared_w[2], p + "down_proj", fmt, w.tensors);
  }
  if (fam.shared_gate) {
    w.tensors[P + ".shared_expert_gate.weight"] = w.rb.block.shared_expert_gate.Clone();
  }
  w.tensors[P + ".gate.weight"] = w.rb.block.gate.Clone();
  if (fam.bias) {
    Tensor bias = Tensor::Zeros(DType::kF32, {spec.E});
    std::normal_distribution<float> d(0.0f, 0.1f);
    for (int64_t e = 0; e < spec.E; ++e) bias.as<float>()[e] = d(rng);
    w.rb.block.correction_bias = bias.Clone();
    w.tensors[P + ".gate.e_score_correction_bias"] = std::move(bias);
  }
  // A non-MoE linear and, for DeepSeek, a dense first MLP that must not be
  // taken for an MoE block.
  Encode(w.rb.down_w[0], "model.layers.0.self_attn.o_proj", fmt, w.tensors);
  if (!fam.mixtral_naming) {
    Encode(w.rb.gate_w[1], "model.layers.0.mlp.gate_proj", fmt, w.tensors);
    Encode(w.rb.up_w[1], "model.layers.0.mlp.up_proj", fmt, w.tensors);
    Encode(w.rb.down_w[1], "model.layers.0.mlp.down_proj", fmt, w.tensors);
  }

  nlohmann::json& c = w.config;
  c["model_type"] = fam.model_type;
  c["hidden_size"] = spec.H;
  c["num_experts_per_tok"] = spec.top_k;
  if (fam.model_type == "mixtral") {
    c["num_local_experts"] = spec.E;
    c["intermediate_size"] = spec.I;
  } else if (fam.model_type == "qwen2_moe" || fam.model_type == "qwen3_moe") {
    c["num_experts"] = spec.E;
    c["moe_intermediate_size"] = spec.I;
    c["norm_topk_prob"] = fam.model_type == "qwen3_moe";
    if (fam.shared_gate) c["shared_expert_intermediate_size"] = spec.shared_I;
  } else {
    const bool v3 = fam.model_type == "deepseek_v3";
    c["n_routed_experts"] = spec.E;
    c["moe_intermediate_size"] = spec.I;
    c["n_shared_experts"] = 1;
    c["first_k_dense_replace"] = 1;
    c["scoring_func"] = v3 ? "sigmoid" : "softmax";
    c["topk_method"] = v3 ? "noaux_tc" : "group_limited_greedy";
    c["n_group"] = 4;
    c["topk_group"] = 2;
    c["norm_topk_prob"] = v3;
    c["routed_scaling_factor"] = v3 ? 2.5 : 16.0;
  }
  absl::StatusOr<nlohmann::json> qc =
      MakeQuantConfig(fmt.tool_format, 4, 32, /*sym=*/false, fmt.act_order);
  EXPECT_TRUE(qc.ok()) << qc.status();
  if (qc.ok()) c["quantization_config"] = *qc;
  return w;
}

void ExpectSameLinear(const QuantizedLinear& got, const QuantizedLinear& want,
                      const std::string& what) {
  EXPECT_EQ(got.K, want.K) << what;
  EXPECT_EQ(got.N, want.N) << what;
  EXPECT_EQ(got.wtype, want.wtype) << what;
  EXPECT_EQ(got.group_size, want.group_size) << what;
  EXPECT_TRUE(SameTensor(got.qweight.view(), want.qweight.view())) << what << " qweight";
  EXPECT_TRUE(SameTensor(got.scales.view(), want.scales.view())) << what << " scales";
  EXPECT_TRUE(SameTensor(got.zeros.view(), want.zeros.view())) << what << " zeros";
  EXPECT_TRUE(SameTensor(got.g_idx.view(), want.g_idx.view())) << what << " g_idx";
  EXPECT_TRUE(SameTensor(got.bias.view(), want.bias.view())) << what << " bias";
}

void RoundTrip(const Family& fam, const Format& fmt, uint64_t salt) {
  SCOPED_TRACE(fam.model_type + " / " + fmt.tool_format + (fmt.act_order ? " desc_act" : ""));
  std::mt19937_64 rng(Seed() + salt);
  Written w = MakeCheckpointTensors(fam, fmt, rng);
  const std::string dir = FreshDir(fam.model_type + "_" + fmt.tool_format);
  ASSERT_TRUE(WriteCheckpoint(dir, w.config, w.tensors).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<QuantConfig> qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();

  absl::StatusOr<std::vector<MoEBlockEntry>> blocks = ListMoEBlocks(**ckpt, *qc);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  ASSERT_EQ(blocks->size(), 1u);
  const MoEBlockEntry& entry = (*blocks)[0];
  EXPECT_EQ(entry.name, fam.block);
  EXPECT_EQ(MoEFamilyName(entry.family), fam.model_type);
  EXPECT_EQ(entry.scheme.format, fmt.scheme.format);
  EXPECT_EQ(entry.router.num_experts, 8);
  EXPECT_EQ(entry.router.top_k, 2);
  EXPECT_EQ(entry.hidden, 64);
  const RouterConfig& r = entry.router;
  if (fam.model_type == "mixtral") {
    EXPECT_TRUE(r.norm_topk_prob);
    EXPECT_EQ(r.scoring, RouterScoring::kSoftmax);
  } else if (fam.model_type == "qwen2_moe") {
    EXPECT_FALSE(r.norm_topk_prob);
  } else if (fam.model_type == "qwen3_moe") {
    EXPECT_TRUE(r.norm_topk_prob);
  } else if (fam.model_type == "deepseek_v2") {
    EXPECT_EQ(r.scoring, RouterScoring::kSoftmax);
    EXPECT_EQ(r.topk_method, TopkMethod::kGroupLimitedGreedy);
    EXPECT_EQ(r.routed_scaling_factor, 16.0f);
    EXPECT_EQ(r.n_group, 4);
    EXPECT_EQ(r.topk_group, 2);
    EXPECT_FALSE(r.has_correction_bias);
  } else {
    EXPECT_EQ(r.scoring, RouterScoring::kSigmoid);
    EXPECT_EQ(r.topk_method, TopkMethod::kNoauxTc);
    EXPECT_EQ(r.routed_scaling_factor, 2.5f);
    EXPECT_TRUE(r.norm_topk_prob);
    EXPECT_TRUE(r.has_correction_bias);
  }
  EXPECT_FALSE(entry.members.empty());

  absl::StatusOr<std::set<std::string, std::less<>>> members = MoEMemberModules(**ckpt);
  ASSERT_TRUE(members.ok()) << members.status();
  const std::string e3 = fam.block + ".experts.3." + (fam.mixtral_naming ? "w3" : "up_proj");
  EXPECT_TRUE(IsMoEMember(*members, e3));
  EXPECT_TRUE(IsMoEMember(*members, fam.block + ".gate"));
  EXPECT_FALSE(IsMoEMember(*members, "model.layers.0.self_attn.o_proj"));
  EXPECT_FALSE(IsMoEMember(*members, "model.layers.0.mlp.gate_proj"));
  if (!fam.shared.empty()) {
    EXPECT_TRUE(IsMoEMember(*members, fam.block + "." + fam.shared + ".down_proj"));
  }

  absl::StatusOr<MoEBlock> block = LoadMoEBlock(**ckpt, *qc, entry);
  ASSERT_TRUE(block.ok()) << block.status();
  const MoEBlock& want = w.rb.block;
  ASSERT_EQ(block->num_experts(), want.num_experts());
  EXPECT_EQ(block->intermediate, 96);
  for (int64_t e = 0; e < want.num_experts(); ++e) {
    ExpectSameLinear(block->experts[e].w13, want.experts[e].w13,
                     "w13 of expert " + std::to_string(e));
    ExpectSameLinear(block->experts[e].w2, want.experts[e].w2, "w2 of expert " + std::to_string(e));
  }
  EXPECT_TRUE(SameTensor(block->gate.view(), want.gate.view()));
  EXPECT_TRUE(SameTensor(block->correction_bias.view(), want.correction_bias.view()));
  ASSERT_EQ(block->shared.has_value(), want.shared.has_value());
  if (want.shared.has_value()) {
    ExpectSameLinear(block->shared->w13, want.shared->w13, "shared w13");
    ExpectSameLinear(block->shared->w2, want.shared->w2, "shared w2");
  }
  EXPECT_TRUE(SameTensor(block->shared_expert_gate.view(), want.shared_expert_gate.view()));

  // The loaded block computes: router from its gate, experts through the
  // kernel, against the float64 experts forward for that routing.
  absl::StatusOr<MoERouter> router = MoERouter::FromBlock(*block);
  ASSERT_TRUE(router.ok()) << router.status();
  MoESelectOptions opts;
  opts.linear.forced_kernel = "cpu_reference";
  absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
      CreateMoEKernel(*block, Device{}, DType::kF32, opts, nullptr);
  ASSERT_TRUE(kernel.ok()) << kernel.status();
  Tensor x = moetest::RandomActivations(7, 64, DType::kF32, rng);
  absl::StatusOr<Routing> routing = router->Route(x.view());
  ASSERT_TRUE(routing.ok()) << routing.status();
  Tensor y = Tensor::Zeros(DType::kF32, {7, 64});
  ExecContext ctx;
  ASSERT_TRUE((*kernel)->Forward(x.view(), *routing, y.mutable_view(), ctx, nullptr).ok());
  const std::vector<double> ref =
      moetest::ReferenceMoE(w.rb, x.view(), routing->ids, routing->weights, 2);
  EXPECT_LT(moetest::RelativeError(y.view(), ref), 1e-5);
  std::filesystem::remove_all(dir);
}

TEST(MoECatalogTest, MixtralRoundTrip) {
  RoundTrip(kMixtral, Gptq(false), 21);
  RoundTrip(kMixtral, Awq(), 22);
}

TEST(MoECatalogTest, Qwen2MoeRoundTrip) {
  RoundTrip(kQwen2, Gptq(false), 23);
  RoundTrip(kQwen2, Awq(), 24);
}

TEST(MoECatalogTest, Qwen3MoeRoundTrip) {
  RoundTrip(kQwen3, Gptq(true), 25);
  RoundTrip(kQwen3, Awq(), 26);
}

// Any format the shared decoder reads works for experts too.
TEST(MoECatalogTest, CompressedTensorsRoundTrip) {
  RoundTrip(kQwen2, CompressedTensors(), 33);
  RoundTrip(kDeepseekV3, CompressedTensors(), 34);
}

TEST(MoECatalogTest, DeepseekV2RoundTrip) {
  RoundTrip(kDeepseekV2, Gptq(false), 27);
  RoundTrip(kDeepseekV2, Awq(), 28);
}

TEST(MoECatalogTest, DeepseekV3RoundTrip) {
  RoundTrip(kDeepseekV3, Gptq(true), 29);
  RoundTrip(kDeepseekV3, Awq(), 30);
}

// Writes `w` after `edit`, lists and loads; returns the first error.
absl::Status ListAndLoad(Written& w, const std::string& tag) {
  const std::string dir = FreshDir(tag);
  absl::Status s = WriteCheckpoint(dir, w.config, w.tensors);
  if (!s.ok()) return s;
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return ckpt.status();
  absl::StatusOr<QuantConfig> qc = QuantConfig::Parse((*ckpt)->config());
  if (!qc.ok()) return qc.status();
  absl::StatusOr<std::vector<MoEBlockEntry>> blocks = ListMoEBlocks(**ckpt, *qc);
  if (blocks.ok()) {
    for (const MoEBlockEntry& e : *blocks) {
      s = LoadMoEBlock(**ckpt, *qc, e).status();
      if (!s.ok()) break;
    }
  } else {
    s = blocks.status();
  }
  std::filesystem::remove_all(dir);
  return s;
}

TEST(MoECatalogTest, ErrorsNameTheBlockAndWhatIsMissing) {
  std::mt19937_64 rng(Seed() + 31);
  {
    Written w = MakeCheckpointTensors(kMixtral, Gptq(false), rng);
    for (auto it = w.tensors.begin(); it != w.tensors.end();) {
      it = it->first.rfind(kMixtral.block + ".experts.5.w3.", 0) == 0 ? w.tensors.erase(it)
                                                                      : std::next(it);
    }
    const absl::Status s = ListAndLoad(w, "missing_expert");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("MoE block " + kMixtral.block), std::string::npos) << s;
    EXPECT_NE(s.message().find("experts.5.w3"), std::string::npos) << s;
  }
  {
    Written w = MakeCheckpointTensors(kQwen3, Awq(), rng);
    w.config.erase("num_experts_per_tok");
    const absl::Status s = ListAndLoad(w, "missing_key");
    EXPECT_NE(s.message().find("num_experts_per_tok"), std::string::npos) << s;
    EXPECT_NE(s.message().find(kQwen3.block), std::string::npos) << s;
  }
  {
    Written w = MakeCheckpointTensors(kDeepseekV3, Gptq(false), rng);
    w.tensors.erase(kDeepseekV3.block + ".gate.e_score_correction_bias");
    const absl::Status s = ListAndLoad(w, "missing_bias");
    EXPECT_NE(s.message().find("e_score_correction_bias"), std::string::npos) << s;
  }
  {
    Written w = MakeCheckpointTensors(kMixtral, Awq(), rng);
    w.config["num_local_experts"] = 6;  // the checkpoint stores 8
    w.tensors[kMixtral.block + ".gate.weight"] = Tensor::Zeros(DType::kBF16, {6, 64});
    const absl::Status s = ListAndLoad(w, "extra_expert");
    EXPECT_NE(s.message().find("experts.6.w1"), std::string::npos) << s;
  }
  {
    Written w = MakeCheckpointTensors(kMixtral, Awq(), rng);
    w.config["model_type"] = "phimoe";  // block_sparse_moe naming, different router
    const absl::Status s = ListAndLoad(w, "unknown_family");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
    EXPECT_NE(s.message().find("phimoe"), std::string::npos) << s;
  }
  {
    Written w = MakeCheckpointTensors(kDeepseekV2, Awq(), rng);
    w.config["topk_method"] = "sparsemixer";
    const absl::Status s = ListAndLoad(w, "unknown_method");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << s;
    EXPECT_NE(s.message().find("sparsemixer"), std::string::npos) << s;
  }
  {
    // A broken expert tensor: the decoder's error, prefixed with the block.
    Written w = MakeCheckpointTensors(kQwen2, Gptq(false), rng);
    const std::string name = kQwen2.block + ".experts.2.down_proj.scales";
    w.tensors[name] = Tensor::Zeros(DType::kF16, {1, 64});
    const absl::Status s = ListAndLoad(w, "bad_scales");
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find("MoE block " + kQwen2.block), std::string::npos) << s;
    EXPECT_NE(s.message().find("experts.2.down_proj"), std::string::npos) << s;
  }
}

// Without model_type the family follows from the naming and config keys.
TEST(MoECatalogTest, FamilyInferredWithoutModelType) {
  std::mt19937_64 rng(Seed() + 32);
  Written w = MakeCheckpointTensors(kDeepseekV3, Awq(), rng);
  w.config.erase("model_type");
  const std::string dir = FreshDir("infer");
  ASSERT_TRUE(WriteCheckpoint(dir, w.config, w.tensors).ok());
  absl::StatusOr<std::unique_ptr<Checkpoint>> ckpt = Checkpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  absl::StatusOr<QuantConfig> qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  absl::StatusOr<std::vector<MoEBlockEntry>> blocks = ListMoEBlocks(**ckpt, *qc, "*.layers.1.*");
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  ASSERT_EQ(blocks->size(), 1u);
  EXPECT_EQ((*blocks)[0].family, MoEFamily::kDeepseekV3);
  blocks = ListMoEBlocks(**ckpt, *qc, "*.layers.7.*");
  ASSERT_TRUE(blocks.ok());
  EXPECT_TRUE(blocks->empty());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace qlayer
