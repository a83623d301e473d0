// Mixture-of-experts blocks: the router (FORMATS.md §8), the canonical MoE
// block (experts as canonical QuantizedLinear pairs, w13 = [gate; up] stacked
// along N and w2 = down, as vLLM stacks them) and the experts-kernel contract
// with its registry, mirroring the linear one (linear_kernel.h, registry.h).
//
// Data flow of one MoE forward:
//   x [T, H] --MoERouter--> Routing {ids [T, k] i32, weights [T, k] f32}
//            (from the loaded gate, from caller logits, or caller top-k ids)
//   x, Routing --MoEExpertsKernel::Forward--> y [T, H]
//            y[t] = sum_j weights[t][j] * expert_{ids[t][j]}(x[t])
//                   (+ sigmoid(shared_gate . x[t]) *) shared_expert(x[t])
//            expert(x) = w2(silu(x W_gate) * (x W_up))
#ifndef QLAYER_KERNELS_MOE_H_
#define QLAYER_KERNELS_MOE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/registry.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// ---------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------

enum class RouterScoring : uint8_t {
  kSoftmax,  // p = softmax(logits)        Mixtral, Qwen2/3-MoE, DeepSeek-V2
  kSigmoid,  // s = sigmoid(logits)        DeepSeek-V3
};
enum class TopkMethod : uint8_t {
  kGreedy,              // plain top-k of the (corrected) scores
  kGroupLimitedGreedy,  // DeepSeek-V2: group score = max of the group
  kNoauxTc,             // DeepSeek-V3: group score = sum of the group's top-2
};
absl::string_view RouterScoringName(RouterScoring s);  // "softmax", "sigmoid"
absl::string_view TopkMethodName(TopkMethod m);  // "greedy", "group_limited_greedy", "noaux_tc"

// Everything the router math depends on. Per family (FORMATS.md §8):
//   Mixtral      softmax, greedy, norm_topk_prob = true
//   Qwen2/3-MoE  softmax, greedy, norm_topk_prob from config.json
//   DeepSeek-V2  softmax, greedy | group_limited_greedy, norm_topk_prob,
//                routed_scaling_factor, norm_epsilon = 1e-20
//   DeepSeek-V3  sigmoid, noaux_tc, correction bias, norm_topk_prob,
//                routed_scaling_factor, norm_epsilon = 1e-20
struct RouterConfig {
  RouterScoring scoring = RouterScoring::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  int64_t num_experts = 0;  // E
  int top_k = 0;            // k
  bool norm_topk_prob = true;
  // Added to the sum of the k weights before dividing (DeepSeek's "+ 1e-20").
  float norm_epsilon = 0.0f;
  int64_t n_group = 1;     // groups of E / n_group consecutive experts
  int64_t topk_group = 1;  // groups kept by the grouped methods
  float routed_scaling_factor = 1.0f;
  // e_score_correction_bias [E]: added to the scores for selection only.
  bool has_correction_bias = false;

  // E > 0, 1 <= k <= E; grouped methods: E % n_group == 0,
  // 1 <= topk_group <= n_group, k <= topk_group * (E / n_group), and for
  // noaux_tc at least two experts per group (its group score is a top-2 sum).
  absl::Status Validate() const;
  // "softmax greedy top-2 renorm" / "sigmoid noaux_tc top-8 groups 4/8 renorm
  // scale 2.5 bias": for ListLayers / DescribeLayer.
  std::string ToString() const;
};

// Routing of T tokens: token t goes to experts ids[t*k .. t*k+k-1] with
// weights weights[t*k ...]. ComputeRouting orders each row best first.
struct Routing {
  int64_t num_tokens = 0;
  int top_k = 0;
  std::vector<int32_t> ids;    // [T, k]
  std::vector<float> weights;  // [T, k]
};

// The router math of FORMATS.md §8 in float32, after transformers' forward
// code (MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock, DeepseekV2Moe's
// original MoEGate, DeepseekV3TopkRouter):
//   1. scores s = softmax(logits) or sigmoid(logits), per token;
//   2. choice c = s + correction_bias (only when has_correction_bias);
//   3. grouped methods: group score = max(c) (group_limited_greedy) or the sum
//      of the two largest c (noaux_tc) over E / n_group consecutive experts;
//      the topk_group best groups are kept and every other expert's c is set
//      to 0.0 -- exactly transformers' masked_fill(..., 0.0) (vLLM fills
//      -inf instead; the two differ only when a kept expert's corrected score
//      is negative);
//   4. ids = top-k of c; ties go to the lower index (torch.topk leaves tie
//      order unspecified); each row is ordered by descending c;
//   5. weights = s[ids] (the UNcorrected scores); if norm_topk_prob they are
//      divided by (their sum + norm_epsilon); then multiplied by
//      routed_scaling_factor.
// Deliberate differences from the references, all invisible on released
// checkpoints: logits and weights stay f32 (transformers' Mixtral / Qwen compute
// the gate in the model dtype and cast the weights back to it); DeepSeek-V2
// follows FORMATS.md and vLLM -- renormalise iff norm_topk_prob, then always
// scale -- where the original MoEGate scales only when it does not renormalise
// and current transformers never renormalises (released V2 / V2-Lite have
// norm_topk_prob false, where all agree).
// logits [T, E] f32 row-major; correction_bias [E] f32 (required iff
// has_correction_bias, else ignored); outputs [T, k]. Non-finite logits are
// INVALID_ARGUMENT naming the token and expert (softmax of inf is NaN).
absl::Status ComputeRouting(const RouterConfig& config, const float* logits,
                            const float* correction_bias, int64_t T, int32_t* topk_ids,
                            float* topk_weights);

