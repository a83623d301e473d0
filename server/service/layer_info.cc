#include "server/service/layer_info.h"

#include <string>

namespace qlayer {
namespace {

// Bits per stored weight element: the quantized width, or the dense dtype's.
int StoredBits(const LinearSpec& s) {
  const int bits = WeightBits(s.wtype);
  return bits > 0 ? bits : static_cast<int>(DTypeSize(s.scale_dtype) * 8);
}

std::string WeightTypeLabel(const LinearSpec& s) {
  return s.wtype == WeightType::kDense ? "dense" : std::string(WeightTypeName(s.wtype));
}

}  // namespace

void FillLayerSummary(const LoadedLinear& layer, v1::LayerSummary* out) {
  const LinearSpec& s = layer.spec();
  out->set_name(layer.name());
  out->set_kind(layer.kind());
  out->set_in_features(s.K);
  out->set_out_features(s.N);
  out->set_format(layer.scheme().origin);
  out->set_weight_type(WeightTypeLabel(s));
  out->set_group_size(s.wtype == WeightType::kDense ? 0 : s.group_size);
  out->set_device(layer.device().ToString());
  for (const PreparedKernel& k : layer.kernels()) out->add_kernels(k.name);
}

void FillLayerInfo(const LoadedLinear& layer, v1::LayerInfo* out) {
  const LinearSpec& s = layer.spec();
  out->set_name(layer.name());
  out->set_kind(layer.kind());
  out->set_in_features(s.K);
  out->set_out_features(s.N);
  out->set_format(layer.scheme().origin);
  out->set_weight_type(WeightTypeLabel(s));
  out->set_bits(StoredBits(s));
  out->set_group_size(s.wtype == WeightType::kDense ? 0 : s.group_size);
  out->set_zero_points(s.zero_points);
  out->set_act_order(s.g_idx);
  out->set_has_bias(s.bias);
  out->set_scale_dtype(std::string(DTypeName(s.scale_dtype)));
  out->set_weight_bytes(layer.weight_bytes());
  out->set_prepared_bytes(layer.prepared_bytes());
  out->set_device(layer.device().ToString());
  for (const PreparedKernel& k : layer.kernels()) {
    v1::KernelChoice* c = out->add_kernels();
    c->set_kernel(k.name);
    c->set_max_rows(k.max_m == kUnboundedM ? 0 : k.max_m);
  }
  for (const Rejection& r : layer.rejected()) {
    v1::KernelRejection* j = out->add_rejected();
    j->set_kernel(r.kernel);
    j->set_reason(std::string(r.why.message()));
  }
}

}  // namespace qlayer
