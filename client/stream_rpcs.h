// The two pipelined streaming RPCs of qlayer::Client, as the parameters of
// CallStream (call_stream.h): their message types, the result a call gives
// back, the stub method that opens the stream, and how an answer decodes.
#ifndef QLAYER_CLIENT_STREAM_RPCS_H_
#define QLAYER_CLIENT_STREAM_RPCS_H_

#include <functional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/forward_result.h"
#include "client/moe_stream.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

// True when an answer's error says the server is draining (SIGTERM) and
// refused the request without computing it: UNAVAILABLE with a
// google.rpc.ErrorInfo detail, reason SERVER_DRAINING in domain qlayer.v1
// (proto/qlayer/v1/layer_service.proto), or -- from a server older than the
// marker -- its "qlayer-server is draining" message. The stream it came on
// should take no more requests (CallStream retires it).
bool SaysServerDraining(const google::rpc::Status& error);

// Called exactly once per MoEForward call, on a gRPC or timer thread (keep it
// short). A request's own error answer is the non-OK status here (the
// result's `status` field stays OK).
using MoECallback = std::function<void(absl::StatusOr<MoEResult>)>;

// LayerService.Forward: linear layers.
struct ForwardRpc {
  using Request = v1::ForwardRequest;
  using Response = v1::ForwardResponse;
  using Result = ForwardResult;
  static constexpr char kName[] = "Forward";
  static void Open(v1::LayerService::Stub* stub, grpc::ClientContext* context,
                   grpc::ClientBidiReactor<Request, Response>* reactor) {
    stub->async()->Forward(context, reactor);
  }
  // An answer's result, or its error; `sent`: when the call was queued.
  static absl::StatusOr<Result> Decode(Response& response, absl::Time sent);
};

// LayerService.MoEForward: MoE blocks.
struct MoEForwardRpc {
  using Request = v1::MoEForwardRequest;
  using Response = v1::MoEForwardResponse;
  using Result = MoEResult;
  static constexpr char kName[] = "MoEForward";
  static void Open(v1::LayerService::Stub* stub, grpc::ClientContext* context,
                   grpc::ClientBidiReactor<Request, Response>* reactor) {
    stub->async()->MoEForward(context, reactor);
  }
  static absl::StatusOr<Result> Decode(Response& response, absl::Time sent);
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_STREAM_RPCS_H_
