// qlayer-quantize: writes a real quantized checkpoint directory in any format
// qlayer reads, from seeded random weights or from a dense safetensors file.
//
//   qlayer-quantize --format gptq --bits 4 --group-size 128 --sym
//       --shape model.layers.0.mlp.up_proj=11008x4096 --out /tmp/ckpt
//
// Flags are spelled with '-' or '_' (--group-size == --group_size); --shape
// may be repeated or given a comma-separated list.
//
//   qlayer-quantize --format compressed-tensors --moe deepseek_v3 --layers-moe 1
//       --hidden 256 --intermediate 128 --experts 16 --topk 4
//       --shared-intermediate 256 --n-group 4 --topk-group 2 --out /tmp/moe
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/tools/quantize_tool.h"

ABSL_FLAG(std::string, format, "",
          "awq | gptq | gptq_v2 | compressed-tensors (pack-quantized) | compressed-tensors-int "
          "(int-quantized: int8 weight [N, K]) | auto-round-gptq | auto-round-awq | dense");
ABSL_FLAG(int32_t, bits, 4, "weight bits: 4 or 8");
ABSL_FLAG(int64_t, group_size, 128, "group size along K; -1 = per output channel");
ABSL_FLAG(bool, sym, false, "symmetric (no zero points: uint4b8 / uint8b128)");
ABSL_FLAG(bool, act_order, false, "GPTQ desc_act / compressed-tensors actorder=group (g_idx)");
ABSL_FLAG(std::string, scale_dtype, "f16",
          "f16 | bf16 | f32: scales, dense weights and config torch_dtype");
ABSL_FLAG(std::string, seed, "", "random seed (default: drawn and printed)");
ABSL_FLAG(std::string, shape, "",
          "NAME=NxK: module path and Linear.weight shape [out, in]; repeatable or comma list");
ABSL_FLAG(std::string, from, "", "dense .safetensors file whose 2-D .weight tensors to quantize");
ABSL_FLAG(std::string, layers, "", "with --from: glob of modules to quantize (default all)");
ABSL_FLAG(std::string, keep_dense, "", "with --from: glob of modules to leave dense");
ABSL_FLAG(bool, bias, false, "random mode: give each layer a random bias");
ABSL_FLAG(int64_t, shard_bytes, 0, "shard model-0000i-of-0000n.safetensors above this size");
ABSL_FLAG(std::string, out, "", "checkpoint directory to write");
ABSL_FLAG(std::string, moe, "",
          "also write random MoE blocks in this family's naming and config: mixtral | "
          "qwen2_moe | qwen3_moe | deepseek_v2 | deepseek_v3");
ABSL_FLAG(std::string, layers_moe, "",
          "with --moe: decoder layers holding a block, e.g. 1,3 or 0-3");
ABSL_FLAG(int64_t, hidden, 0, "with --moe: hidden size H");
ABSL_FLAG(int64_t, intermediate, 0, "with --moe: intermediate size I of each routed expert");
ABSL_FLAG(int64_t, experts, 0, "with --moe: routed experts E");
ABSL_FLAG(int32_t, topk, 0, "with --moe: experts per token k (num_experts_per_tok)");
ABSL_FLAG(int64_t, shared_intermediate, 0,
          "with --moe qwen2_moe: shared_expert width; deepseek_*: n_shared_experts x I (0 = "
          "no shared expert)");
ABSL_FLAG(int64_t, n_group, 1, "with --moe deepseek_*: expert groups (grouped top-k)");
ABSL_FLAG(int64_t, topk_group, 1, "with --moe deepseek_*: groups kept per token");
ABSL_FLAG(std::string, topk_method, "",
          "with --moe deepseek_v2: greedy | group_limited_greedy (default: grouped when "
          "--n-group > 1); deepseek_v3 is noaux_tc");
ABSL_FLAG(std::string, routed_scaling_factor, "",
          "with --moe deepseek_*: routed_scaling_factor (default 1, V3 2.5)");