// Checks caller-provided top-k routing: ids [T, k] (i32 or i64) with k equal
// to config.top_k, every id in [0, E), no id twice in a token's row; weights
// [T, k] (f32, f16 or bf16) finite. Returns it as a Routing (ids i32, weights
// f32). Errors are INVALID_ARGUMENT naming the token, slot and value.
absl::StatusOr<Routing> RoutingFromTopk(const ConstTensorView& ids, const ConstTensorView& weights,
                                        int64_t T, int64_t num_experts, int top_k);

// Tokens routed to each expert ([E]), for the per-expert token metric.
std::vector<int64_t> ExpertTokenCounts(const Routing& routing, int64_t num_experts);

// ---------------------------------------------------------------------------
// The canonical MoE block
// ---------------------------------------------------------------------------

// One gated MLP: w13 K=H, N=2I (columns 0..I-1 gate, I..2I-1 up); w2 K=I, N=H.
struct MoEExpert {
  QuantizedLinear w13;
  QuantizedLinear w2;
  int64_t intermediate() const { return w13.N / 2; }
  MoEExpert Clone() const { return {w13.Clone(), w2.Clone()}; }
};

struct MoEBlock {
  std::string name;          // module path, e.g. "model.layers.3.block_sparse_moe"
  std::string family;        // "mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"
  int64_t hidden = 0;        // H
  int64_t intermediate = 0;  // I of the routed experts
  std::vector<MoEExpert> experts;  // E of them
  // Router gate [E, H] in its stored dtype (f16, bf16 or f32); may be empty
  // when callers always send logits or top-k ids.
  Tensor gate;
  // e_score_correction_bias [E] (f32, bf16 or f16); present iff
  // router.has_correction_bias.
  Tensor correction_bias;
  // Shared expert(s): one MLP of intermediate shared->intermediate() (DeepSeek
  // stores n_shared_experts of them as one MLP already).
  std::optional<MoEExpert> shared;
  // shared_expert_gate [1, H] (Qwen2-MoE): the shared output is scaled by
  // sigmoid(shared_expert_gate . x). Empty = no gate.
  Tensor shared_expert_gate;
  RouterConfig router;

  int64_t num_experts() const { return static_cast<int64_t>(experts.size()); }
  // Every expert's shapes agree with H and I (and the shared expert's with H),
  // the router config is valid and matches E, gate / bias / shared gate have
  // their shapes. Messages name the block and the expert.
  absl::Status Validate() const;
  // Bytes of expert weights (routed + shared) as canonical tensors.
  int64_t weight_bytes() const;
};

// Stacks two canonical linears with the same K along N: out columns
// [0, gate.N) are gate's, [gate.N, gate.N + up.N) up's. Lossless: qweight,
// scales, zeros and bias columns are concatenated (a bias on only one side
// gets exact zeros on the other). Both must have the same weight type, group
// size, scale dtype and g_idx (identical or both absent), else
// INVALID_ARGUMENT naming the difference.
absl::StatusOr<QuantizedLinear> StackGateUp(const QuantizedLinear& gate, const QuantizedLinear& up);

// Router logits [T, E] f32 from the block's dense gate: logits[t][e] =
// sum_h x[t][h] * gate[e][h] with x (f16, bf16 or f32) and the gate widened
// to f32 and f32 accumulation. FAILED_PRECONDITION when the block has no gate.
absl::Status ComputeRouterLogits(const MoEBlock& block, const ConstTensorView& x, float* logits);

// The router of one loaded block, independent of the block's lifetime (it
// copies the gate to f32 and the bias): what a server keeps next to the
// experts kernel.
class MoERouter {
 public:
  static absl::StatusOr<MoERouter> FromBlock(const MoEBlock& block);

  const RouterConfig& config() const { return config_; }
  int64_t hidden() const { return hidden_; }
  int64_t num_experts() const { return config_.num_experts; }
  bool has_gate() const { return !gate_.empty(); }

