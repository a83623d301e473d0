// A loaded layer as the wire describes it (ListLayers / DescribeLayer).
#ifndef QLAYER_SERVER_SERVICE_LAYER_INFO_H_
#define QLAYER_SERVER_SERVICE_LAYER_INFO_H_

#include "qlayer/v1/layer_service.pb.h"
#include "server/model/loaded_linear.h"
#include "server/model/loaded_moe.h"

namespace qlayer {

void FillLayerSummary(const LoadedLinear& layer, v1::LayerSummary* out);
// Every field, including each rejected kernel candidate with its reason.
void FillLayerInfo(const LoadedLinear& layer, v1::LayerInfo* out);
// MoE blocks: kind "moe", in = out = H, the experts' format and weight type,
// the experts kernel (and its rejected candidates), LayerInfo.moe filled.
void FillLayerSummary(const LoadedMoE& moe, v1::LayerSummary* out);
void FillLayerInfo(const LoadedMoE& moe, v1::LayerInfo* out);

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_LAYER_INFO_H_
