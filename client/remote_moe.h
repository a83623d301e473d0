// qlayer::RemoteMoE: one MoE block (router + experts + shared experts) served
// by qlayer-server, called like a local one by a C++ frontend -- the MoE twin
// of RemoteLinear (remote_linear.h).
//
//   auto client = qlayer::Client::Connect("127.0.0.1:50051").value();
//   auto moe = qlayer::RemoteMoE::Create(client.get(), "model.layers.1.block_sparse_moe").value();
//   // x: [batch, tokens, H] f16 / bf16 / f32 -> y: [batch * tokens, H], same dtype
//   absl::StatusOr<qlayer::MoEResult> y = moe->Forward(x);  // the server routes
//   // or route here: router logits [..., E], or top-k ids [..., k] + weights [..., k]
//   y = moe->Forward(x, {.router_logits = logits.view()});
//   y = moe->Forward(x, {.topk_ids = ids.view(), .topk_weights = w.view(),
//                        .return_routing = true});  // y->topk_ids: what was used
//
// What it adds to Client::MoEForward:
// - any leading dims: hidden states [..., H] go out as [T, H] (T = their
//   product, no copy of the view), routing tensors [..., E] / [..., k] as
//   [T, E] / [T, k]; the answer is [T, H] (OutputShape gives [..., H]);
// - checks before the wire, naming the block: dtypes, H, the routing tensors'
//   leading dims against the hidden states', E, k, top-k ids within [0, E),
//   ids and weights together, at most one routing source;
// - re-sending, exactly as RemoteLinear does (resending_caller.h): a call
//   whose stream ended unanswered (UNAVAILABLE) is sent again after a
//   jittered exponential backoff on a stream that waits for the channel, until
//   answered, its timeout passes (DEADLINE_EXCEEDED), or retry_timeout has
//   gone by since its first failure (UNAVAILABLE naming the attempts). The
//   server's verdicts (INVALID_ARGUMENT, NOT_FOUND, ...) are final.
//
// Thread-safe. Destroy it before its Client; destruction ends calls waiting
// for a re-send with CANCELLED and waits for calls in flight.
#ifndef QLAYER_CLIENT_REMOTE_MOE_H_
#define QLAYER_CLIENT_REMOTE_MOE_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/client.h"
#include "client/moe_stream.h"
#include "client/resending_caller.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// timeout, lane, retry_timeout, initial_backoff, max_backoff
// (resending_caller.h).
using RemoteMoEOptions = RemoteCallOptions;

class RemoteMoE {
 public:
  using Callback = std::function<void(absl::StatusOr<MoEResult>)>;

  // Asks the server for the block (DescribeLayer): its NOT_FOUND when it does
  // not serve `block`, FAILED_PRECONDITION when `block` is not an MoE block.
  // `client` must outlive the RemoteMoE.
  static absl::StatusOr<std::unique_ptr<RemoteMoE>> Create(Client* client, absl::string_view block,
                                                           const RemoteMoEOptions& options = {});
  ~RemoteMoE();
  RemoteMoE(const RemoteMoE&) = delete;
  RemoteMoE& operator=(const RemoteMoE&) = delete;

  const std::string& block() const { return block_; }
  int64_t hidden_size() const { return hidden_; }
  int64_t num_experts() const { return num_experts_; }
  int top_k() const { return top_k_; }
  // The block maps [..., H] to [..., H].
  Shape OutputShape(const Shape& input_shape) const { return input_shape; }

  // x: [..., H] (rank >= 1), f16 / bf16 / f32, and an optional routing
  // (MoERoutingInput: router_logits [..., E] f16/bf16/f32, or topk_ids
  // [..., k] i32/i64 with topk_weights [..., k] f16/bf16/f32; same leading
  // dims as x). Every tensor is copied before this returns. The result's
  // output is [T, H] in x's dtype; topk_ids / topk_weights [T, k] when
  // routing.return_routing; latency_us covers every attempt, `attempts`
  // counts them.
  std::future<absl::StatusOr<MoEResult>> ForwardAsync(const ConstTensorView& x,
                                                      const MoERoutingInput& routing = {});
  // Callback form: `done` runs exactly once, on a gRPC or timer thread, or
  // here for an input rejected before the wire.
  void ForwardAsync(const ConstTensorView& x, const MoERoutingInput& routing, Callback done);
  // Blocking.
  absl::StatusOr<MoEResult> Forward(const ConstTensorView& x, const MoERoutingInput& routing = {}) {
    return ForwardAsync(x, routing).get();
  }

 private:
  // The tensors of one call, flattened to [T, H] / [T, E] / [T, k]; kept for
  // re-sends.
  struct Inputs;

  RemoteMoE(Client* client, std::string block, int64_t hidden, int64_t num_experts, int top_k,
            const RemoteMoEOptions& options);
  // The routing's problem for T tokens, or OK.
  absl::Status CheckRouting(const MoERoutingInput& routing, const Shape& x_shape, int64_t T) const;
  void Send(const Inputs& in, const CallOptions& o, Callback answer);

  Client* const client_;
  const std::string block_;
  const int64_t hidden_;
  const int64_t num_experts_;
  const int top_k_;
  // Last member: its destructor waits for the calls, which use the above.
  ResendingCaller<MoEResult> resender_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_REMOTE_MOE_H_
