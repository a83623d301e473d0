// What one Forward call gives back.
#ifndef QLAYER_CLIENT_FORWARD_RESULT_H_
#define QLAYER_CLIENT_FORWARD_RESULT_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

struct ForwardResult {
  uint64_t request_id = 0;
  Tensor output;       // [M, N] (M = 1 for a one-row [K] input), the input's dtype
  std::string kernel;  // the kernel that computed it, as the server names it
  // Server-side timing (proto Timing) and the rows of the batch it ran in.
  int64_t queue_us = 0;
  int64_t compute_us = 0;
  int64_t total_us = 0;
  int64_t batch_rows = 0;
  // Client-side: from Forward() being called to the answer being decoded.
  // latency_us - total_us is what the transport (and client queueing) cost.
  int64_t latency_us = 0;
  // Times the request was sent: > 1 when RemoteLinear re-sent it after a
  // stream ended unanswered (qlayer::Client itself sends once).
  int attempts = 1;
};

// Called exactly once per Forward call, on a gRPC or timer thread: keep it
// short and never block in it on another Forward's answer.
using ForwardCallback = std::function<void(absl::StatusOr<ForwardResult>)>;

}  // namespace qlayer

#endif  // QLAYER_CLIENT_FORWARD_RESULT_H_
