// quantization_config -> per-module scheme, for every method qlayer reads,
// with the overrides, target precedence and rejections of FORMATS.md §2-§6;
// and MakeQuantConfig's output read back through the same parser.
#include "server/checkpoint/quant_config.h"

#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qlayer {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;

QuantConfig MustParse(const json& qc) {
  auto c = QuantConfig::Parse(json{{"quantization_config", qc}});
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *std::move(c) : QuantConfig();
}

LayerScheme MustScheme(const QuantConfig& c, const std::string& name) {
  auto s = c.SchemeFor(name, /*has_quantized_tensors=*/true);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : LayerScheme();
}

void ExpectScheme(const LayerScheme& s, CheckpointFormat f, int bits, int64_t group, bool sym,
                  bool act_order, const std::string& origin) {
  EXPECT_EQ(s.format, f) << CheckpointFormatName(s.format);
  EXPECT_EQ(s.bits, bits);
  EXPECT_EQ(s.group_size, group);
  EXPECT_EQ(s.sym, sym);
  EXPECT_EQ(s.act_order, act_order);
  EXPECT_EQ(s.origin, origin);
}

void ExpectRejected(const QuantConfig& c, const std::string& name, absl::StatusCode code,
                    const std::vector<std::string>& substrs) {
  auto s = c.SchemeFor(name, true);
  ASSERT_FALSE(s.ok()) << name << " resolved to " << CheckpointFormatName(s->format);
  EXPECT_EQ(s.status().code(), code) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr(name)) << "must name the layer";
  for (const std::string& sub : substrs) EXPECT_THAT(s.status().message(), HasSubstr(sub));
}

void ExpectParseError(const json& qc, absl::StatusCode code, const std::string& substr) {
  auto c = QuantConfig::Parse(json{{"quantization_config", qc}});
  ASSERT_FALSE(c.ok()) << qc.dump();
  EXPECT_EQ(c.status().code(), code) << c.status();
  EXPECT_THAT(c.status().message(), HasSubstr(substr));
}

TEST(QuantConfigTest, NoQuantizationConfig) {
  auto c = QuantConfig::Parse(json{{"torch_dtype", "float16"}});
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->quant_method(), "");
  auto s = c->SchemeFor("lm_head", false);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->format, CheckpointFormat::kDense);
  ExpectRejected(*c, "model.layers.0.mlp.up_proj", absl::StatusCode::kInvalidArgument,
                 {"no quantization_config"});
  EXPECT_TRUE(QuantConfig::Parse(json()).ok());
  EXPECT_FALSE(QuantConfig::Parse(json::array()).ok());
}

TEST(QuantConfigTest, UnknownMethodsAndMalformed) {
  ExpectParseError({{"quant_method", "fp8"}}, absl::StatusCode::kUnimplemented,
                   "quant_method 'fp8' is not supported");
  ExpectParseError({{"quant_method", "bitsandbytes"}, {"load_in_4bit", true}},
                   absl::StatusCode::kUnimplemented, "'bitsandbytes'");
  ExpectParseError({{"bits", 4}}, absl::StatusCode::kInvalidArgument, "no \"quant_method\"");
  ExpectParseError(json::array({1}), absl::StatusCode::kInvalidArgument, "not an object");
  ExpectParseError({{"quant_method", "gptq"}, {"bits", "4"}}, absl::StatusCode::kInvalidArgument,
                   "\"bits\" must be an integer");
  ExpectParseError({{"quant_method", "gptq"}, {"bits", 4}, {"desc_act", "yes"}},
                   absl::StatusCode::kInvalidArgument, "\"desc_act\" must be true or false");
  ExpectParseError({{"quant_method", "gptq"}}, absl::StatusCode::kInvalidArgument,
                   "has no \"bits\"");
}