ABSL_FLAG(std::string, norm_topk_prob, "",
          "with --moe qwen*/deepseek_*: true | false (default: the family's; a bare "
          "--norm-topk-prob means true, --no-norm-topk-prob false)");
ABSL_FLAG(std::string, dump_canonical, "",
          "(testing) also write the canonical tensors that were encoded, and the source "
          "weights, to this .safetensors file");

namespace {

// absl flags are identifiers; accept the dashed spellings of the docs.
// "--group-size=8" -> "--group_size=8"; values are left alone.
std::string NormalizeFlag(const char* arg) {
  std::string s(arg);
  if (s.size() < 3 || s[0] != '-' || s[1] != '-') return s;
  const size_t end = std::min(s.find('='), s.size());
  for (size_t i = 2; i < end; ++i) {
    if (s[i] == '-') s[i] = '_';
  }
  return s;
}

int Usage(const std::string& msg) {
  std::cerr << "qlayer-quantize: " << msg << "\n(see --help)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // --help lists the flags of this file (absl looks for a file named after
  // the program, qlayer-quantize.cc, by default).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "qlayer_quantize_main");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "writes a quantized checkpoint directory.\n"
      "  qlayer-quantize --format awq|gptq|gptq_v2|compressed-tensors|compressed-tensors-int|"
      "auto-round-gptq|auto-round-awq|dense\n"
      "      --bits 4|8 --group-size G [--sym] [--act-order] [--scale-dtype f16|bf16|f32]\n"
      "      [--seed S] (--shape NAME=NxK ... | --from dense.safetensors) [--shard-bytes B]\n"
      "      --out DIR\n"
      "MoE blocks (random, alone or with --shape):\n"
      "  --moe mixtral|qwen2_moe|qwen3_moe|deepseek_v2|deepseek_v3 --layers-moe 1,3\n"
      "      --hidden H --intermediate I --experts E --topk k [--shared-intermediate Is]\n"
      "      [--n-group g --topk-group tg] [--topk-method M] [--routed-scaling-factor f]\n"
      "      [--norm-topk-prob | --no-norm-topk-prob]\n"
      "  Experts are quantized in --format; router gates and shared_expert_gate stay dense\n"
      "  (listed in the format's ignore list), named as the family names them.\n"
      "Flag names take - or _ alike (--group-size == --group_size).");
  // --shape may repeat, which absl flags would collapse to the last value:
  // collect every occurrence here and hand absl the rest.
  std::vector<std::string> args;
  std::string shapes;
  for (int i = 0; i < argc; ++i) {
    std::string a = i == 0 ? std::string(argv[0]) : NormalizeFlag(argv[i]);
    // A bare boolean spelling for the tri-state --norm-topk-prob.
    if (a == "--norm_topk_prob" || a == "--no_norm_topk_prob") {
      args.push_back(a == "--norm_topk_prob" ? "--norm_topk_prob=true" : "--norm_topk_prob=false");
      continue;
    }
    if (a == "--shape" || a == "-shape") {
      if (i + 1 >= argc) return Usage("--shape needs a value");
      absl::StrAppend(&shapes, shapes.empty() ? "" : ",", argv[++i]);
      continue;
    }
    if (a.rfind("--shape=", 0) == 0 || a.rfind("-shape=", 0) == 0) {
      absl::StrAppend(&shapes, shapes.empty() ? "" : ",", a.substr(a.find('=') + 1));
      continue;
    }
    args.push_back(std::move(a));
  }
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  std::vector<char*> rest = absl::ParseCommandLine(static_cast<int>(cargs.size()), cargs.data());
  if (rest.size() > 1) return Usage(absl::StrCat("unexpected argument '", rest[1], "'"));

