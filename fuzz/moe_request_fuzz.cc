// Fuzz target: a serialized qlayer.v1.MoEForwardRequest through the server's
// decoding of an MoE request: hidden states (DecodeLinearInput, H = 16), then
// the routing source exactly as MoEForwardReactor::DecodeRoute picks it --
// router_logits (DecodeRoutingTensor + MoERouter::RouteLogits), top-k ids and
// weights (DecodeRoutingTensor + MoERouter::CheckTopk), or the block's own
// gate (MoERouter::Route). request_id picks one of two blocks: Mixtral-style
// (E 8, top-2 softmax) or DeepSeek-V3-style (E 16, top-4 sigmoid noaux_tc,
// 4 groups keep 2, correction bias). Accepted routing must name k distinct
// experts in [0, E) per token with finite weights.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/wire/moe_codec.h"
#include "server/wire/tensor_codec.h"

namespace {

using qlayer::fuzz::Fail;

constexpr int64_t kHidden = 16;
constexpr int64_t kIntermediate = 8;

qlayer::QuantizedLinear DenseLinear(int64_t K, int64_t N) {
  qlayer::QuantizedLinear w;
  w.K = K;
  w.N = N;
  w.wtype = qlayer::WeightType::kDense;
  w.group_size = K;
  w.dense = qlayer::Tensor::Zeros(qlayer::DType::kF32, {N, K});
  return w;
}

qlayer::MoERouter MakeRouter(bool deepseek) {
  std::mt19937 rng(deepseek ? 3 : 7);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  qlayer::MoEBlock b;
  b.name = deepseek ? "fuzz.deepseek_v3" : "fuzz.mixtral";
  b.family = deepseek ? "deepseek_v3" : "mixtral";
  b.hidden = kHidden;
  b.intermediate = kIntermediate;
  const int64_t E = deepseek ? 16 : 8;
  for (int64_t e = 0; e < E; ++e) {
    b.experts.push_back(
        {DenseLinear(kHidden, 2 * kIntermediate), DenseLinear(kIntermediate, kHidden)});
  }
  b.gate = qlayer::Tensor::Zeros(qlayer::DType::kF32, {E, kHidden});
  for (int64_t i = 0; i < E * kHidden; ++i) b.gate.as<float>()[i] = normal(rng);
  b.router.num_experts = E;
  if (deepseek) {
    b.router.scoring = qlayer::RouterScoring::kSigmoid;
    b.router.topk_method = qlayer::TopkMethod::kNoauxTc;
    b.router.top_k = 4;
    b.router.n_group = 4;
    b.router.topk_group = 2;
    b.router.norm_epsilon = 1e-20f;
    b.router.routed_scaling_factor = 2.5f;
    b.router.has_correction_bias = true;
    b.correction_bias = qlayer::Tensor::Zeros(qlayer::DType::kF32, {E});
    for (int64_t e = 0; e < E; ++e) b.correction_bias.as<float>()[e] = normal(rng);
  } else {
    b.router.top_k = 2;
  }
  auto r = qlayer::MoERouter::FromBlock(b);
  if (!r.ok()) Fail("test block does not validate: " + r.status().ToString());
  return *std::move(r);
}

void CheckRouting(const qlayer::Routing& r, int64_t T, const qlayer::MoERouter& router) {
  const int k = router.config().top_k;
  if (r.num_tokens != T || r.top_k != k || r.ids.size() != static_cast<size_t>(T * k) ||
      r.weights.size() != r.ids.size()) {
    Fail("routing has the wrong size");
  }
  for (int64_t t = 0; t < T; ++t) {
    std::set<int32_t> seen;
    for (int j = 0; j < k; ++j) {
      const int32_t id = r.ids[static_cast<size_t>(t * k + j)];
      if (id < 0 || id >= router.num_experts()) Fail("routed to expert " + std::to_string(id));
      if (!seen.insert(id).second) Fail("expert " + std::to_string(id) + " twice in a row");
      if (!std::isfinite(r.weights[static_cast<size_t>(t * k + j)])) Fail("non-finite weight");
    }
  }
}

}  // namespace

// Hostile bytes make protobuf log every invalid UTF-8 string; silence it.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qlayer::MoERouter* routers[2] = {new qlayer::MoERouter(MakeRouter(false)),
                                                new qlayer::MoERouter(MakeRouter(true))};
  qlayer::v1::MoEForwardRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const qlayer::MoERouter& router = *routers[request.request_id() & 1];
  const std::string& layer = request.layer();
  auto hidden = qlayer::DecodeLinearInput(request.hidden_states(), kHidden, 64, layer);
  if (!hidden.ok()) return 0;
  const int64_t T = hidden->view.dim(0);
  qlayer::fuzz::TouchBytes(hidden->view.data, hidden->view.nbytes());

  const bool logits = qlayer::TensorIsSet(request.router_logits());
  const bool ids = qlayer::TensorIsSet(request.topk_ids());
  const bool weights = qlayer::TensorIsSet(request.topk_weights());
  if ((logits && (ids || weights)) || ids != weights) return 0;  // DecodeRoute rejects these
  absl::StatusOr<qlayer::Routing> routing;
  if (logits) {
    auto l = qlayer::DecodeRoutingTensor(
        request.router_logits(), "router_logits",
        {qlayer::DType::kF32, qlayer::DType::kF16, qlayer::DType::kBF16}, layer);
    if (!l.ok()) return 0;
    qlayer::fuzz::TouchBytes(l->view.data, l->view.nbytes());
    routing = router.RouteLogits(l->view, T);
  } else if (ids) {
    auto i = qlayer::DecodeRoutingTensor(request.topk_ids(), "topk_ids",
                                         {qlayer::DType::kI32, qlayer::DType::kI64}, layer);
    if (!i.ok()) return 0;
    auto w = qlayer::DecodeRoutingTensor(
        request.topk_weights(), "topk_weights",
        {qlayer::DType::kF32, qlayer::DType::kF16, qlayer::DType::kBF16}, layer);
    if (!w.ok()) return 0;
    qlayer::fuzz::TouchBytes(i->view.data, i->view.nbytes());
    qlayer::fuzz::TouchBytes(w->view.data, w->view.nbytes());
    routing = router.CheckTopk(i->view, w->view, T);
  } else {
    routing = router.Route(hidden->view);
  }
  if (!routing.ok()) return 0;
  CheckRouting(*routing, T, router);
  // The answer path for return_routing.
  qlayer::v1::Tensor out_ids, out_weights;
  qlayer::EncodeRouting(*routing, request.output_encoding(), hidden->used_values, &out_ids,
                        &out_weights);
  return 0;
}