TEST(QuantConfigTest, AnyModuleWithoutQuantizedTensorsIsDense) {
  const QuantConfig c = MustParse({{"quant_method", "gptq"}, {"bits", 3}});
  auto s = c.SchemeFor("lm_head", false);
  ASSERT_TRUE(s.ok()) << s.status();
  ExpectScheme(*s, CheckpointFormat::kDense, 0, -1, true, false, "dense");
}

TEST(QuantConfigTest, Gptq) {
  const QuantConfig c = MustParse({{"quant_method", "gptq"},
                                   {"bits", 4},
                                   {"group_size", 128},
                                   {"desc_act", true},
                                   {"sym", false}});
  EXPECT_EQ(c.quant_method(), "gptq");
  ExpectScheme(MustScheme(c, "m.q_proj"), CheckpointFormat::kGptq, 4, 128, false, true, "gptq");

  ExpectScheme(MustScheme(MustParse({{"quant_method", "GPTQ"},
                                     {"bits", 8},
                                     {"group_size", -1},
                                     {"checkpoint_format", "gptq_v2"}}),
                          "a"),
               CheckpointFormat::kGptqV2, 8, -1, true, false, "gptq_v2");
  // GPTQModel 2.x spelling.
  ExpectScheme(
      MustScheme(MustParse({{"quant_method", "gptq"}, {"bits", 4}, {"format", "gptq_v2"}}), "a"),
      CheckpointFormat::kGptqV2, 4, 128, true, false, "gptq_v2");

  ExpectRejected(MustParse({{"quant_method", "gptq"}, {"bits", 3}, {"group_size", 128}}), "m.o",
                 absl::StatusCode::kUnimplemented, {"(gptq)", "3-bit"});
  ExpectRejected(MustParse({{"quant_method", "gptq"}, {"bits", 2}}), "m.o",
                 absl::StatusCode::kUnimplemented, {"2-bit"});
  ExpectRejected(
      MustParse({{"quant_method", "gptq"}, {"bits", 4}, {"checkpoint_format", "marlin"}}), "m.o",
      absl::StatusCode::kUnimplemented, {"checkpoint_format 'marlin'"});
  ExpectRejected(MustParse({{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 0}}), "m.o",
                 absl::StatusCode::kInvalidArgument, {"group_size 0"});
}

TEST(QuantConfigTest, GptqDynamicRules) {
  const QuantConfig c = MustParse({{"quant_method", "gptq"},
                                   {"bits", 4},
                                   {"group_size", 128},
                                   {"dynamic",
                                    {{"-:.*lm_head", json::object()},
                                     {"+:.*down_proj", {{"bits", 8}, {"group_size", 32}}},
                                     {"model\\.layers\\.3\\..*", {{"desc_act", true}}}}}});
  ExpectScheme(MustScheme(c, "model.layers.0.mlp.down_proj"), CheckpointFormat::kGptq, 8, 32, true,
               false, "gptq");
  ExpectScheme(MustScheme(c, "model.layers.0.mlp.up_proj"), CheckpointFormat::kGptq, 4, 128, true,
               false, "gptq");
  ExpectScheme(MustScheme(c, "model.layers.3.mlp.up_proj"), CheckpointFormat::kGptq, 4, 128, true,
               true, "gptq");
  ExpectRejected(c, "lm_head", absl::StatusCode::kInvalidArgument,
                 {"keeps it unquantized", "dynamic rule '-:.*lm_head'"});
  // Two positive rules that disagree: ambiguous, since JSON order is not kept.
  ExpectRejected(c, "model.layers.3.mlp.down_proj", absl::StatusCode::kInvalidArgument,
                 {"both match"});
  ExpectParseError({{"quant_method", "gptq"}, {"bits", 4}, {"dynamic", {{"+:(", json::object()}}}},
                   absl::StatusCode::kInvalidArgument, "not a valid regular expression");
}

