// MoEForward streams. MoE blocks are not loaded yet (issue 5 adds them), so
// every request is answered with an UNIMPLEMENTED error for its id; the
// stream, its pipelining and its draining already behave as Forward's do.
#ifndef QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_
#define QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_

#include <memory>

#include "qlayer/v1/layer_service.pb.h"
#include "server/service/pipelined_reactor.h"
#include "server/service/served_model.h"

namespace qlayer {

class MoEForwardReactor final
    : public PipelinedReactor<v1::MoEForwardRequest, v1::MoEForwardResponse> {
 public:
  explicit MoEForwardReactor(const ServedModel* served);

 private:
  void HandleRequest(std::unique_ptr<v1::MoEForwardRequest> request) override;

  const ServedModel* const served_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_MOE_FORWARD_REACTOR_H_
