// One Forward stream: each request is validated on the gRPC thread that read
// it, then handed to its layer's batch queue; the worker that computes it
// encodes the answer and queues it for writing. Bad requests get an error
// answer for their id and the stream lives on.
#ifndef QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_
#define QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_

#include <memory>

#include "grpcpp/server_context.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/service/batched_reactor.h"
#include "server/service/served_model.h"

namespace qlayer {

class ForwardReactor final : public BatchedReactor<v1::ForwardRequest, v1::ForwardResponse> {
 public:
  ForwardReactor(const ServedModel* served, grpc::CallbackServerContext* context);

 private:
  void HandleRequest(std::unique_ptr<v1::ForwardRequest> request) override;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_FORWARD_REACTOR_H_