TEST(QuantConfigTest, Awq) {
  const QuantConfig c = MustParse({{"quant_method", "awq"},
                                   {"bits", 4},
                                   {"group_size", 128},
                                   {"zero_point", true},
                                   {"version", "GEMM"},
                                   {"modules_to_not_convert", {"visual", "mlp.gate."}}});
  ExpectScheme(MustScheme(c, "model.layers.0.self_attn.q_proj"), CheckpointFormat::kAwq, 4, 128,
               false, false, "awq");
  ExpectRejected(c, "model.visual.blocks.0.fc1", absl::StatusCode::kInvalidArgument,
                 {"modules_to_not_convert 'visual'"});
  auto dense = c.SchemeFor("model.visual.blocks.0.fc1", false);
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->format, CheckpointFormat::kDense);

  ExpectScheme(
      MustScheme(MustParse({{"quant_method", "awq"}, {"bits", 4}, {"zero_point", false}}), "x"),
      CheckpointFormat::kAwq, 4, 128, true, false, "awq");
  for (const char* v : {"gemv", "GEMV_FAST", "marlin", "ipex", "exllama"}) {
    ExpectRejected(MustParse({{"quant_method", "awq"}, {"bits", 4}, {"version", v}}), "x",
                   absl::StatusCode::kUnimplemented, {"is a different packing", "'gemm'"});
  }
  ExpectRejected(MustParse({{"quant_method", "awq"}, {"bits", 4}, {"version", "wat"}}), "x",
                 absl::StatusCode::kUnimplemented, {"'wat' is unknown"});
  ExpectRejected(MustParse({{"quant_method", "awq"}, {"bits", 8}}), "x",
                 absl::StatusCode::kUnimplemented, {"8-bit AWQ"});
  ExpectParseError({{"quant_method", "awq"}, {"bits", 4}, {"modules_to_not_convert", "visual"}},
                   absl::StatusCode::kInvalidArgument, "list of strings");
}

json CtGroup(json targets, json weights) {
  return {{"targets", std::move(targets)},
          {"weights", std::move(weights)},
          {"input_activations", nullptr},
          {"output_activations", nullptr}};
}

json CtWeights(int bits, const std::string& strategy, json group_size, bool sym = true) {
  return {{"num_bits", bits},
          {"type", "int"},
          {"symmetric", sym},
          {"strategy", strategy},
          {"group_size", std::move(group_size)},
          {"dynamic", false},
          {"actorder", nullptr}};
}

TEST(QuantConfigTest, CompressedTensorsBasic) {
  const QuantConfig c =
      MustParse({{"quant_method", "compressed-tensors"},
                 {"format", "pack-quantized"},
                 {"config_groups", {{"group_0", CtGroup({"Linear"}, CtWeights(4, "group", 128))}}},
                 {"ignore", {"lm_head", "re:.*mlp\\.gate$"}}});
  ExpectScheme(MustScheme(c, "model.layers.0.mlp.gate_proj"), CheckpointFormat::kCtPackQuantized, 4,
               128, true, false, "compressed-tensors");
  ExpectRejected(c, "lm_head", absl::StatusCode::kInvalidArgument, {"ignore 'lm_head'"});
  ExpectRejected(c, "model.layers.0.mlp.gate", absl::StatusCode::kInvalidArgument,
                 {"ignore 're:.*mlp\\.gate$'"});
  auto dense = c.SchemeFor("model.layers.0.mlp.gate", false);
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->format, CheckpointFormat::kDense);
}

