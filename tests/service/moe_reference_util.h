// A float64 reference of one MoE block of a checkpoint, for the end-to-end
// MoEForward tests. The weights come from the checkpoint reader
// (LoadMoEBlock, every expert dequantized once with QuantizedLinear::Dequant);
// the router settings are read from config.json here and the router math is
// written from each family's published forward code (transformers'
// MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock / Qwen3MoeSparseMoeBlock,
// DeepSeek-V2's MoEGate as vLLM and FORMATS.md §8 read it, DeepseekV3TopkRouter
// + DeepseekV3MoE), not from qlayer's router.
#ifndef QLAYER_TESTS_SERVICE_MOE_REFERENCE_UTIL_H_
#define QLAYER_TESTS_SERVICE_MOE_REFERENCE_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "qlayer/kernels/tensor.h"

namespace qlayer::testing {

struct RefRouting {
  int64_t T = 0;
  int k = 0;
  std::vector<int32_t> ids;     // [T, k], best first
  std::vector<double> weights;  // [T, k]
  // Tokens whose choice hangs on a score gap below 1e-4 (f32 vs f64 math
  // may pick differently): compare those with the server's choice instead.
  std::vector<bool> ambiguous;  // [T]
};

class MoEReference {
 public:
  // Loads block `block` of checkpoint `dir`; fails the test on errors.
  MoEReference(const std::string& dir, const std::string& block);
  bool ok() const { return ok_; }

  const std::string& family() const { return family_; }
  int64_t H() const { return H_; }
  int64_t E() const { return E_; }
  int k() const { return k_; }
  int64_t I() const { return I_; }
  int64_t shared_I() const { return shared_I_; }
  int64_t n_group() const { return n_group_; }
  int64_t topk_group() const { return topk_group_; }

  // Router logits [T, E] = x gate^T from x as sent (its rounded values).
  std::vector<double> Logits(const ConstTensorView& x) const;
  // The family's routing of logits [T, E].
  RefRouting Route(const std::vector<double>& logits, int64_t T) const;
  // The family's weights for given ids of one token (its logits row).
  std::vector<double> WeightsFor(const double* logits_row, const int32_t* ids) const;
  // y [T, H] = sum_j w[t][j] expert_{ids[t][j]}(x[t]) + shared part.
  std::vector<double> Forward(const ConstTensorView& x, const std::vector<int32_t>& ids,
                              const std::vector<double>& weights) const;

 private:
  struct Mlp {
    int64_t I = 0;
    std::vector<double> gate, up, down;  // [I, H], [I, H], [H, I]
  };
  std::vector<double> MlpForward(const Mlp& m, const std::vector<double>& x) const;
  // Scores used for selection (choice) and for weights (scores), per family.
  void Scores(const double* logits_row, std::vector<double>& scores,
              std::vector<double>& choice) const;

  bool ok_ = false;
  std::string family_;
  int64_t H_ = 0, E_ = 0, I_ = 0, shared_I_ = 0;
  int k_ = 0;
  bool norm_topk_prob_ = false;
  std::string topk_method_;  // greedy | group_limited_greedy | noaux_tc
  int64_t n_group_ = 1, topk_group_ = 1;
  double routed_scaling_factor_ = 1.0;
  std::vector<double> gate_;         // [E, H]
  std::vector<double> bias_;         // [E] (DeepSeek-V3)
  std::vector<double> shared_gate_;  // [H] (Qwen2-MoE)
  std::vector<Mlp> experts_;
  Mlp shared_;
};

}  // namespace qlayer::testing

#endif  // QLAYER_TESTS_SERVICE_MOE_REFERENCE_UTIL_H_
