#include "server/service/forward_reactor.h"

#include <memory>
#include <string>
#include <utility>

#include "absl/time/clock.h"
#include "server/wire/tensor_codec.h"

namespace qlayer {
namespace {

// A validated request parked in a batch queue: owns the bytes the queued
// input view points into (the request's `data`, or the decoded `values`).
struct HeldInput {
  std::unique_ptr<v1::ForwardRequest> request;
  Tensor owned;
};

}  // namespace

ForwardReactor::ForwardReactor(const ServedModel* served, grpc::CallbackServerContext* context)
    : BatchedReactor(served, context, /*moe=*/false) {
  Start();
}

void ForwardReactor::HandleRequest(std::unique_ptr<v1::ForwardRequest> request) {
  const absl::Time arrival = absl::Now();
  const uint64_t id = request->request_id();
  const ServedLayer* served = Admit(*request, arrival);
  if (served == nullptr) return;
  RequestMetrics& metrics = MetricsOf(*served);
  absl::StatusOr<DecodedInput> input =
      DecodeLinearInput(request->input(), served->layer->K(),
                        served_model().options().max_rows_per_request, served->layer->name());
  if (!input.ok()) {
    Reject(id, input.status(), arrival, metrics);
    return;
  }
  const v1::Encoding encoding = request->output_encoding();
  const bool used_values = input->used_values;

  BatchItem item;
  item.input = input->view;
  Stamp(*request, arrival, item);
  item.done = [this, id, encoding, used_values, arrival, &metrics](BatchResult r) {
    v1::ForwardResponse response;
    if (r.status.ok()) {
      EncodeTensor(r.output, encoding, used_values, response.mutable_output());
      response.set_kernel(std::string(r.kernel));
    }
    AnswerBatched(id, std::move(response), std::move(r), arrival, metrics);
  };
  auto held = std::make_shared<HeldInput>();
  held->request = std::move(request);
  held->owned = std::move(input->owned);
  item.keepalive = std::move(held);
  Submit(*served, std::move(item), id, arrival, metrics);
}

}  // namespace qlayer