TEST(QuantConfigTest, CompressedTensorsTargetPrecedence) {
  json a = CtGroup({"Linear"}, CtWeights(8, "channel", nullptr));
  json b = CtGroup({"re:.*mlp\\..*"}, CtWeights(4, "group", 32));
  json c = CtGroup({"model.layers.0.mlp.down_proj"}, CtWeights(4, "group", 64, false));
  const QuantConfig q = MustParse({{"quant_method", "compressed-tensors"},
                                   {"format", "pack-quantized"},
                                   {"config_groups", {{"a", a}, {"b", b}, {"c", c}}}});
  // exact name > regex > class name
  ExpectScheme(MustScheme(q, "model.layers.0.mlp.down_proj"), CheckpointFormat::kCtPackQuantized, 4,
               64, false, false, "compressed-tensors");
  ExpectScheme(MustScheme(q, "model.layers.1.mlp.down_proj"), CheckpointFormat::kCtPackQuantized, 4,
               32, true, false, "compressed-tensors");
  ExpectScheme(MustScheme(q, "model.layers.1.self_attn.o_proj"), CheckpointFormat::kCtPackQuantized,
               8, -1, true, false, "compressed-tensors");

  // Equal claims are ambiguous.
  const QuantConfig tie =
      MustParse({{"quant_method", "compressed-tensors"},
                 {"format", "pack-quantized"},
                 {"config_groups",
                  {{"x", CtGroup({"Linear"}, CtWeights(4, "group", 128))},
                   {"y", CtGroup({"Linear"}, CtWeights(8, "channel", nullptr))}}}});
  ExpectRejected(tie, "m.up", absl::StatusCode::kInvalidArgument, {"x, y", "equally"});

  // re: targets match like Python's re.match: from the start, open-ended.
  const QuantConfig re =
      MustParse({{"quant_method", "compressed-tensors"},
                 {"format", "pack-quantized"},
                 {"config_groups",
                  {{"attn", CtGroup({"re:.*self_attn"}, CtWeights(4, "group", 32))},
                   {"mlp", CtGroup({"re:mlp"}, CtWeights(4, "group", 32))}}}});
  EXPECT_EQ(MustScheme(re, "model.layers.0.self_attn.q_proj").group_size, 32);
  ExpectRejected(re, "model.layers.0.mlp.up_proj", absl::StatusCode::kInvalidArgument,
                 {"no config_groups target matches", "attn, mlp"});
}

TEST(QuantConfigTest, CompressedTensorsStrategiesAndActorder) {
  auto one = [](json weights, json extra = json::object()) {
    json qc = {{"quant_method", "compressed-tensors"},
               {"format", "pack-quantized"},
               {"config_groups", {{"g", CtGroup({"Linear"}, std::move(weights))}}}};
    qc.update(extra);
    return qc;
  };
  ExpectScheme(MustScheme(MustParse(one(CtWeights(8, "channel", nullptr, false))), "m"),
               CheckpointFormat::kCtPackQuantized, 8, -1, false, false, "compressed-tensors");
  EXPECT_EQ(MustScheme(MustParse(one(CtWeights(4, "tensor", nullptr))), "m").group_size, 0);
  json w = CtWeights(4, "group", 128);
  w["actorder"] = "group";
  EXPECT_TRUE(MustScheme(MustParse(one(w)), "m").act_order);
  w["actorder"] = "weight";
  EXPECT_FALSE(MustScheme(MustParse(one(w)), "m").act_order);
  w["actorder"] = "sideways";
  ExpectParseError(one(w), absl::StatusCode::kInvalidArgument, "unknown actorder 'sideways'");

  w = CtWeights(4, "block", nullptr);
  ExpectRejected(MustParse(one(w)), "m", absl::StatusCode::kUnimplemented, {"strategy 'block'"});
  w = CtWeights(8, "channel", nullptr);
  w["type"] = "float";
  ExpectRejected(MustParse(one(w)), "m", absl::StatusCode::kUnimplemented, {"type 'float'"});
  w = CtWeights(4, "group", nullptr);
  ExpectRejected(MustParse(one(w)), "m", absl::StatusCode::kInvalidArgument,
                 {"strategy group but group_size -1"});

  json act = one(CtWeights(8, "channel", nullptr));
  act["config_groups"]["g"]["input_activations"] = {{"num_bits", 8}, {"type", "int"}};
  ExpectRejected(MustParse(act), "m", absl::StatusCode::kUnimplemented,
                 {"input_activations", "weight-only"});

  // Formats: naive/int-quantized read; the rest rejected by name; a group's
  // own format wins over the top-level one.
  EXPECT_EQ(
      MustScheme(MustParse(one(CtWeights(8, "channel", nullptr), {{"format", "int-quantized"}})),
                 "m")
          .format,
      CheckpointFormat::kCtIntQuantized);
  EXPECT_EQ(
      MustScheme(MustParse(one(CtWeights(8, "channel", nullptr), {{"format", "naive-quantized"}})),
                 "m")
          .format,
      CheckpointFormat::kCtIntQuantized);
  for (const char* f : {"float-quantized", "marlin-24", "nvfp4-pack-quantized"}) {
    ExpectRejected(MustParse(one(CtWeights(4, "group", 128), {{"format", f}})), "m",
                   absl::StatusCode::kUnimplemented, {std::string("format '") + f + "'"});
  }
  json mixed = one(CtWeights(4, "group", 128), {{"format", "mixed-precision"}});
  mixed["config_groups"]["g"]["format"] = "pack-quantized";
  EXPECT_EQ(MustScheme(MustParse(mixed), "m").format, CheckpointFormat::kCtPackQuantized);

  ExpectRejected(MustParse(one(CtWeights(4, "group", 128),
                               {{"sparsity_config",
                                 {{"format", "sparse-24-bitmask"}, {"targets", {"Linear"}}}}})),
                 "m", absl::StatusCode::kUnimplemented, {"sparse format 'sparse-24-bitmask'"});
  EXPECT_EQ(MustScheme(MustParse(one(CtWeights(4, "group", 128),
                                     {{"sparsity_config", {{"format", "dense"}}}})),
                       "m")
                .bits,
            4);
  ExpectParseError(one(CtWeights(4, "group", 128), {{"ignore", {"re:[unclosed"}}}),
                   absl::StatusCode::kInvalidArgument, "not a valid regular expression");
}

