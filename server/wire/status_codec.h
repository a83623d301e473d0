// absl::Status -> the two wire forms: google.rpc.Status (an error answer
// inside a ForwardResponse) and grpc::Status (how a call ends). absl's codes
// are defined to match google/rpc/code.proto, so both are a cast of the code
// plus the message.
#ifndef QLAYER_SERVER_WIRE_STATUS_CODEC_H_
#define QLAYER_SERVER_WIRE_STATUS_CODEC_H_

#include "absl/status/status.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/support/status.h"

namespace qlayer {

google::rpc::Status ToRpcStatus(const absl::Status& status);
void ToRpcStatus(const absl::Status& status, google::rpc::Status* out);
grpc::Status ToGrpcStatus(const absl::Status& status);
// Adds the machine-readable "server is draining" marker to an error answer:
// a google.rpc.ErrorInfo detail, reason kServerDrainingReason in domain
// kQlayerErrorDomain (proto/qlayer/v1/layer_service.proto, ForwardResponse).
// Clients retire the stream on it instead of re-sending on it.
inline constexpr char kServerDrainingReason[] = "SERVER_DRAINING";
inline constexpr char kQlayerErrorDomain[] = "qlayer.v1";
void MarkServerDraining(google::rpc::Status* out);
// The canonical upper-case name ("INVALID_ARGUMENT"), used as a metrics label.
const char* StatusCodeName(absl::StatusCode code);

}  // namespace qlayer

#endif  // QLAYER_SERVER_WIRE_STATUS_CODEC_H_
