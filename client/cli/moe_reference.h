// The float64 reference qlayer-cli verify compares an MoE block's answers
// with: the block decoded from the checkpoint the server loaded (the same
// reader and format decoders: LoadMoEBlock), every expert dequantized once,
// and the router written out in double from each family's forward code
// (FORMATS.md §8: softmax / sigmoid scores, the correction bias for the choice
// only, grouped top-k with dropped groups scored 0, renormalisation, routed
// scaling factor, shared expert with its sigmoid gate).
#ifndef QLAYER_CLIENT_CLI_MOE_REFERENCE_H_
#define QLAYER_CLIENT_CLI_MOE_REFERENCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

struct ReferenceRouting {
  std::vector<int32_t> ids;     // [T, k], best first
  std::vector<double> weights;  // [T, k]
  // A score gap under 1e-4 decided the token's choice: f32 and f64 router
  // math may legitimately differ there.
  std::vector<bool> near_tie;  // [T]
};

class MoEReferenceBlock {
 public:
  // Opens `model_dir` and decodes MoE block `block` (NOT_FOUND naming the
  // blocks there when absent).
  static absl::StatusOr<std::unique_ptr<MoEReferenceBlock>> Load(const std::string& model_dir,
                                                                 const std::string& block);

  int64_t hidden() const { return H_; }
  int64_t num_experts() const { return E_; }
  int top_k() const { return router_.top_k; }
  // Bytes of one routed expert's canonical weights (w13 + w2).
  int64_t expert_bytes() const { return expert_bytes_; }
  int64_t shared_bytes() const { return shared_bytes_; }

  // logits [T, E] = x gate^T in double from x's rounded values.
  std::vector<double> Logits(const ConstTensorView& x) const;
  ReferenceRouting Route(const std::vector<double>& logits, int64_t T) const;
  // The family's weights of `ids` (k of them) for one token's logits.
  std::vector<double> WeightsFor(const double* logits_row, const int32_t* ids) const;
  // Route(logits, T) checked against the server's choice `server_ids`
  // [T, k]: a near-tie token takes the server's ids (either is right there),
  // weighted the family's way; `mismatches` (if set) counts the other tokens
  // whose ids differ.
  ReferenceRouting RouteLike(const std::vector<double>& logits, int64_t T,
                             const int32_t* server_ids, int64_t* mismatches = nullptr) const;
  // y [T, H] f64 for x [T, H] and a routing (ids, weights [T, k]).
  Tensor Forward(const ConstTensorView& x, const std::vector<int32_t>& ids,
                 const std::vector<double>& weights) const;

 private:
  struct Mlp {
    int64_t I = 0;
    std::vector<double> gate, up, down;  // [I, H], [I, H], [H, I]
  };
  void Scores(const double* logits_row, std::vector<double>& scores,
              std::vector<double>& choice) const;
  void Mlp64(const Mlp& m, const double* x, double* y, double scale) const;

  RouterConfig router_;
  int64_t H_ = 0, E_ = 0;
  int64_t expert_bytes_ = 0, shared_bytes_ = 0;
  std::vector<double> gate_, bias_, shared_gate_;
  std::vector<Mlp> experts_;
  std::unique_ptr<Mlp> shared_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_MOE_REFERENCE_H_