TEST(QuantConfigTest, AutoRound) {
  const json base = {{"quant_method", "auto-round"},
                     {"bits", 4},
                     {"group_size", 128},
                     {"sym", true},
                     {"data_type", "int"}};
  ExpectScheme(MustScheme(MustParse(base), "m"), CheckpointFormat::kGptq, 4, 128, true, false,
               "auto-round:auto_gptq");
  json q = base;
  q["quant_method"] = "intel/auto-round";
  EXPECT_EQ(MustScheme(MustParse(q), "m").format, CheckpointFormat::kGptq);

  const std::pair<const char*, std::pair<CheckpointFormat, const char*>> packings[] = {
      {"auto_round:auto_gptq", {CheckpointFormat::kGptq, "auto-round:auto_gptq"}},
      {"auto_round:gptq", {CheckpointFormat::kGptq, "auto-round:gptq"}},
      {"auto_round", {CheckpointFormat::kGptq, "auto-round:auto_round"}},
      {"auto_round:auto_awq", {CheckpointFormat::kAwq, "auto-round:auto_awq"}},
      {"auto_round:llm_compressor",
       {CheckpointFormat::kCtPackQuantized, "auto-round:llm_compressor"}},
  };
  for (const auto& [pf, want] : packings) {
    q = base;
    q["packing_format"] = pf;
    const LayerScheme s = MustScheme(MustParse(q), "m");
    EXPECT_EQ(s.format, want.first) << pf;
    EXPECT_EQ(s.origin, want.second) << pf;
  }
  q = base;
  q["packing_format"] = "auto_round:auto_awq";
  q["bits"] = 8;
  ExpectRejected(MustParse(q), "m", absl::StatusCode::kUnimplemented, {"8-bit AWQ"});
  q = base;
  q["packing_format"] = "auto_round:fp8";
  ExpectRejected(MustParse(q), "m", absl::StatusCode::kUnimplemented,
                 {"packing_format 'auto_round:fp8'"});
  q = base;
  q["data_type"] = "nv_fp";
  ExpectRejected(MustParse(q), "m", absl::StatusCode::kUnimplemented, {"data_type 'nv_fp'"});
  q = base;
  q["act_bits"] = 8;
  ExpectRejected(MustParse(q), "m", absl::StatusCode::kUnimplemented, {"act_bits 8"});
  q = base;
  q["bits"] = 2;
  ExpectRejected(MustParse(q), "m", absl::StatusCode::kUnimplemented, {"(auto-round)", "2-bit"});
}

