#include "server/service/forward_reactor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/wire/status_codec.h"
#include "server/wire/tensor_codec.h"

namespace qlayer {
namespace {

absl::Time ToAbslDeadline(std::chrono::system_clock::time_point tp) {
  if (tp == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(tp);
}

// A validated request parked in a batch queue: owns the bytes the queued
// input view points into (the request's `data`, or the decoded `values`).
struct HeldInput {
  std::unique_ptr<v1::ForwardRequest> request;
  Tensor owned;
};

}  // namespace

ForwardReactor::ForwardReactor(const ServedModel* served, grpc::CallbackServerContext* context)
    : PipelinedReactor(&served->streams(), served->options().max_inflight_per_stream),
      served_(served),
      stream_deadline_(ToAbslDeadline(context->deadline())) {
  Start();
}

void ForwardReactor::Reject(uint64_t request_id, const absl::Status& status, absl::Time arrival,
                            RequestMetrics& metrics) {
  v1::ForwardResponse response;
  response.set_request_id(request_id);
  ToRpcStatus(status, response.mutable_error());
  const absl::Duration total = absl::Now() - arrival;
  response.mutable_timing()->set_total_us(absl::ToInt64Microseconds(total));
  metrics.Record(status.code(), absl::ToDoubleSeconds(total));
  Answer(std::move(response));
}

void ForwardReactor::HandleRequest(std::unique_ptr<v1::ForwardRequest> request) {
  const absl::Time arrival = absl::Now();
  const uint64_t id = request->request_id();
  const ServedLayer* served = served_->Find(request->layer());
  if (served == nullptr) {
    Reject(id,
           absl::NotFoundError(
               absl::StrCat("layer '", request->layer(), "' is not hosted by this server (",
                            served_->model().num_layers(), " layers are; ListLayers names them)")),
           arrival, served_->metrics().unknown_layer_forward());
    return;
  }
  RequestMetrics& metrics = served->metrics->forward();
  if (served->layer == nullptr) {
    Reject(id,
           absl::InvalidArgumentError(
               absl::StrCat("layer '", request->layer(),
                            "' is an MoE block; Forward serves linear layers (use MoEForward)")),
           arrival, metrics);
    return;
  }
  if (draining()) {
    Reject(id, absl::UnavailableError("qlayer-server is shutting down"), arrival, metrics);
    return;
  }
  absl::StatusOr<DecodedInput> input =
      DecodeLinearInput(request->input(), served->layer->K(),
                        served_->options().max_rows_per_request, served->layer->name());
  if (!input.ok()) {
    Reject(id, input.status(), arrival, metrics);
    return;
  }
  const v1::Encoding encoding = request->output_encoding();
  const bool used_values = input->used_values;

  BatchItem item;
  item.input = input->view;
  item.arrival = arrival;
  item.deadline = stream_deadline_;
  if (request->timeout_us() > 0) {
    item.deadline = std::min(item.deadline, arrival + absl::Microseconds(request->timeout_us()));
  }
  item.cancelled = cancelled_flag();
  item.done = [this, id, encoding, used_values, arrival, &metrics](BatchResult r) {
    v1::ForwardResponse response;
    response.set_request_id(id);
    if (r.status.ok()) {
      EncodeTensor(r.output, encoding, used_values, response.mutable_output());
      response.set_kernel(std::string(r.kernel));
    } else {
      ToRpcStatus(r.status, response.mutable_error());
    }
    r.owner.reset();
    response.set_batch_rows(r.batch_rows);
    v1::Timing* t = response.mutable_timing();
    t->set_queue_us(r.queue_us);
    t->set_compute_us(r.compute_us);
    const absl::Duration total = absl::Now() - arrival;
    t->set_total_us(absl::ToInt64Microseconds(total));
    metrics.Record(r.status.code(), absl::ToDoubleSeconds(total));
    // A cancelled stream's dropped work needs no answer.
    CompletePending(std::move(response), r.status.code() != absl::StatusCode::kCancelled);
  };
  auto held = std::make_shared<HeldInput>();
  held->request = std::move(request);
  held->owned = std::move(input->owned);
  item.keepalive = std::move(held);

  BeginPending();
  absl::Status accepted = served->queue->Submit(std::move(item));
  if (!accepted.ok()) {
    // Never queued: done will not run. Answer here, then drop the pending ref.
    v1::ForwardResponse response;
    response.set_request_id(id);
    ToRpcStatus(accepted, response.mutable_error());
    const absl::Duration total = absl::Now() - arrival;
    response.mutable_timing()->set_total_us(absl::ToInt64Microseconds(total));
    metrics.Record(accepted.code(), absl::ToDoubleSeconds(total));
    CompletePending(std::move(response));
  }
}

}  // namespace qlayer
