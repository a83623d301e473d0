#include "server/service/moe_forward_reactor.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/scheduler/moe_runner.h"
#include "server/wire/moe_codec.h"
#include "server/wire/tensor_codec.h"

namespace qlayer {
namespace {

// A validated request parked in a batch queue: owns the bytes the queued
// views point into (the request's `data`, or decoded `values`) and its route.
struct HeldMoE {
  std::unique_ptr<v1::MoEForwardRequest> request;
  Tensor hidden;
  Tensor logits;
  MoERouteInput route;
};

// Checks the routing fields of `request` against `moe` and fills `route`
// (and `logits_owned` when logits came as values).
absl::Status DecodeRoute(const v1::MoEForwardRequest& request, const LoadedMoE& moe, int64_t T,
                         MoERouteInput& route, Tensor& logits_owned) {
  const std::string& name = moe.name();
  const bool logits = TensorIsSet(request.router_logits());
  const bool ids = TensorIsSet(request.topk_ids());
  const bool weights = TensorIsSet(request.topk_weights());
  if (logits && (ids || weights)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", name,
        ": set at most one routing source: router_logits, or topk_ids with topk_weights"));
  }
  if (ids != weights) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", name, ": topk_ids and topk_weights come together (got only ",
                     ids ? "topk_ids" : "topk_weights", ")"));
  }
  route.return_routing = request.return_routing();
  if (logits) {
    absl::StatusOr<DecodedInput> l = DecodeRoutingTensor(
        request.router_logits(), "router_logits", {DType::kF32, DType::kF16, DType::kBF16}, name);
    if (!l.ok()) return l.status();
    const int64_t E = moe.num_experts();
    if (l->view.dim(0) != T || l->view.dim(1) != E) {
      return absl::InvalidArgumentError(
          absl::StrCat("layer ", name, ": router_logits have shape ", ShapeToString(l->view.shape),
                       ", expected [", T, ", ", E, "] (T hidden-state rows, ", E, " experts)"));
    }
    route.mode = MoERouteInput::Mode::kLogits;
    route.logits = l->view;
    logits_owned = std::move(l->owned);
    return absl::OkStatus();
  }
  if (ids) {
    absl::StatusOr<DecodedInput> i =
        DecodeRoutingTensor(request.topk_ids(), "topk_ids", {DType::kI32, DType::kI64}, name);
    if (!i.ok()) return i.status();
    absl::StatusOr<DecodedInput> w = DecodeRoutingTensor(
        request.topk_weights(), "topk_weights", {DType::kF32, DType::kF16, DType::kBF16}, name);
    if (!w.ok()) return w.status();
    absl::StatusOr<Routing> r = moe.router().CheckTopk(i->view, w->view, T);
    if (!r.ok()) {
      return absl::Status(r.status().code(),
                          absl::StrCat("layer ", name, ": ", r.status().message()));
    }
    route.mode = MoERouteInput::Mode::kTopk;
    route.topk = *std::move(r);
    return absl::OkStatus();
  }
  if (!moe.router().has_gate()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", name,
                     ": this block has no router gate loaded; send router_logits or "
                     "topk_ids with topk_weights"));
  }
  route.mode = MoERouteInput::Mode::kGate;
  return absl::OkStatus();
}

}  // namespace

MoEForwardReactor::MoEForwardReactor(const ServedModel* served,
                                     grpc::CallbackServerContext* context)
    : BatchedReactor(served, context, /*moe=*/true) {
  Start();
}

void MoEForwardReactor::HandleRequest(std::unique_ptr<v1::MoEForwardRequest> request) {
  const absl::Time arrival = absl::Now();
  const uint64_t id = request->request_id();
  const ServedLayer* served = Admit(*request, arrival);
  if (served == nullptr) return;
  RequestMetrics& metrics = MetricsOf(*served);
  const LoadedMoE& moe = *served->moe;
  absl::StatusOr<DecodedInput> hidden =
      DecodeLinearInput(request->hidden_states(), moe.hidden(),
                        served_model().options().max_rows_per_request, moe.name());
  if (!hidden.ok()) {
    Reject(id, hidden.status(), arrival, metrics);
    return;
  }
  auto held = std::make_shared<HeldMoE>();
  const absl::Status routed =
      DecodeRoute(*request, moe, hidden->view.dim(0), held->route, held->logits);
  if (!routed.ok()) {
    Reject(id, routed, arrival, metrics);
    return;
  }
  const v1::Encoding encoding = request->output_encoding();
  const bool used_values = hidden->used_values;
  const bool return_routing = request->return_routing();

  BatchItem item;
  item.input = hidden->view;
  Stamp(*request, arrival, item);
  item.moe = &held->route;
  item.done = [this, id, encoding, used_values, return_routing, arrival, &metrics](BatchResult r) {
    v1::MoEForwardResponse response;
    if (r.status.ok()) {
      EncodeTensor(r.output, encoding, used_values, response.mutable_output());
      for (const std::string& k : r.kernels) response.add_kernels(k);
      if (return_routing) {
        EncodeRouting(r.routing, encoding, used_values, response.mutable_topk_ids(),
                      response.mutable_topk_weights());
      }
    }
    AnswerBatched(id, std::move(response), std::move(r), arrival, metrics);
  };
  held->request = std::move(request);
  held->hidden = std::move(hidden->owned);
  item.keepalive = std::move(held);
  Submit(*served, std::move(item), id, arrival, metrics);
}

}  // namespace qlayer
