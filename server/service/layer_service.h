// qlayer.v1.LayerService on gRPC's callback API: no thread per stream; the
// unary calls answer inline from the immutable model, the streams get a
// reactor each (forward_reactor.h, moe_forward_reactor.h).
#ifndef QLAYER_SERVER_SERVICE_LAYER_SERVICE_H_
#define QLAYER_SERVER_SERVICE_LAYER_SERVICE_H_

#include "qlayer/v1/layer_service.grpc.pb.h"
#include "server/service/served_model.h"

namespace qlayer {

class LayerServiceImpl final : public v1::LayerService::CallbackService {
 public:
  explicit LayerServiceImpl(const ServedModel* served) : served_(served) {}

  grpc::ServerUnaryReactor* ListLayers(grpc::CallbackServerContext* context,
                                       const v1::ListLayersRequest* request,
                                       v1::ListLayersResponse* response) override;
  grpc::ServerUnaryReactor* DescribeLayer(grpc::CallbackServerContext* context,
                                          const v1::DescribeLayerRequest* request,
                                          v1::LayerInfo* response) override;
  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* Forward(
      grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<v1::MoEForwardRequest, v1::MoEForwardResponse>* MoEForward(
      grpc::CallbackServerContext* context) override;

 private:
  const ServedModel* const served_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_LAYER_SERVICE_H_
