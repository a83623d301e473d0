#include "server/service/layer_info.h"

#include <cstdint>
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

// What LayerSummary and LayerInfo both say of a linear layer or an MoE block
// (Layer: LoadedLinear or LoadedMoE; `s`: its weights' spec, the experts'
// for a block).
template <class Layer, class Message>
void FillCommon(const Layer& layer, const LinearSpec& s, int64_t in_features, int64_t out_features,
                Message* out) {
  out->set_name(layer.name());
  out->set_kind(layer.kind());
  out->set_in_features(in_features);
  out->set_out_features(out_features);
  out->set_format(layer.scheme().origin);
  out->set_weight_type(WeightTypeLabel(s));
  out->set_group_size(s.wtype == WeightType::kDense ? 0 : s.group_size);
  out->set_device(layer.device().ToString());
}

// LayerInfo's storage fields and the kernels that were rejected.
template <class Layer>
void FillStorage(const Layer& layer, const LinearSpec& s, v1::LayerInfo* out) {
  out->set_bits(StoredBits(s));
  out->set_zero_points(s.zero_points);
  out->set_act_order(s.g_idx);
  out->set_has_bias(s.bias);
  out->set_scale_dtype(std::string(DTypeName(s.scale_dtype)));
  out->set_weight_bytes(layer.weight_bytes());
  out->set_prepared_bytes(layer.prepared_bytes());
  for (const Rejection& r : layer.rejected()) {
    v1::KernelRejection* j = out->add_rejected();
    j->set_kernel(r.kernel);
    j->set_reason(std::string(r.why.message()));
  }
}

}  // namespace

void FillLayerSummary(const LoadedLinear& layer, v1::LayerSummary* out) {
  const LinearSpec& s = layer.spec();
  FillCommon(layer, s, s.K, s.N, out);
  for (const PreparedKernel& k : layer.kernels()) out->add_kernels(k.name);
}

void FillLayerInfo(const LoadedLinear& layer, v1::LayerInfo* out) {
  const LinearSpec& s = layer.spec();
  FillCommon(layer, s, s.K, s.N, out);
  FillStorage(layer, s, out);
  for (const PreparedKernel& k : layer.kernels()) {
    v1::KernelChoice* c = out->add_kernels();
    c->set_kernel(k.name);
    c->set_max_rows(k.max_m == kUnboundedM ? 0 : k.max_m);
    if (k.max_m != kUnboundedM) {
      c->set_max_rows_source(k.measured ? "measured" : "default");
      c->set_crossover_timings(k.crossover_timings);
    }
  }
}

void FillLayerSummary(const LoadedMoE& moe, v1::LayerSummary* out) {
  FillCommon(moe, moe.expert_spec(), moe.hidden(), moe.hidden(), out);
  out->add_kernels(std::string(moe.kernel().name()));
}

void FillLayerInfo(const LoadedMoE& moe, v1::LayerInfo* out) {
  const LinearSpec& s = moe.expert_spec();
  FillCommon(moe, s, moe.hidden(), moe.hidden(), out);
  FillStorage(moe, s, out);
  v1::KernelChoice* c = out->add_kernels();
  c->set_kernel(std::string(moe.kernel().name()));
  c->set_max_rows(0);
  const RouterConfig& r = moe.router().config();
  v1::MoEInfo* m = out->mutable_moe();
  m->set_num_experts(static_cast<int32_t>(moe.num_experts()));
  m->set_top_k(r.top_k);
  m->set_router(r.ToString());
  m->set_intermediate_size(moe.intermediate());
  m->set_shared_intermediate_size(moe.shared_intermediate());
  m->set_shared_expert_gate(moe.shared_expert_gate());
  m->set_n_group(static_cast<int32_t>(r.n_group));
  m->set_topk_group(static_cast<int32_t>(r.topk_group));
  m->set_routed_scaling_factor(r.routed_scaling_factor);
  m->set_norm_topk_prob(r.norm_topk_prob);
  m->set_experts_kernel(moe.kernel().Describe());
  m->set_family(moe.family());
  m->set_correction_bias(r.has_correction_bias);
  m->set_scoring(std::string(RouterScoringName(r.scoring)));
  m->set_topk_method(std::string(TopkMethodName(r.topk_method)));
}

}  // namespace qlayer
