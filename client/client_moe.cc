// Client::MoEForward: the MoE twin of Client::Forward (client.cc), on the
// MoEForward streams (call_stream.h).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/client.h"
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

  moe_streams_.Send(std::string(block), options.lane, options.wait_for_ready, &request, start,
                    deadline, std::move(done));
}

}  // namespace qlayer
