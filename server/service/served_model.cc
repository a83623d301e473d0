#include "server/service/served_model.h"

namespace qlayer {

ServedModel::ServedModel(const Model& model, const Scheduler& scheduler, ServerMetrics& metrics,
                         ServiceOptions options)
    : model_(model), metrics_(metrics), options_(options) {
  streams_.set_on_change([&metrics](size_t n) { metrics.SetOpenStreams(n); });
  for (const auto& layer : model.linears()) {
    ServedLayer& s = layers_[layer->name()];
    s.layer = layer.get();
    s.queue = scheduler.QueueFor(layer->name());
    s.metrics = metrics.ForLayer(layer->name());
  }
  for (const auto& moe : model.moes()) {
    ServedLayer& s = layers_[moe->name()];
    s.moe = moe.get();
    s.queue = scheduler.QueueFor(moe->name());
    s.metrics = metrics.ForLayer(moe->name());
  }
}

const ServedLayer* ServedModel::Find(absl::string_view name) const {
  auto it = layers_.find(name);
  return it == layers_.end() ? nullptr : &it->second;
}

}  // namespace qlayer
