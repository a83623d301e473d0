// What the Forward and MoEForward reactors share on top of PipelinedReactor:
// finding the layer a request names (NOT_FOUND, the other kind, draining),
// error answers for requests that never reach a queue, a queued item's
// deadline (the stream's, or the request's timeout_us if sooner), handing it
// to its layer's batch queue, and the batch-rows / timing / metrics of every
// answer. Request and Response: Forward's or MoEForward's messages (both
// carry request_id, layer, timeout_us; error, timing, batch_rows).
#ifndef QLAYER_SERVER_SERVICE_BATCHED_REACTOR_H_
#define QLAYER_SERVER_SERVICE_BATCHED_REACTOR_H_

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "server/scheduler/batch_runner.h"
#include "server/service/pipelined_reactor.h"
#include "server/service/served_model.h"
#include "server/wire/status_codec.h"

namespace qlayer {

template <class Request, class Response>
class BatchedReactor : public PipelinedReactor<Request, Response> {
 protected:
  // `moe`: the stream serves MoE blocks (MoEForward), else linear layers
  // (Forward). The most-derived constructor calls Start().
  BatchedReactor(const ServedModel* served, grpc::CallbackServerContext* context, bool moe)
      : PipelinedReactor<Request, Response>(&served->streams(),
                                            served->options().max_inflight_per_stream),
        served_(served),
        moe_(moe),
        stream_deadline_(ToAbslDeadline(context->deadline())) {}

  const ServedModel& served_model() const { return *served_; }

  // The layer `request` names when this stream serves its kind, and its
  // metrics. Otherwise nullptr, the request already answered: NOT_FOUND,
  // INVALID_ARGUMENT for a layer of the other kind, UNAVAILABLE while the
  // server drains (Refuse: the stream's final status counts these).
  const ServedLayer* Admit(const Request& request, absl::Time arrival) {
    const uint64_t id = request.request_id();
    const ServedLayer* layer = served_->Find(request.layer());
    if (layer == nullptr) {
      Reject(id,
             absl::NotFoundError(absl::StrCat(
                 "layer '", request.layer(), "' is not hosted by this server (",
                 served_->model().num_layers(), " layers are; ListLayers names them)")),
             arrival,
             moe_ ? served_->metrics().unknown_layer_moe_forward()
                  : served_->metrics().unknown_layer_forward());
      return nullptr;
    }
    if ((layer->moe != nullptr) != moe_) {
      Reject(id,
             absl::InvalidArgumentError(absl::StrCat(
                 "layer '", request.layer(),
                 moe_ ? "' is a linear layer; MoEForward serves MoE blocks (use Forward)"
                      : "' is an MoE block; Forward serves linear layers (use MoEForward)")),
             arrival, MetricsOf(*layer));
      return nullptr;
    }
    if (this->draining()) {
      Response refused = ErrorResponse(
          id,
          absl::UnavailableError("qlayer-server is draining (shutting down): request not "
                                 "computed; send it again (to another server)"),
          arrival, MetricsOf(*layer));
      // Machine-readable, so clients retire this stream (half-close it, send
      // again on a new one) instead of re-sending on it: re-sends keep a
      // drained stream from going quiet, holding the drain to its grace.
      MarkServerDraining(refused.mutable_error());
      this->Refuse(std::move(refused));
      return nullptr;
    }
    return layer;
  }

  // This stream's request counters of `layer`.
  RequestMetrics& MetricsOf(const ServedLayer& layer) const {
    return moe_ ? layer.metrics->moe_forward() : layer.metrics->forward();
  }

  // An error answer for a request that never reached a queue.
  void Reject(uint64_t id, const absl::Status& status, absl::Time arrival,
              RequestMetrics& metrics) {
    this->Answer(ErrorResponse(id, status, arrival, metrics));
  }

  // Sets `item`'s arrival, deadline and cancel flag for `request`.
  void Stamp(const Request& request, absl::Time arrival, BatchItem& item) const {
    item.arrival = arrival;
    item.deadline = stream_deadline_;
    if (request.timeout_us() > 0) {
      item.deadline = std::min(item.deadline, arrival + absl::Microseconds(request.timeout_us()));
    }
    item.cancelled = this->cancelled_flag();
  }

  // Hands `item` (its done calling AnswerBatched) to `layer`'s batch queue;
  // one the queue refuses is answered with the refusal here.
  void Submit(const ServedLayer& layer, BatchItem item, uint64_t id, absl::Time arrival,
              RequestMetrics& metrics) {
    this->BeginPending();
    absl::Status accepted = layer.queue->Submit(std::move(item));
    if (!accepted.ok()) {
      // Never queued: done will not run. Answer here, then drop the pending ref.
      this->CompletePending(ErrorResponse(id, accepted, arrival, metrics));
    }
  }

  // Completes a queued request from its batch result: `response` carries the
  // payload when r.status is OK; this adds the id, the error, batch rows,
  // timing and metrics.
  void AnswerBatched(uint64_t id, Response response, BatchResult r, absl::Time arrival,
                     RequestMetrics& metrics) {
    response.set_request_id(id);
    if (!r.status.ok()) ToRpcStatus(r.status, response.mutable_error());
    r.owner.reset();
    response.set_batch_rows(r.batch_rows);
    v1::Timing* t = response.mutable_timing();
    t->set_queue_us(r.queue_us);
    t->set_compute_us(r.compute_us);
    const absl::Duration total = absl::Now() - arrival;
    t->set_total_us(absl::ToInt64Microseconds(total));
    metrics.Record(r.status.code(), absl::ToDoubleSeconds(total));
    // A cancelled stream's dropped work needs no answer.
    this->CompletePending(std::move(response), r.status.code() != absl::StatusCode::kCancelled);
  }

 private:
  static absl::Time ToAbslDeadline(std::chrono::system_clock::time_point tp) {
    if (tp == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
    return absl::FromChrono(tp);
  }

  static Response ErrorResponse(uint64_t id, const absl::Status& status, absl::Time arrival,
                                RequestMetrics& metrics) {
    Response response;
    response.set_request_id(id);
    ToRpcStatus(status, response.mutable_error());
    const absl::Duration total = absl::Now() - arrival;
    response.mutable_timing()->set_total_us(absl::ToInt64Microseconds(total));
    metrics.Record(status.code(), absl::ToDoubleSeconds(total));
    return response;
  }

  const ServedModel* const served_;
  const bool moe_;
  const absl::Time stream_deadline_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_BATCHED_REACTOR_H_
