// qlayer::Client: the C++ caller's side of qlayer.v1.LayerService.
//
//   auto client = qlayer::Client::Connect("127.0.0.1:50051").value();
//   auto future = client->Forward("model.layers.0.mlp.down_proj", x.view());
//   absl::StatusOr<qlayer::ForwardResult> y = future.get();  // y->output, y->kernel, y->compute_us
//
// Streams: one Forward stream per (layer, lane), opened on first use and
// kept open. Calls on a stream are pipelined: each gets a request id from
// this client (unique across all its streams) and its answer is matched by
// id, so many calls may be in flight and answered in any order. Lane 0 is
// the default; callers that want several streams to one layer (a bench with
// S streams, a frontend with one stream per worker thread) pick lanes
// 0..S-1 in CallOptions. All streams share one channel (one HTTP/2
// connection).
//
// Failure: when a stream ends (server restarted, draining, network), every
// call pending on it ends with the stream's gRPC status (UNAVAILABLE, ...)
// and the next call to that (layer, lane) opens a new stream; the channel
// reconnects by itself, with a short backoff (ClientOptions). Deadlines are
// per call, enforced by the client (DEADLINE_EXCEEDED), since a stream
// outlives its calls and the wire contract carries no per-request deadline.
//
// Thread-safe. Callbacks run on gRPC's or the deadline timer's threads.
#ifndef QLAYER_CLIENT_CLIENT_H_
#define QLAYER_CLIENT_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/call_stream.h"
#include "client/channel_security.h"
#include "client/deadline_timer.h"
#include "client/forward_result.h"
#include "client/moe_stream.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

struct ClientOptions {
  // Largest message either way; the server has its own receive limit.
  int max_message_bytes = 256 << 20;
  // false: calls fail fast with UNAVAILABLE while the server is unreachable.
  // true: a new stream waits for the channel to connect (bounded by each
  // call's deadline only).
  bool wait_for_ready = false;
  // gRPC's reconnect backoff (initial, max); gRPC's defaults (1 s growing to 120 s) would
  // keep a restarted server unreachable for seconds.
  absl::Duration min_reconnect_backoff = absl::Milliseconds(100);
  absl::Duration max_reconnect_backoff = absl::Seconds(2);
  // Deadline of ListLayers / DescribeLayer.
  absl::Duration unary_timeout = absl::Seconds(30);
  // TLS, mutual TLS and the bearer token (client/channel_security.h);
  // default: plaintext, no token.
  ChannelSecurity security;
};

struct CallOptions {
  // The call ends with DEADLINE_EXCEEDED if no answer came by then.
  absl::Duration timeout = absl::InfiniteDuration();
  // Which of several streams to the same layer carries the call.
  int lane = 0;
  // When this call opens a new stream, the stream waits for the channel to
  // connect (as ClientOptions::wait_for_ready does for every stream), bounded
  // by `timeout`. RemoteLinear re-sends this way after a server restart: the
  // call goes out when the new server listens, instead of failing fast once
  // per backoff step until then.
  bool wait_for_ready = false;
};

class Client {
 public:
  // Creates the channel: plaintext unless options.security asks for TLS (and
  // a client certificate, a bearer token). Does not wait for the server; see
  // WaitForReady.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const std::string& address,
                                                         const ClientOptions& options = {});
  // Cancels every open stream (pending calls end CANCELLED, their callbacks
  // run before this returns) and waits until gRPC has let go of each, so that
  // the streams and the Channel are destroyed on this thread. Not from one of
  // the Client's own callbacks (it would wait for itself).
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& address() const { return address_; }
  // As given to Connect (other channels to the same server reuse security).
  const ClientOptions& options() const { return options_; }

  // Blocks until the channel is connected; UNAVAILABLE naming the address if
  // it is not within `timeout`.
  absl::Status WaitForReady(absl::Duration timeout);

  absl::StatusOr<v1::ListLayersResponse> ListLayers(absl::string_view glob = "");
  absl::StatusOr<v1::LayerInfo> DescribeLayer(absl::string_view name);

  // y = x W^T + b on the server. `x` is [M, K] or [K], f16/bf16/f32; its bytes
  // are copied before this returns.
  std::future<absl::StatusOr<ForwardResult>> Forward(absl::string_view layer,
                                                     const ConstTensorView& x,
                                                     const CallOptions& options = {});
  // Callback form: `done` runs exactly once (see ForwardCallback).
  void Forward(absl::string_view layer, const ConstTensorView& x, const CallOptions& options,
               ForwardCallback done);

  // One MoE block's forward on the server (LayerService.MoEForward):
  // hidden states [T, H] (or [H]), f16/bf16/f32, routed by `routing` (router
  // logits, top-k ids + weights, or nothing: the server's router). Streams,
  // pipelining, lanes, deadlines and reconnects as for Forward (one MoEForward
  // stream per (block, lane)); a request's error answer is the non-OK status.
  // The tensors are copied before this returns. Defined in client_moe.cc.
  std::future<absl::StatusOr<MoEResult>> MoEForward(absl::string_view block,
                                                    const ConstTensorView& hidden_states,
                                                    const MoERoutingInput& routing = {},
                                                    const CallOptions& options = {});
  // Callback form: `done` runs exactly once (see MoECallback).
  void MoEForward(absl::string_view block, const ConstTensorView& hidden_states,
                  const MoERoutingInput& routing, const CallOptions& options,
                  std::function<void(absl::StatusOr<MoEResult>)> done);

  // Streams opened so far (a reconnect opens a new one): for tests and logs.
  int64_t streams_opened() const { return streams_opened_.load(); }

 private:
  Client(std::string address, const ClientOptions& options, std::shared_ptr<grpc::Channel> channel);

  const std::string address_;
  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LayerService::Stub> stub_;
  DeadlineTimer timer_;
  std::atomic<uint64_t> next_request_id_{1};
  std::atomic<int64_t> streams_opened_{0};

  // Forward's and MoEForward's streams, keyed by (layer, lane, waits for
  // the channel): a fail-fast call never joins a stream that is waiting for
  // the channel, where it would wait too. Last members: destroyed first,
  // while timer_ and stub_ live (~Client shuts them down).
  CallStreams<ForwardRpc> streams_;
  CallStreams<MoEForwardRpc> moe_streams_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLIENT_H_
