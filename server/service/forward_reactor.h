// One Forward stream: each request is validated on the gRPC thread that read
// it, then handed to its layer's batch queue; the worker that computes it
// encodes the answer and queues it for writing. Bad requests get an error
// answer for their id and the stream lives on.
#ifndef QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_
#define QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_

#include <memory>

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/service/pipelined_reactor.h"
#include "server/service/served_model.h"

namespace qlayer {

class ForwardReactor final : public PipelinedReactor<v1::ForwardRequest, v1::ForwardResponse> {
 public:
  ForwardReactor(const ServedModel* served, grpc::CallbackServerContext* context);

 private:
  void HandleRequest(std::unique_ptr<v1::ForwardRequest> request) override;
  // An error answer for a request that never reached a queue.
  void Reject(uint64_t request_id, const absl::Status& status, absl::Time arrival,
              RequestMetrics& metrics);

  const ServedModel* const served_;
  const absl::Time stream_deadline_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_
