// qlayer-quantize's MoE mode: the modules, dense tensors and config.json keys
// of MoE blocks in each family's own naming (FORMATS.md §8), so the tool
// writes checkpoints that ListMoEBlocks / LoadMoEBlock (and upstream loaders)
// read as that family:
//
//   mixtral      model.layers.L.block_sparse_moe.gate.weight [E, H]
//                  .experts.e.{w1 [I, H] (gate), w3 [I, H] (up), w2 [H, I] (down)}
//                config: num_local_experts, num_experts_per_tok, intermediate_size = I
//   qwen2_moe    model.layers.L.mlp.gate.weight [E, H]
//                  .experts.e.{gate_proj, up_proj, down_proj}
//                  .shared_expert.{gate_proj, up_proj, down_proj} (width Is)
//                  .shared_expert_gate.weight [1, H]
//                config: num_experts, num_experts_per_tok, norm_topk_prob (false),
//                moe_intermediate_size, shared_expert_intermediate_size
//   qwen3_moe    as qwen2_moe without shared expert; norm_topk_prob true
//   deepseek_v2  model.layers.L.mlp.gate.weight [E, H], .experts.e.*,
//                  .shared_experts.* (one MLP of n_shared_experts * I = Is)
//                config: n_routed_experts, n_shared_experts, moe_intermediate_size,
//                scoring_func softmax, topk_method greedy | group_limited_greedy,
//                n_group, topk_group, norm_topk_prob (false), routed_scaling_factor (1),
//                first_k_dense_replace = the first MoE layer
//   deepseek_v3  as deepseek_v2 plus .gate.e_score_correction_bias [E] f32;
//                scoring_func sigmoid, topk_method noaux_tc, norm_topk_prob (true),
//                routed_scaling_factor (2.5)
//
// Expert projections are quantized like every --shape layer; the router gate
// and shared_expert_gate stay dense in the model dtype (the format's ignore
// list names them, as upstream quantizers leave them), the correction bias is
// f32 as DeepSeek-V3 ships it.
#ifndef QLAYER_SERVER_TOOLS_MOE_CHECKPOINT_H_
#define QLAYER_SERVER_TOOLS_MOE_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/dtype.h"
#include "qlayer/kernels/formats.h"

namespace qlayer {

struct MoEToolSpec {
  std::string family;               // mixtral | qwen2_moe | qwen3_moe | deepseek_v2 | deepseek_v3
  std::vector<int64_t> layers;      // decoder layer indices holding an MoE block
  int64_t hidden = 0;               // H
  int64_t intermediate = 0;         // I of each routed expert
  int64_t experts = 0;              // E
  int top_k = 0;                    // k
  int64_t shared_intermediate = 0;  // Is: shared expert width, 0 = none
  int64_t n_group = 1;              // DeepSeek grouped routing
  int64_t topk_group = 1;
  std::string topk_method;                      // DeepSeek; "" = the family's default
  std::optional<double> routed_scaling_factor;  // DeepSeek; unset = family default
  std::optional<bool> norm_topk_prob;           // Qwen / DeepSeek; unset = family default
};

// One quantized projection the block stores: module path and Linear.weight
// shape [N, K].
struct MoELinear {
  std::string name;
  int64_t N = 0;
  int64_t K = 0;
  // Projections reading the same input (an MLP's gate and up) share this id:
  // GPTQ's act-order permutation depends only on the input statistics, so
  // real checkpoints give them one g_idx, and w13 = [gate | up] needs it.
  int64_t shared_input = -1;
};

struct MoEModules {
  std::vector<MoELinear> linears;          // experts' and shared experts' projections
  NamedTensors dense;                      // router gates, shared_expert_gate, correction bias
  std::vector<std::string> dense_modules;  // modules stored dense (gate, shared_expert_gate)
  std::vector<std::string> blocks;         // block module paths, for the log
  nlohmann::json config;                   // keys to merge into config.json
};

// "1,3" or "1-3" or a mix ("0,2-4"): sorted, distinct, each in [0, 10000).
absl::StatusOr<std::vector<int64_t>> ParseLayerList(absl::string_view text);

// The module path of the MoE block of `family` in decoder layer `layer`.
std::string MoEBlockPath(absl::string_view family, int64_t layer);

// Checks the spec (family known, sizes positive, the router settings valid for
// the family: e.g. no shared expert for mixtral / qwen3_moe, Is a multiple of
// I for DeepSeek, n_group dividing E) and builds what to write. Dense tensors
// are seeded from `seed`: router gates ~ N(0, 4/H) so logits of inputs of
// unit scale spread over a few units (routing is decisive, as in trained
// models); dtype is the model dtype (config torch_dtype).
absl::StatusOr<MoEModules> BuildMoEModules(const MoEToolSpec& spec, DType dtype, uint64_t seed);

}  // namespace qlayer

#endif  // QLAYER_SERVER_TOOLS_MOE_CHECKPOINT_H_
