// grpc::Status -> absl::Status. The codes are the same numbers
// (google.rpc.Code), so this is a cast plus the message.
#ifndef QLAYER_CLIENT_GRPC_STATUS_H_
#define QLAYER_CLIENT_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace qlayer {

inline absl::Status FromGrpcStatus(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace qlayer

#endif  // QLAYER_CLIENT_GRPC_STATUS_H_
