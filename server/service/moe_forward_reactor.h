// One MoEForward stream, shaped like Forward's (forward_reactor.h): each
// request is validated on the gRPC thread that read it -- the layer is an MoE
// block, hidden states [T, H], at most one routing source (router logits
// [T, E], or top-k ids and weights [T, k] checked against the block here) --
// then handed to the block's batch queue, where the worker routes it (the
// loaded gate when the caller sent no routing), runs the experts kernel on the
// whole batch and encodes the answer: output [T, H] in the input's dtype,
// every kernel that ran, timing, and the chosen ids / weights when
// return_routing asks. Bad requests get an error answer for their id
// (INVALID_ARGUMENT, NOT_FOUND, ...) and the stream lives on.
#ifndef QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_
#define QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_

#include <memory>

#include "grpcpp/server_context.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/service/batched_reactor.h"
#include "server/service/served_model.h"

namespace qlayer {

class MoEForwardReactor final
    : public BatchedReactor<v1::MoEForwardRequest, v1::MoEForwardResponse> {
 public:
  MoEForwardReactor(const ServedModel* served, grpc::CallbackServerContext* context);

 private:
  void HandleRequest(std::unique_ptr<v1::MoEForwardRequest> request) override;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_
