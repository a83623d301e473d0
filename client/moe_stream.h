// MoEForward from C++ (issue 5): one synchronous LayerService.MoEForward
// stream on its own channel. Requests may be pipelined -- Send several, then
// Read their answers, which the server may return in any order (match them by
// request_id). What qlayer-cli's moe, verify and bench use for MoE blocks; a
// frontend keeps one stream per block and thread.
//
//   auto s = qlayer::MoEStream::Open("127.0.0.1:50051", absl::Seconds(10)).value();
//   uint64_t id = s->Send("model.layers.1.block_sparse_moe", x.view(), {}).value();
//   qlayer::MoEResult r = s->Read().value();   // r.status, r.output, r.kernels, r.topk_ids
//   s->Close();
//
// Not thread-safe: one thread sends, one reads (the same one, or two).
#ifndef QLAYER_CLIENT_MOE_STREAM_H_
#define QLAYER_CLIENT_MOE_STREAM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/channel_security.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

// How a request routes its tokens: at most one of router logits [T, E] or
// top-k ids [T, k] (i32 / i64) with weights [T, k]; none = the server routes
// with the gate it loaded. Empty tensors are not sent.
struct MoERoutingInput {
  ConstTensorView router_logits;
  ConstTensorView topk_ids;
  ConstTensorView topk_weights;
  bool return_routing = false;  // ask for the chosen ids and weights back
};

struct MoEResult {
  uint64_t request_id = 0;
  absl::Status status;  // the request's own error answer (the stream lives on)
  Tensor output;        // [T, H], the hidden states' dtype
  std::vector<std::string> kernels;
  Tensor topk_ids;      // [T, k] i32, when return_routing
  Tensor topk_weights;  // [T, k] f32, when return_routing
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int64_t total_us = 0;
  int64_t batch_rows = 0;
  int64_t latency_us = 0;  // client-side, from Send to this answer's decode
  // Times the request was sent (RemoteMoE re-sends unanswered calls).
  int attempts = 1;
};

class MoEStream {
 public:
  // Connects (waiting up to `connect_timeout`) and opens the stream; the
  // stream's own deadline is `stream_timeout` from now (infinite = none).
  // `security`: TLS / client certificate / bearer token, as for Client.
  static absl::StatusOr<std::unique_ptr<MoEStream>> Open(
      const std::string& address, absl::Duration connect_timeout,
      absl::Duration stream_timeout = absl::InfiniteDuration(),
      const ChannelSecurity& security = {});
  ~MoEStream();  // cancels the stream if Close was not called

  // Sends one request; returns its request_id (1, 2, ... per stream). The
  // tensors are copied before this returns.
  absl::StatusOr<uint64_t> Send(absl::string_view layer, const ConstTensorView& hidden_states,
                                const MoERoutingInput& routing);
  // The next answer. A non-OK StatusOr means the stream ended (with the
  // stream's status); a request's own error is MoEResult::status.
  absl::StatusOr<MoEResult> Read();
  // Half-closes, drains answers not read yet, and returns the stream status.
  absl::Status Close();

 private:
  MoEStream() = default;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LayerService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::MoEForwardRequest, v1::MoEForwardResponse>> stream_;
  uint64_t next_id_ = 1;
  std::vector<std::pair<uint64_t, absl::Time>> sent_;  // ids awaiting an answer
  bool closed_ = false;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_MOE_STREAM_H_
