// qlayer-quantize's MoE mode (server/tools/moe_checkpoint.h) round trips
// through the MoE catalog: per family and format the tool writes a checkpoint,
// ListMoEBlocks finds each block with the family's router settings, and
// LoadMoEBlock gives back exactly the encoder's inputs (the tool's
// --dump-canonical file) stacked as w13 = [gate | up], the dense router gate,
// correction bias and shared-expert gate as stored; the gates are named in
// the format's ignore list and no expert shows up as a plain linear layer.
// Bad MoE flags are refused with the reason.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/moe_catalog.h"
#include "server/checkpoint/quant_config.h"
#include "server/checkpoint/safetensors.h"
#include "server/tools/quantize_tool.h"
#include "tests/moe/moe_test_util.h"

namespace qlayer {
namespace {

using moetest::Seed;

std::string FreshDir(const std::string& tag) {
  static int counter = 0;
  const std::filesystem::path p =
      std::filesystem::path(::testing::TempDir()) /
      absl::StrCat("qlayer_moe_tool_", tag, "_", Seed() % 100000, "_", counter++);
  std::filesystem::remove_all(p);
  return p.string();
}

// Columns [col0, col0 + want.cols) of got [R, C] equal want [R, w] bytewise.
bool SameColumns(const ConstTensorView& got, int64_t col0, const ConstTensorView& want) {
  if (got.dtype != want.dtype || got.shape.size() != 2 || want.shape.size() != 2 ||
      got.dim(0) != want.dim(0) || col0 + want.dim(1) > got.dim(1)) {
    return false;
  }
  const size_t es = DTypeSize(got.dtype);
  const auto* g = static_cast<const char*>(got.data);
  const auto* w = static_cast<const char*>(want.data);
  for (int64_t r = 0; r < got.dim(0); ++r) {
    if (std::memcmp(g + (r * got.dim(1) + col0) * es, w + r * want.dim(1) * es, want.dim(1) * es) !=
        0) {
      return false;
    }
  }
  return true;
}

struct Case {
  MoEToolSpec spec;
  std::string format;
  bool sym = false;
  bool act_order = false;
  DType dtype = DType::kF16;
};

MoEToolSpec Spec(const std::string& family) {
  MoEToolSpec s;
  s.family = family;
  s.layers = {1, 3};
  s.hidden = 64;
  s.intermediate = 32;
  s.experts = 8;
  s.top_k = 2;
  if (family == "qwen2_moe") s.shared_intermediate = 96;
  if (family == "deepseek_v2" || family == "deepseek_v3") {
    s.shared_intermediate = 64;  // two shared experts of I
    s.n_group = 4;
    s.topk_group = 2;
  }
  return s;
}

// One MLP (gate, up, down module paths) of the block as the family names it.
std::vector<std::string> MlpNames(const std::string& prefix, bool mixtral) {
  if (mixtral) return {prefix + ".w1", prefix + ".w3", prefix + ".w2"};
  return {prefix + ".gate_proj", prefix + ".up_proj", prefix + ".down_proj"};
}

// The dumped canonical tensors of `module` equal `got`'s columns from col0.
void ExpectDumped(const SafetensorsFile& dump, const std::string& module,
                  const QuantizedLinear& got, int64_t col0, const std::string& what) {
  for (const char* role : {"qweight", "scales", "zeros", "g_idx"}) {
    const ConstTensorView* want = dump.Find(absl::StrCat(module, ".", role));
    const Tensor& t = std::string(role) == "qweight"  ? got.qweight
                      : std::string(role) == "scales" ? got.scales
                      : std::string(role) == "zeros"  ? got.zeros
                                                      : got.g_idx;
    if (want == nullptr) {
      if (std::string(role) == "g_idx" && !t.empty()) {
        // A trivial g_idx may be materialised by the decoder.
        for (int64_t k = 0; k < got.K; ++k) {
          ASSERT_EQ(t.as<int32_t>()[k], k / got.group_size) << what << " g_idx at " << k;
        }
        continue;
      }
      EXPECT_TRUE(t.empty()) << what << " " << role << " appeared from nowhere";
      continue;
    }
    if (std::string(role) == "g_idx") {
      EXPECT_TRUE(SameTensor(t.view(), *want)) << what << " g_idx";
    } else {
      EXPECT_TRUE(SameColumns(t.view(), col0, *want))
          << what << " " << role << " (columns from " << col0 << ")";
    }
  }
}

void RoundTrip(const Case& c) {
  const MoEToolSpec& s = c.spec;
  SCOPED_TRACE(absl::StrCat(s.family, " / ", c.format, c.sym ? " sym" : "",
                            c.act_order ? " act-order" : ""));
  const std::string dir = FreshDir(s.family);
  QuantizeToolOptions o;
  o.format = c.format;
  o.bits = 4;
  o.group_size = 32;
  o.sym = c.sym;
  o.act_order = c.act_order;
  o.scale_dtype = c.dtype;
  o.seed = Seed() + std::hash<std::string>()(s.family + c.format);
  o.moe = s;
  // A plain linear beside the blocks stays a linear layer.
  o.shapes = {{"model.layers.0.self_attn.o_proj", s.hidden, s.hidden}};
  o.out = dir + "/ckpt";
  o.dump_canonical = dir + "/canonical.safetensors";
  std::ostringstream log;
  const absl::Status run = RunQuantizeTool(o, log);
  ASSERT_TRUE(run.ok()) << run << "\n" << log.str();
  EXPECT_NE(log.str().find("MoE block " + MoEBlockPath(s.family, 3)), std::string::npos)
      << log.str();

  auto ckpt = Checkpoint::Open(o.out);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  auto qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  auto dump = SafetensorsFile::Open(o.dump_canonical);
  ASSERT_TRUE(dump.ok()) << dump.status();
  const nlohmann::json& cfg = (*ckpt)->config();
  EXPECT_EQ(cfg.value("model_type", ""), s.family);
  EXPECT_EQ(cfg.value("hidden_size", 0), s.hidden);
  EXPECT_EQ(cfg.value("num_experts_per_tok", 0), s.top_k);

  // Linear listing: the o_proj only (router gates are MoE members too).
  auto members = MoEMemberModules(**ckpt);
  ASSERT_TRUE(members.ok()) << members.status();
  auto linears = ListLinearLayers(**ckpt, *qc);
  ASSERT_TRUE(linears.ok()) << linears.status();
  std::vector<std::string> plain;
  for (const LinearLayerEntry& e : *linears) {
    if (!IsMoEMember(*members, e.name)) plain.push_back(e.name);
  }
  EXPECT_EQ(plain, std::vector<std::string>{"model.layers.0.self_attn.o_proj"});

  auto blocks = ListMoEBlocks(**ckpt, *qc);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  ASSERT_EQ(blocks->size(), 2u);
  const bool mixtral = s.family == "mixtral";
  const bool deepseek = s.family == "deepseek_v2" || s.family == "deepseek_v3";
  const bool v3 = s.family == "deepseek_v3";
  for (size_t b = 0; b < blocks->size(); ++b) {
    const MoEBlockEntry& entry = (*blocks)[b];
    const std::string P = MoEBlockPath(s.family, s.layers[b]);
    SCOPED_TRACE(P);
    ASSERT_EQ(entry.name, P);
    EXPECT_EQ(MoEFamilyName(entry.family), s.family);
    EXPECT_EQ(entry.hidden, s.hidden);
    const RouterConfig& r = entry.router;
    EXPECT_EQ(r.num_experts, s.experts);
    EXPECT_EQ(r.top_k, s.top_k);
    EXPECT_EQ(r.norm_topk_prob, mixtral || s.family == "qwen3_moe" || v3);
    EXPECT_EQ(r.scoring, v3 ? RouterScoring::kSigmoid : RouterScoring::kSoftmax);
    EXPECT_EQ(r.has_correction_bias, v3);
    if (deepseek) {
      EXPECT_EQ(r.topk_method, v3 ? TopkMethod::kNoauxTc : TopkMethod::kGroupLimitedGreedy);
      EXPECT_EQ(r.n_group, s.n_group);
      EXPECT_EQ(r.topk_group, s.topk_group);
      EXPECT_EQ(r.routed_scaling_factor, v3 ? 2.5f : 1.0f);
    } else {
      EXPECT_EQ(r.topk_method, TopkMethod::kGreedy);
    }

    auto block = LoadMoEBlock(**ckpt, *qc, entry);
    ASSERT_TRUE(block.ok()) << block.status();
    ASSERT_EQ(block->num_experts(), s.experts);
    EXPECT_EQ(block->intermediate, s.intermediate);
    for (int64_t e = 0; e < s.experts; ++e) {
      const std::vector<std::string> m = MlpNames(absl::StrCat(P, ".experts.", e), mixtral);
      const MoEExpert& x = block->experts[e];
      const std::string what = absl::StrCat("expert ", e);
      ExpectDumped(**dump, m[0], x.w13, 0, what + " gate");
      ExpectDumped(**dump, m[1], x.w13, s.intermediate, what + " up");
      ExpectDumped(**dump, m[2], x.w2, 0, what + " down");
      EXPECT_EQ(x.w13.scales.dtype(), c.dtype);
    }
    ASSERT_EQ(block->shared.has_value(), s.shared_intermediate > 0);
    if (block->shared.has_value()) {
      const std::vector<std::string> m =
          MlpNames(P + (deepseek ? ".shared_experts" : ".shared_expert"), false);
      EXPECT_EQ(block->shared->intermediate(), s.shared_intermediate);
      ExpectDumped(**dump, m[0], block->shared->w13, 0, "shared gate");
      ExpectDumped(**dump, m[1], block->shared->w13, s.shared_intermediate, "shared up");
      ExpectDumped(**dump, m[2], block->shared->w2, 0, "shared down");
    }
    // Dense router pieces, as stored, in the model dtype (bias f32).
    const ConstTensorView* gate = (*ckpt)->Find(P + ".gate.weight");
    ASSERT_NE(gate, nullptr);
    EXPECT_EQ(gate->dtype, c.dtype);
    EXPECT_TRUE(SameTensor(block->gate.view(), *gate));
    EXPECT_EQ(block->shared_expert_gate.empty(), s.family != "qwen2_moe");
    if (!block->shared_expert_gate.empty()) {
      EXPECT_EQ(block->shared_expert_gate.shape(), (Shape{1, s.hidden}));
    }
    EXPECT_EQ(block->correction_bias.empty(), !v3);
    if (v3) EXPECT_EQ(block->correction_bias.dtype(), DType::kF32);

    // The router gate is named where the format keeps modules dense.
    const nlohmann::json& q = cfg["quantization_config"];
    const std::string gate_module = P + ".gate";
    if (c.format.rfind("compressed-tensors", 0) == 0) {
      EXPECT_NE(std::find(q["ignore"].begin(), q["ignore"].end(), gate_module), q["ignore"].end())
          << q.dump();
    } else if (c.format == "awq") {
      const auto& list = q["modules_to_not_convert"];
      EXPECT_NE(std::find(list.begin(), list.end(), gate_module), list.end()) << q.dump();
    } else if (c.format.rfind("auto-round", 0) == 0) {
      EXPECT_EQ(q["extra_config"][gate_module]["bits"], 16) << q.dump();
    }

    // Routing decides: the gate spreads logits of unit inputs over units.
    auto router = MoERouter::FromBlock(*block);
    ASSERT_TRUE(router.ok()) << router.status();
    std::mt19937_64 rng(Seed());
    Tensor x = moetest::RandomActivations(16, s.hidden, DType::kF32, rng);
    std::vector<float> logits(static_cast<size_t>(16 * s.experts));
    ASSERT_TRUE(router->ComputeLogits(x.view(), logits.data()).ok());
    double sq = 0;
    for (float l : logits) sq += static_cast<double>(l) * l;
    EXPECT_GT(std::sqrt(sq / logits.size()), 0.3);
  }
  std::filesystem::remove_all(dir);
}

TEST(MoEQuantizeToolTest, Mixtral) {
  RoundTrip({Spec("mixtral"), "gptq", false, false, DType::kF16});
  RoundTrip({Spec("mixtral"), "awq", false, false, DType::kF16});
  RoundTrip({Spec("mixtral"), "compressed-tensors-int", false, true, DType::kBF16});
}

TEST(MoEQuantizeToolTest, Qwen2Moe) {
  RoundTrip({Spec("qwen2_moe"), "awq", false, false, DType::kF16});
  RoundTrip({Spec("qwen2_moe"), "compressed-tensors", true, true, DType::kBF16});
}

TEST(MoEQuantizeToolTest, Qwen3Moe) {
  RoundTrip({Spec("qwen3_moe"), "gptq_v2", false, true, DType::kF16});
  RoundTrip({Spec("qwen3_moe"), "auto-round-awq", true, false, DType::kF16});
}

TEST(MoEQuantizeToolTest, DeepseekV2) {
  RoundTrip({Spec("deepseek_v2"), "auto-round-gptq", true, false, DType::kF16});
  RoundTrip({Spec("deepseek_v2"), "gptq", false, false, DType::kBF16});
}

TEST(MoEQuantizeToolTest, DeepseekV3) {
  RoundTrip({Spec("deepseek_v3"), "compressed-tensors", false, false, DType::kBF16});
  RoundTrip({Spec("deepseek_v3"), "awq", false, false, DType::kF16});
  RoundTrip({Spec("deepseek_v3"), "compressed-tensors-int", true, false, DType::kF16});
}

// Flags that do not fit the family are refused naming the reason.
TEST(MoEQuantizeToolTest, BadSpecsAreRefused) {
  struct Bad {
    std::string family;
    std::function<void(MoEToolSpec&)> edit;
    std::string expect;
  };
  const std::vector<Bad> bad = {
      {"mixtral", [](MoEToolSpec& s) { s.shared_intermediate = 32; }, "no shared expert"},
      {"qwen3_moe", [](MoEToolSpec& s) { s.shared_intermediate = 32; }, "no shared expert"},
      {"deepseek_v2", [](MoEToolSpec& s) { s.shared_intermediate = 40; }, "n_shared_experts"},
      {"deepseek_v3", [](MoEToolSpec& s) { s.n_group = 3; }, "n_group=3"},
      {"deepseek_v3", [](MoEToolSpec& s) { s.topk_method = "greedy"; }, "noaux_tc"},
      {"deepseek_v2", [](MoEToolSpec& s) { s.top_k = 5; }, "top_k=5"},
      {"qwen2_moe", [](MoEToolSpec& s) { s.n_group = 2; }, "DeepSeek router settings"},
      {"mixtral", [](MoEToolSpec& s) { s.top_k = 9; }, "top_k=9"},
      {"phimoe", [](MoEToolSpec&) {}, "expected mixtral"},
      {"mixtral", [](MoEToolSpec& s) { s.layers.clear(); }, "no layer"},
  };
  for (const Bad& b : bad) {
    MoEToolSpec s = Spec(b.family == "phimoe" ? "mixtral" : b.family);
    s.family = b.family;
    b.edit(s);
    QuantizeToolOptions o;
    o.format = "gptq";
    o.moe = s;
    o.out = FreshDir("bad");
    std::ostringstream log;
    const absl::Status st = RunQuantizeTool(o, log);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << b.family << ": " << st;
    EXPECT_NE(st.message().find(b.expect), std::string::npos) << st;
    EXPECT_FALSE(std::filesystem::exists(o.out)) << "wrote a checkpoint for a refused spec";
  }
  auto layers = ParseLayerList("0, 2-4,3");
  ASSERT_TRUE(layers.ok());
  EXPECT_EQ(*layers, (std::vector<int64_t>{0, 2, 3, 4}));
  EXPECT_FALSE(ParseLayerList("3-1").ok());
  EXPECT_FALSE(ParseLayerList("x").ok());
}

}  // namespace
}  // namespace qlayer