  qlayer::QuantizeToolOptions o;
  o.format = absl::GetFlag(FLAGS_format);
  if (o.format.empty()) return Usage("--format is required");
  o.bits = absl::GetFlag(FLAGS_bits);
  if (o.bits != 4 && o.bits != 8) return Usage(absl::StrCat("--bits ", o.bits, ": must be 4 or 8"));
  o.group_size = absl::GetFlag(FLAGS_group_size);
  if (o.group_size != -1 && o.group_size <= 0) {
    return Usage(absl::StrCat("--group-size ", o.group_size, ": must be -1 or positive"));
  }
  o.sym = absl::GetFlag(FLAGS_sym);
  o.act_order = absl::GetFlag(FLAGS_act_order);
  const std::string sd = absl::GetFlag(FLAGS_scale_dtype);
  if (sd == "f16") {
    o.scale_dtype = qlayer::DType::kF16;
  } else if (sd == "bf16") {
    o.scale_dtype = qlayer::DType::kBF16;
  } else if (sd == "f32") {
    o.scale_dtype = qlayer::DType::kF32;
  } else {
    return Usage(absl::StrCat("--scale-dtype '", sd, "': must be f16, bf16 or f32"));
  }
  const std::string seed = absl::GetFlag(FLAGS_seed);
  if (seed.empty()) {
    o.seed = (static_cast<uint64_t>(std::random_device{}()) << 32) ^
             static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  } else if (!absl::SimpleAtoi(seed, &o.seed)) {
    return Usage(absl::StrCat("--seed '", seed, "': not an unsigned integer"));
  }
  const std::string flag_shape = absl::GetFlag(FLAGS_shape);
  if (!flag_shape.empty()) absl::StrAppend(&shapes, shapes.empty() ? "" : ",", flag_shape);
  if (!shapes.empty()) {
    auto parsed = qlayer::ParseLayerShapes(shapes);
    if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
    o.shapes = *std::move(parsed);
  }
  o.from = absl::GetFlag(FLAGS_from);
  o.layers_glob = absl::GetFlag(FLAGS_layers);
  o.keep_dense_glob = absl::GetFlag(FLAGS_keep_dense);
  o.bias = absl::GetFlag(FLAGS_bias);
  o.shard_bytes = absl::GetFlag(FLAGS_shard_bytes);
  if (o.shard_bytes < 0) return Usage("--shard-bytes must be >= 0");
  const std::string moe = absl::GetFlag(FLAGS_moe);
  if (!moe.empty()) {
    qlayer::MoEToolSpec m;
    m.family = moe;
    auto layers = qlayer::ParseLayerList(absl::GetFlag(FLAGS_layers_moe));
    if (!layers.ok()) return Usage(std::string(layers.status().message()));
    m.layers = *std::move(layers);
    m.hidden = absl::GetFlag(FLAGS_hidden);
    m.intermediate = absl::GetFlag(FLAGS_intermediate);
    m.experts = absl::GetFlag(FLAGS_experts);
    m.top_k = absl::GetFlag(FLAGS_topk);
    m.shared_intermediate = absl::GetFlag(FLAGS_shared_intermediate);
    m.n_group = absl::GetFlag(FLAGS_n_group);
    m.topk_group = absl::GetFlag(FLAGS_topk_group);
    m.topk_method = absl::GetFlag(FLAGS_topk_method);
    const std::string rsf = absl::GetFlag(FLAGS_routed_scaling_factor);
    if (!rsf.empty()) {
      double v = 0;
      if (!absl::SimpleAtod(rsf, &v)) {
        return Usage(absl::StrCat("--routed-scaling-factor '", rsf, "': not a number"));
      }
      m.routed_scaling_factor = v;
    }
    const std::string norm = absl::GetFlag(FLAGS_norm_topk_prob);
    if (norm == "true" || norm == "false") {
      m.norm_topk_prob = norm == "true";
    } else if (!norm.empty()) {
      return Usage(absl::StrCat("--norm-topk-prob '", norm, "': true or false"));
    }
    o.moe = std::move(m);
  } else if (!absl::GetFlag(FLAGS_layers_moe).empty()) {
    return Usage("--layers-moe needs --moe FAMILY");
  }
  o.out = absl::GetFlag(FLAGS_out);
  o.dump_canonical = absl::GetFlag(FLAGS_dump_canonical);

  const absl::Status s = qlayer::RunQuantizeTool(o, std::cout);
  if (!s.ok()) {
    std::cerr << "qlayer-quantize: error: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
