// Client::MoEForward: the MoE twin of Client::Forward (client.cc), on the
// MoEForward streams of moe_call_stream.h.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/moe_call_stream.h"
#include "client/wire_tensor.h"

namespace qlayer {

std::future<absl::StatusOr<MoEResult>> Client::MoEForward(absl::string_view block,
                                                          const ConstTensorView& hidden_states,
                                                          const MoERoutingInput& routing,
                                                          const CallOptions& options) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<MoEResult>>>();
  auto future = promise->get_future();
  MoEForward(block, hidden_states, routing, options,
             [promise](absl::StatusOr<MoEResult> r) { promise->set_value(std::move(r)); });
  return future;
}

void Client::MoEForward(absl::string_view block, const ConstTensorView& hidden_states,
                        const MoERoutingInput& routing, const CallOptions& options,
                        std::function<void(absl::StatusOr<MoEResult>)> done) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = options.timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                          : start + options.timeout;
  v1::MoEForwardRequest request;
  request.set_request_id(next_request_id_.fetch_add(1));
  request.set_layer(std::string(block));
  request.set_output_encoding(v1::ENCODING_DATA);
  request.set_return_routing(routing.return_routing);
  if (options.timeout != absl::InfiniteDuration()) {
    request.set_timeout_us(std::max<int64_t>(1, absl::ToInt64Microseconds(options.timeout)));
  }
  if (absl::Status s = ToWireTensor(hidden_states, request.mutable_hidden_states()); !s.ok()) {
    done(absl::InvalidArgumentError(
        absl::StrCat("MoEForward ", block, ": hidden_states: ", s.message())));
    return;
  }
  // Routing tensors left empty are not sent.
  absl::Status s;
  if (!routing.router_logits.empty()) {
    s.Update(ToWireTensor(routing.router_logits, request.mutable_router_logits()));
  }
  if (!routing.topk_ids.empty()) {
    s.Update(ToWireTensor(routing.topk_ids, request.mutable_topk_ids()));
  }
  if (!routing.topk_weights.empty()) {
    s.Update(ToWireTensor(routing.topk_weights, request.mutable_topk_weights()));
  }
  if (!s.ok()) {
    done(
        absl::InvalidArgumentError(absl::StrCat("MoEForward ", block, ": routing: ", s.message())));
    return;
  }

  std::shared_ptr<MoECallStreams> streams;
  {
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      if (moe_streams_ == nullptr) {
        moe_streams_ =
            std::make_shared<MoECallStreams>(stub_.get(), &timer_, options_.wait_for_ready);
      }
      streams = moe_streams_;
    }
  }
  const std::string name(block);
  // A stream that ends between StreamFor and Send refuses the call; the
  // next try opens a fresh one.
  for (int attempt = 0; streams != nullptr && attempt < 3; ++attempt) {
    std::shared_ptr<MoECallStream> stream =
        streams->StreamFor(name, options.lane, options.wait_for_ready);
    if (stream == nullptr) {
      streams = nullptr;
      break;
    }
    if (stream->Send(&request, start, deadline, &done)) return;
  }
  if (streams == nullptr) {
    done(absl::CancelledError(absl::StrCat("MoEForward ", block, ": the client is closing")));
    return;
  }
  done(absl::UnavailableError(
      absl::StrCat("MoEForward ", block, ": could not open a stream to ", address_)));
}

}  // namespace qlayer