TEST(QuantConfigTest, AutoRoundExtraConfig) {
  json q = {{"quant_method", "auto-round"}, {"bits", 4}, {"group_size", 128}, {"sym", true}};
  q["extra_config"] = {{"model.layers.0.mlp.down_proj", {{"bits", 8}, {"group_size", 32}}},
                       {"lm_head", {{"bits", 16}, {"data_type", "float"}}},
                       {"model.layers.1.mlp.up_proj", {{"data_type", "mx_fp"}}},
                       {"model.layers.2.mlp.up_proj", {{"sym", false}}}};
  const QuantConfig c = MustParse(q);
  ExpectScheme(MustScheme(c, "model.layers.0.mlp.down_proj"), CheckpointFormat::kGptq, 8, 32, true,
               false, "auto-round:auto_gptq");
  ExpectScheme(MustScheme(c, "model.layers.2.mlp.up_proj"), CheckpointFormat::kGptq, 4, 128, false,
               false, "auto-round:auto_gptq");
  // Exact names only: a longer name is not overridden.
  EXPECT_EQ(MustScheme(c, "model.layers.0.mlp.down_proj2").bits, 4);
  ExpectRejected(c, "lm_head", absl::StatusCode::kInvalidArgument, {"extra_config bits 16"});
  auto dense = c.SchemeFor("lm_head", false);
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->format, CheckpointFormat::kDense);
  ExpectRejected(c, "model.layers.1.mlp.up_proj", absl::StatusCode::kUnimplemented,
                 {"data_type 'mx_fp'"});
  q["extra_config"]["bad"] = {{"bits", "eight"}};
  ExpectParseError(q, absl::StatusCode::kInvalidArgument, "extra_config 'bad'");
}

TEST(QuantConfigTest, AutoRoundLlmCompressorWithGroups) {
  json q = {{"quant_method", "auto-round"},
            {"bits", 4},
            {"group_size", 128},
            {"packing_format", "auto_round:llm_compressor"},
            {"format", "pack-quantized"},
            {"config_groups", {{"g", CtGroup({"Linear"}, CtWeights(8, "channel", nullptr))}}},
            {"ignore", {"lm_head"}}};
  const QuantConfig c = MustParse(q);
  ExpectScheme(MustScheme(c, "m"), CheckpointFormat::kCtPackQuantized, 8, -1, true, false,
               "auto-round:llm_compressor");
  ExpectRejected(c, "lm_head", absl::StatusCode::kInvalidArgument, {"ignore 'lm_head'"});
}

struct MakeCase {
  const char* format;
  int bits;
  int64_t group;
  bool sym;
  bool act_order;
  CheckpointFormat want;
  const char* origin;
};