  // logits [T, E] f32 from x [T, H] and the gate (see ComputeRouterLogits).
  absl::Status ComputeLogits(const ConstTensorView& x, float* logits) const;
  // Routing from the loaded gate.
  absl::StatusOr<Routing> Route(const ConstTensorView& x) const;
  // Routing from caller logits [T, E] (f32, f16 or bf16); T is the number of
  // hidden-state rows the logits must match.
  absl::StatusOr<Routing> RouteLogits(const ConstTensorView& logits, int64_t T) const;
  // Caller top-k ids / weights checked against this block (RoutingFromTopk).
  absl::StatusOr<Routing> CheckTopk(const ConstTensorView& ids, const ConstTensorView& weights,
                                    int64_t T) const;
  int64_t bytes() const {
    return static_cast<int64_t>((gate_.size() + bias_.size()) * sizeof(float));
  }

 private:
  RouterConfig config_;
  int64_t hidden_ = 0;
  std::vector<float> gate_;  // [E, H]
  std::vector<float> bias_;  // [E] when config_.has_correction_bias
};

// ---------------------------------------------------------------------------
// Experts kernel contract and registry
// ---------------------------------------------------------------------------

// The only input to MoE kernel selection.
struct MoESpec {
  int64_t hidden = 0;
  int64_t intermediate = 0;
  int64_t num_experts = 0;
  int top_k = 0;
  int64_t shared_intermediate = 0;  // 0 = no shared expert
  bool shared_expert_gate = false;
  // Distinct LinearSpecs of every expert projection (w13, w2, shared), in
  // first-seen order; a uniform block has two (or four with a shared expert).
  std::vector<LinearSpec> linear_specs;
  DType act = DType::kF16;  // the activation dtype expected most

  static MoESpec Of(const MoEBlock& block, DType act);
};

// What one Forward did, for the response and the metrics.
struct MoEForwardInfo {
  std::vector<int64_t> tokens_per_expert;  // [E]
  // Linear kernels that ran, deduplicated, e.g. {"onednn_dense"}.
  std::vector<std::string> linear_kernels;
};

class MoEExpertsKernel {
 public:
  virtual ~MoEExpertsKernel() = default;
  // Registered name, e.g. "cpu_moe_grouped".
  virtual absl::string_view name() const = 0;
  // Repacks (and uploads) every expert. Called once, before any Forward; the
  // kernel keeps no reference into `block`.
  virtual absl::Status Prepare(const MoEBlock& block, const Device& device) = 0;
  // x [T, H] f16 / bf16 / f32, routing of the same T with ids < E and k = the
  // block's top_k (callers validate with MoERouter), y [T, H] of x's dtype.
  // Thread-safe after Prepare. `info` may be null.
  virtual absl::Status Forward(const ConstTensorView& x, const Routing& routing,
                               const TensorView& y, ExecContext& ctx,
                               MoEForwardInfo* info) const = 0;
  // Bytes this kernel holds for the block after Prepare.
  virtual int64_t prepared_bytes() const = 0;
  // "cpu_moe_grouped(w13: onednn_dense; w2: onednn_dense)": the linear
  // kernels prepared per projection, for DescribeLayer.
  virtual std::string Describe() const { return std::string(name()); }
};

// Construction-time options of an MoE kernel.
struct MoEKernelOptions {
  DType act = DType::kF16;  // activation dtype the linear kernels are selected for
  SelectOptions linear;     // forwarded to SelectLinearKernel per projection
};

struct MoEKernelFactory {
  std::string name;
  Backend backend = Backend::kCpu;
  int priority = 0;  // lower runs first
  std::function<absl::Status(const MoESpec&, const Device&, const SelectOptions& linear)>
      can_implement;
  std::function<std::unique_ptr<MoEExpertsKernel>(const MoEKernelOptions&)> create;
};

struct MoESelectOptions {
  std::string forced_kernel;                  // an MoE kernel name: only this one
  std::vector<std::string> disabled_kernels;  // MoE kernel names
  SelectOptions linear;                       // for the linear kernels inside
};

struct MoESelection {
  const MoEKernelFactory* chosen = nullptr;
  std::vector<Rejection> rejected;
};

// Built-in MoE kernels (kernels/moe/moe_registry.cc) plus any registered.
void RegisterMoEKernel(MoEKernelFactory factory);
std::vector<const MoEKernelFactory*> RegisteredMoEKernels();  // (backend, priority, name)
const MoEKernelFactory* FindMoEKernel(absl::string_view name);

// First candidate of the device's backend that can implement the spec, with
// every rejection and its reason; fails listing them all when none can.
absl::StatusOr<MoESelection> SelectMoEKernel(const MoESpec& spec, const Device& device,
                                             const MoESelectOptions& options = {});

// Select + create + Prepare in one step (what the server does at load).
// `selection` (optional) receives the chosen factory and the rejections.
absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> CreateMoEKernel(
    const MoEBlock& block, const Device& device, DType act, const MoESelectOptions& options = {},
    MoESelection* selection = nullptr);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_MOE_H_
