// A checkpoint's MoE blocks (FORMATS.md §8): found by their tensor names,
// configured from config.json, loaded into the canonical MoEBlock with every
// expert projection decoded through the shared format decoders (so each
// quantized format DecodeLinear reads works for experts too).
//
// Naming per family (P = the block's module path, e = 0 .. E-1):
//   Mixtral                 P = model.layers.L.block_sparse_moe
//                           P.gate.weight [E, H]; P.experts.e.{w1 (gate), w3 (up), w2 (down)}
//                           config: num_local_experts, num_experts_per_tok
//   Qwen2-MoE / Qwen3-MoE   P = model.layers.L.mlp
//                           P.gate.weight; P.experts.e.{gate_proj, up_proj, down_proj};
//                           Qwen2: P.shared_expert.{gate_proj, up_proj, down_proj},
//                                  P.shared_expert_gate.weight [1, H]
//                           config: num_experts, num_experts_per_tok, norm_topk_prob
//   DeepSeek-V2 / V3        P = model.layers.L.mlp (L >= first_k_dense_replace)
//                           P.gate.weight; V3: P.gate.e_score_correction_bias [E];
//                           P.experts.e.*, P.shared_experts.{gate_proj, up_proj, down_proj}
//                           config: n_routed_experts, num_experts_per_tok, scoring_func,
//                           topk_method, n_group, topk_group, norm_topk_prob,
//                           routed_scaling_factor
// The family is config.json's model_type when it names one of these, else it
// is inferred from the naming and the expert-count key present.
#ifndef QLAYER_SERVER_CHECKPOINT_MOE_CATALOG_H_
#define QLAYER_SERVER_CHECKPOINT_MOE_CATALOG_H_

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer {

enum class MoEFamily : uint8_t { kMixtral, kQwen2Moe, kQwen3Moe, kDeepseekV2, kDeepseekV3 };
// "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3" (model_type spellings).
absl::string_view MoEFamilyName(MoEFamily f);

// Module paths (no tensor suffix) of one gated MLP: gate, up, down.
using MlpModules = std::array<std::string, 3>;

struct MoEBlockEntry {
  std::string name;  // "model.layers.3.block_sparse_moe", "model.layers.3.mlp"
  MoEFamily family = MoEFamily::kMixtral;
  RouterConfig router;              // num_experts, top_k and the family's router math
  int64_t hidden = 0;               // H, from the router gate's shape
  std::string gate;                 // router module: tensor gate + ".weight" (or quantized tensors)
  std::string correction_bias;      // tensor name, or "" when none
  std::vector<MlpModules> experts;  // E of them
  std::optional<MlpModules> shared;  // shared expert(s)
  std::string shared_expert_gate;    // module, or "" when none
  LayerScheme scheme;                // of expert 0's gate projection, for listings
  // Every linear module of the block (experts, shared experts, router,
  // shared_expert_gate), sorted: the linear-layer listing leaves these out.
  std::vector<std::string> members;
};

// The MoE blocks of `ckpt` whose names match `glob` (layer_catalog.h's
// GlobMatch; empty = all), sorted by name. Errors name the block and the
// missing config key or tensor (INVALID_ARGUMENT), or the unsupported router
// setting (UNIMPLEMENTED).
absl::StatusOr<std::vector<MoEBlockEntry>> ListMoEBlocks(const Checkpoint& ckpt,
                                                         const QuantConfig& quant_config,
                                                         absl::string_view glob = "");

// Decodes every expert projection with its own scheme (QuantConfig::SchemeFor
// + DecodeLinear), stacks gate and up into w13, copies the router gate,
// correction bias and shared-expert gate in their stored dtype (a router
// stored quantized is dequantized to f32), and validates the block.
absl::StatusOr<MoEBlock> LoadMoEBlock(const Checkpoint& ckpt, const QuantConfig& quant_config,
                                      const MoEBlockEntry& entry);

// All linear modules that belong to MoE blocks of `ckpt` (see
// MoEBlockEntry::members), for excluding them from the linear listing.
absl::StatusOr<std::set<std::string, std::less<>>> MoEMemberModules(const Checkpoint& ckpt);
bool IsMoEMember(const std::set<std::string, std::less<>>& members, absl::string_view module);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_MOE_CATALOG_H_
