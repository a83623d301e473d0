#include "server/service/layer_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/service/forward_reactor.h"
#include "server/service/layer_info.h"
#include "server/service/moe_forward_reactor.h"
#include "server/wire/status_codec.h"

namespace qlayer {

grpc::ServerUnaryReactor* LayerServiceImpl::ListLayers(grpc::CallbackServerContext* context,
                                                       const v1::ListLayersRequest* request,
                                                       v1::ListLayersResponse* response) {
  const absl::Time start = absl::Now();
  // Linear layers and MoE blocks, merged in name order.
  const Model& model = served_->model();
  auto linear = model.linears().begin();
  auto moe = model.moes().begin();
  auto selected = [&](const std::string& name) {
    return request->glob().empty() || GlobMatch(request->glob(), name);
  };
  while (linear != model.linears().end() || moe != model.moes().end()) {
    const bool take_moe = linear == model.linears().end() ||
                          (moe != model.moes().end() && (*moe)->name() < (*linear)->name());
    if (take_moe) {
      if (selected((*moe)->name())) FillLayerSummary(**moe, response->add_layers());
      ++moe;
    } else {
      if (selected((*linear)->name())) FillLayerSummary(**linear, response->add_layers());
      ++linear;
    }
  }
  served_->metrics().list_layers().Record(absl::StatusCode::kOk,
                                          absl::ToDoubleSeconds(absl::Now() - start));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* LayerServiceImpl::DescribeLayer(grpc::CallbackServerContext* context,
                                                          const v1::DescribeLayerRequest* request,
                                                          v1::LayerInfo* response) {
  const absl::Time start = absl::Now();
  absl::Status status;
  if (const ServedLayer* served = served_->Find(request->name()); served != nullptr) {
    if (served->layer != nullptr) {
      FillLayerInfo(*served->layer, response);
    } else {
      FillLayerInfo(*served->moe, response);
    }
  } else {
    status = absl::NotFoundError(
        absl::StrCat("layer '", request->name(), "' is not hosted by this server (",
                     served_->model().num_layers(), " layers are; ListLayers names them)"));
  }
  served_->metrics().describe_layer().Record(status.code(),
                                             absl::ToDoubleSeconds(absl::Now() - start));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* LayerServiceImpl::Forward(
    grpc::CallbackServerContext* context) {
  return new ForwardReactor(served_, context);
}

grpc::ServerBidiReactor<v1::MoEForwardRequest, v1::MoEForwardResponse>*
LayerServiceImpl::MoEForward(grpc::CallbackServerContext* context) {
  return new MoEForwardReactor(served_, context);
}

}  // namespace qlayer
