// What a request handler needs to serve a layer by name: the loaded layer,
// its batch queue and its metrics, resolved once at startup; plus the
// server-wide limits and the live streams. Immutable after construction
// (apart from the thread-safe registry), shared by every reactor.
#ifndef QLAYER_SERVER_SERVICE_SERVED_MODEL_H_
#define QLAYER_SERVER_SERVICE_SERVED_MODEL_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/string_view.h"
#include "server/metrics/server_metrics.h"
#include "server/model/model.h"
#include "server/scheduler/scheduler.h"
#include "server/service/stream_registry.h"

namespace qlayer {

struct ServiceOptions {
  int64_t max_rows_per_request = 4096;     // --max-rows-per-request
  int64_t max_inflight_per_stream = 1024;  // requests read but not yet answered, per stream
};

// Exactly one of `layer` (a linear layer) and `moe` (an MoE block) is set.
struct ServedLayer {
  const LoadedLinear* layer = nullptr;
  const LoadedMoE* moe = nullptr;
  BatchQueue* queue = nullptr;
  LayerMetrics* metrics = nullptr;
  const std::string& name() const { return layer != nullptr ? layer->name() : moe->name(); }
};

class ServedModel {
 public:
  // All must outlive this object.
  ServedModel(const Model& model, const Scheduler& scheduler, ServerMetrics& metrics,
              ServiceOptions options);

  const Model& model() const { return model_; }
  // nullptr for a name the model does not host.
  const ServedLayer* Find(absl::string_view name) const;
  ServerMetrics& metrics() const { return metrics_; }
  const ServiceOptions& options() const { return options_; }
  StreamRegistry& streams() const { return streams_; }

 private:
  const Model& model_;
  ServerMetrics& metrics_;
  const ServiceOptions options_;
  std::map<std::string, ServedLayer, std::less<>> layers_;
  mutable StreamRegistry streams_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_SERVED_MODEL_H_
