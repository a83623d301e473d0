// qlayer::RemoteLinear: one linear layer served by qlayer-server, called like
// a local one by a C++ frontend.
//
//   auto client = qlayer::Client::Connect("127.0.0.1:50051").value();
//   auto q_proj = qlayer::RemoteLinear::Create(client.get(),
//                                              "model.layers.0.self_attn.q_proj").value();
//   // x: [batch, tokens, K] f16 / bf16 / f32 -> y: [batch * tokens, N], same dtype
//   absl::StatusOr<qlayer::ForwardResult> y = q_proj->Forward(x);
//   qlayer::ConstTensorView y_view{y->output.dtype(), q_proj->OutputShape(x.shape),
//                                  y->output.data()};  // [batch, tokens, N]
//
// What it adds to qlayer::Client::Forward:
// - any leading dims: x [..., K] is sent as [M, K] (M = their product, no copy
//   of the view); the answer is [M, N], the bytes of [..., N] (OutputShape);
// - the shape is checked here, before the wire, naming the layer;
// - re-sending (resending_caller.h): Forward is pure, so a call whose stream
//   ended unanswered (server killed, restarted or draining: UNAVAILABLE) is
//   sent again after a jittered exponential backoff, on a stream that waits
//   for the channel to reconnect, until answered, its timeout passes
//   (DEADLINE_EXCEEDED), or retry_timeout has gone by since its first failure
//   (UNAVAILABLE, with how many times it was sent and the last error). The
//   server's verdicts (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED...)
//   are final. To re-send, the input is kept: ForwardAsync copies it once
//   (the Client copies it again into each request).
//
// Independent layers overlap with ForwardAsync (q/k/v, gate/up): each layer
// has its own stream, and calls are pipelined on it.
//
// Thread-safe. Destroy it before its Client; destruction ends calls waiting
// for a re-send with CANCELLED and waits for calls in flight to finish.
#ifndef QLAYER_CLIENT_REMOTE_LINEAR_H_
#define QLAYER_CLIENT_REMOTE_LINEAR_H_

#include <cstdint>
#include <future>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/client.h"
#include "client/forward_result.h"
#include "client/resending_caller.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// timeout, lane, retry_timeout, initial_backoff, max_backoff
// (resending_caller.h).
using RemoteLinearOptions = RemoteCallOptions;

class RemoteLinear {
 public:
  // Asks the server for the layer (DescribeLayer): its NOT_FOUND when it does
  // not serve `layer`, FAILED_PRECONDITION when `layer` is not linear.
  // `client` must outlive the RemoteLinear.
  static absl::StatusOr<std::unique_ptr<RemoteLinear>> Create(
      Client* client, absl::string_view layer, const RemoteLinearOptions& options = {});
  ~RemoteLinear();
  RemoteLinear(const RemoteLinear&) = delete;
  RemoteLinear& operator=(const RemoteLinear&) = delete;

  const std::string& layer() const { return layer_; }
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  // [..., N] for an input of shape [..., K].
  Shape OutputShape(const Shape& input_shape) const;

  // y = x W^T + b. x: [..., K] (rank >= 1) of f16, bf16 or f32, its bytes
  // copied before this returns. The result's output is [M, N] in x's dtype
  // (M = product of the leading dims; 1 for a [K] input); latency_us covers
  // every attempt, `attempts` counts them.
  std::future<absl::StatusOr<ForwardResult>> ForwardAsync(const ConstTensorView& x);
  // Callback form: `done` runs exactly once, on a gRPC or timer thread (keep
  // it short), or here for an input rejected before the wire.
  void ForwardAsync(const ConstTensorView& x, ForwardCallback done);
  // Blocking.
  absl::StatusOr<ForwardResult> Forward(const ConstTensorView& x) { return ForwardAsync(x).get(); }

 private:
  RemoteLinear(Client* client, std::string layer, int64_t in_features, int64_t out_features,
               const RemoteLinearOptions& options);

  Client* const client_;
  const std::string layer_;
  const int64_t in_features_;
  const int64_t out_features_;
  // Last member: its destructor waits for the calls, which use the above.
  ResendingCaller<ForwardResult> resender_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_REMOTE_LINEAR_H_