TEST(MakeQuantConfigTest, ReadsBackThroughParse) {
  const MakeCase cases[] = {
      {"gptq", 4, 128, true, false, CheckpointFormat::kGptq, "gptq"},
      {"gptq", 8, -1, false, true, CheckpointFormat::kGptq, "gptq"},
      {"gptq_v2", 4, 32, false, true, CheckpointFormat::kGptqV2, "gptq_v2"},
      {"awq", 4, 64, false, false, CheckpointFormat::kAwq, "awq"},
      {"awq", 4, -1, true, false, CheckpointFormat::kAwq, "awq"},
      {"compressed-tensors", 4, 128, true, true, CheckpointFormat::kCtPackQuantized,
       "compressed-tensors"},
      {"compressed-tensors", 8, -1, false, false, CheckpointFormat::kCtPackQuantized,
       "compressed-tensors"},
      {"compressed-tensors-int", 8, 64, true, false, CheckpointFormat::kCtIntQuantized,
       "compressed-tensors"},
      {"compressed-tensors-int", 4, -1, false, true, CheckpointFormat::kCtIntQuantized,
       "compressed-tensors"},
      {"auto-round-gptq", 8, 32, false, false, CheckpointFormat::kGptq, "auto-round:auto_gptq"},
      {"auto-round-awq", 4, 128, true, false, CheckpointFormat::kAwq, "auto-round:auto_awq"},
  };
  for (const MakeCase& mc : cases) {
    SCOPED_TRACE(mc.format);
    auto qc = MakeQuantConfig(mc.format, mc.bits, mc.group, mc.sym, mc.act_order);
    ASSERT_TRUE(qc.ok()) << qc.status();
    const QuantConfig c = MustParse(*qc);
    ExpectScheme(MustScheme(c, "model.layers.0.mlp.up_proj"), mc.want, mc.bits, mc.group, mc.sym,
                 mc.act_order, mc.origin);
    if (absl::StartsWith(mc.format, "compressed-tensors")) {
      ExpectRejected(c, "lm_head", absl::StatusCode::kInvalidArgument, {"ignore 'lm_head'"});
    }
  }
  auto dense = MakeQuantConfig("dense", 4, 128, false, false);
  ASSERT_TRUE(dense.ok());
  EXPECT_TRUE(dense->is_null());
}

TEST(MakeQuantConfigTest, WritesUpstreamFields) {
  json g = *MakeQuantConfig("gptq_v2", 4, 128, false, true);
  EXPECT_EQ(g["quant_method"], "gptq");
  EXPECT_EQ(g["checkpoint_format"], "gptq_v2");
  EXPECT_EQ(g["desc_act"], true);
  EXPECT_EQ(g["sym"], false);
  json a = *MakeQuantConfig("awq", 4, 128, false, false);
  EXPECT_EQ(a["zero_point"], true);
  EXPECT_EQ(a["version"], "gemm");
  json ct = *MakeQuantConfig("compressed-tensors", 4, -1, true, true);
  const json& w = ct["config_groups"]["group_0"]["weights"];
  EXPECT_EQ(w["strategy"], "channel");
  EXPECT_TRUE(w["group_size"].is_null());
  EXPECT_EQ(w["actorder"], "group");
  EXPECT_EQ(ct["format"], "pack-quantized");
  EXPECT_TRUE(ct["config_groups"]["group_0"]["input_activations"].is_null());
  // int-quantized: the same scheme, only the format strings differ.
  json ci = *MakeQuantConfig("compressed-tensors-int", 4, -1, true, true);
  EXPECT_EQ(ci["format"], "int-quantized");
  EXPECT_EQ(ci["config_groups"]["group_0"]["format"], "int-quantized");
  ci["format"] = ct["format"];
  ci["config_groups"]["group_0"]["format"] = ct["config_groups"]["group_0"]["format"];
  EXPECT_EQ(ci, ct);
  json ar = *MakeQuantConfig("auto-round-awq", 4, 128, true, false);
  EXPECT_EQ(ar["quant_method"], "auto-round");
  EXPECT_EQ(ar["packing_format"], "auto_round:auto_awq");
}

TEST(MakeQuantConfigTest, Rejections) {
  struct Bad {
    const char* format;
    int bits;
    int64_t group;
    bool act_order;
    const char* substr;
  };
  const Bad bad[] = {
      {"awq", 8, 128, false, "4-bit weights only"},
      {"awq", 4, 128, true, "no act-order"},
      {"auto-round-gptq", 4, 128, true, "no act-order"},
      {"auto-round-awq", 8, 128, false, "4-bit weights only"},
      {"gptq", 3, 128, false, "bits 3"},
      {"gptq", 4, 0, false, "group size 0"},
      {"exl2", 4, 128, false, "unknown format 'exl2'"},
  };
  for (const Bad& b : bad) {
    auto r = MakeQuantConfig(b.format, b.bits, b.group, false, b.act_order);
    ASSERT_FALSE(r.ok()) << b.format;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(b.substr));
  }
}

}  // namespace
}  // namespace qlayer
