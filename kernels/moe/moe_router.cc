// Router logits from the dense gate, and MoERouter: the router state a server
// keeps per block (gate and correction bias widened to f32 once at load).
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_convert.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// f32 dot product with 16 independent partial sums: the compiler vectorizes
// the lane loop, and the partial sums keep the rounding error near
// sqrt(n/16) ulps instead of n ulps of one running sum.
float DotF32(const float* a, const float* b, int64_t n) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (; i < n; ++i) acc[i % kLanes] += a[i] * b[i];
  for (int w = kLanes / 2; w > 0; w /= 2) {
    for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
  }
  return acc[0];
}

absl::Status CheckHidden(const ConstTensorView& x, int64_t H) {
  if (!IsFloatActivation(x.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("hidden states have dtype ", DTypeName(x.dtype),
                                                   ", expected f16, bf16 or f32"));
  }
  if (x.shape.size() != 2 || x.shape[1] != H) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden states have shape ", ShapeToString(x.shape), ", expected [T, H] with H=", H));
  }
  if (x.shape[0] > 0 && x.data == nullptr) {
    return absl::InvalidArgumentError("hidden states have no data");
  }
  return absl::OkStatus();
}

// logits [T, E] = x [T, H] . gate_f32 [E, H]^T.
void GateLogits(const float* gate, int64_t E, int64_t H, const ConstTensorView& x, float* logits) {
  const int64_t T = x.dim(0);
  std::vector<float> row(static_cast<size_t>(H));
  const size_t elem = DTypeSize(x.dtype);
  for (int64_t t = 0; t < T; ++t) {
    ConvertToF32(static_cast<const char*>(x.data) + t * H * elem, x.dtype, H, row.data());
    for (int64_t e = 0; e < E; ++e) logits[t * E + e] = DotF32(row.data(), gate + e * H, H);
  }
}

std::vector<float> ToF32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ConvertToF32(t.data(), t.dtype(), t.numel(), out.data());
  return out;
}

}  // namespace

absl::Status ComputeRouterLogits(const MoEBlock& block, const ConstTensorView& x, float* logits) {
  if (block.gate.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("MoE block ", block.name, " has no router gate loaded"));
  }
  QLAYER_RETURN_IF_ERROR(CheckHidden(x, block.hidden));
  const int64_t E = block.gate.dim(0);
  if (block.gate.shape().size() != 2 || block.gate.dim(1) != block.hidden ||
      !IsFloatActivation(block.gate.dtype())) {
    return absl::InvalidArgumentError(absl::StrCat("MoE block ", block.name, ": router gate is ",
                                                   DTypeName(block.gate.dtype()), " ",
                                                   ShapeToString(block.gate.shape())));
  }
  const std::vector<float> gate = ToF32(block.gate);
  GateLogits(gate.data(), E, block.hidden, x, logits);
  return absl::OkStatus();
}

absl::StatusOr<MoERouter> MoERouter::FromBlock(const MoEBlock& block) {
  QLAYER_RETURN_IF_ERROR(block.Validate());
  MoERouter r;
  r.config_ = block.router;
  r.hidden_ = block.hidden;
  if (!block.gate.empty()) r.gate_ = ToF32(block.gate);
  if (block.router.has_correction_bias) {
    r.bias_ = ToF32(block.correction_bias);
    for (size_t e = 0; e < r.bias_.size(); ++e) {
      if (!std::isfinite(r.bias_[e])) {
        return absl::InvalidArgumentError(absl::StrCat("MoE block ", block.name,
                                                       ": e_score_correction_bias[", e,
                                                       "] = ", r.bias_[e], " is not finite"));
      }
    }
  }
  return r;
}

absl::Status MoERouter::ComputeLogits(const ConstTensorView& x, float* logits) const {
  if (gate_.empty()) {
    return absl::FailedPreconditionError(
        "this MoE block has no router gate: send router logits or top-k ids and weights");
  }
  QLAYER_RETURN_IF_ERROR(CheckHidden(x, hidden_));
  GateLogits(gate_.data(), config_.num_experts, hidden_, x, logits);
  return absl::OkStatus();
}

absl::StatusOr<Routing> MoERouter::Route(const ConstTensorView& x) const {
  QLAYER_RETURN_IF_ERROR(CheckHidden(x, hidden_));
  const int64_t T = x.dim(0);
  std::vector<float> logits(static_cast<size_t>(T * config_.num_experts));
  QLAYER_RETURN_IF_ERROR(ComputeLogits(x, logits.data()));
  Routing r;
  r.num_tokens = T;
  r.top_k = config_.top_k;
  r.ids.resize(static_cast<size_t>(T * r.top_k));
  r.weights.resize(r.ids.size());
  QLAYER_RETURN_IF_ERROR(ComputeRouting(config_, logits.data(),
                                        bias_.empty() ? nullptr : bias_.data(), T, r.ids.data(),
                                        r.weights.data()));
  return r;
}

absl::StatusOr<Routing> MoERouter::RouteLogits(const ConstTensorView& logits, int64_t T) const {
  if (!IsFloatActivation(logits.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "router logits have dtype ", DTypeName(logits.dtype), ", expected f32, f16 or bf16"));
  }
  if (logits.shape.size() != 2 || logits.shape[0] != T || logits.shape[1] != config_.num_experts) {
    return absl::InvalidArgumentError(
        absl::StrCat("router logits have shape ", ShapeToString(logits.shape),
                     ", expected [T, E] = [", T, ", ", config_.num_experts, "]"));
  }
  if (T > 0 && logits.data == nullptr) {
    return absl::InvalidArgumentError("router logits have no data");
  }
  std::vector<float> l(static_cast<size_t>(T * config_.num_experts));
  ConvertToF32(logits.data, logits.dtype, static_cast<int64_t>(l.size()), l.data());
  Routing r;
  r.num_tokens = T;
  r.top_k = config_.top_k;
  r.ids.resize(static_cast<size_t>(T * r.top_k));
  r.weights.resize(r.ids.size());
  QLAYER_RETURN_IF_ERROR(ComputeRouting(config_, l.data(), bias_.empty() ? nullptr : bias_.data(),
                                        T, r.ids.data(), r.weights.data()));
  return r;
}

absl::StatusOr<Routing> MoERouter::CheckTopk(const ConstTensorView& ids,
                                             const ConstTensorView& weights, int64_t T) const {
  return RoutingFromTopk(ids, weights, T, config_.num_experts, config_.top_k);
}

}  // namespace qlayer
