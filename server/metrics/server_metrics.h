// Prometheus metrics (DESIGN.md "Serving"), declared once at startup. Every
// family is registered in Create(); every (layer, kernel) and (layer, method)
// series the request path touches is resolved there too, so serving a
// request only increments pre-resolved counters and histograms. The one
// exception is a rare status code's counter, added on first use (17 codes at
// most per series set, so labels stay bounded; no request ids, no client
// strings: an unknown layer is counted under layer="").
//
// prometheus-cpp reports bad names by throwing; Create() and Serve() catch
// that at this edge and return a Status.
#ifndef QLAYER_SERVER_METRICS_SERVER_METRICS_H_
#define QLAYER_SERVER_METRICS_SERVER_METRICS_H_

#include <array>
#include <atomic>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/model.h"
#include "server/scheduler/batch_observer.h"
#include "server/security/bearer_tokens.h"

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace qlayer {

class MetricsHttpServer;

enum class RpcMethod { kForward, kMoEForward, kListLayers, kDescribeLayer };
absl::string_view RpcMethodName(RpcMethod m);  // "Forward", ...

// qlayer_requests_total{layer,method,code} and
// qlayer_request_duration_seconds{layer,method} for one (layer, method).
class RequestMetrics {
 public:
  // `expected` codes get their series at once (at zero); others on first use.
  RequestMetrics(prometheus::Family<prometheus::Counter>& requests, prometheus::Histogram& duration,
                 std::string layer, RpcMethod method,
                 std::initializer_list<absl::StatusCode> expected);
  void Record(absl::StatusCode code, double seconds);

 private:
  static constexpr int kNumCodes = 17;  // google.rpc.Code 0..16
  prometheus::Counter& CounterFor(absl::StatusCode code);

  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Histogram& duration_;
  const std::string layer_;
  const RpcMethod method_;
  std::array<std::atomic<prometheus::Counter*>, kNumCodes> codes_{};
};

// Everything recorded about one hosted layer; the layer's batch queue
// reports through it.
class LayerMetrics final : public BatchObserver {
 public:
  RequestMetrics& forward() { return *forward_; }
  RequestMetrics& moe_forward() { return *moe_forward_; }

  void OnDequeued(double queue_seconds) override;
  void OnBatch(int kernel_index, int64_t rows, double compute_seconds) override;
  void OnQueueDepth(int64_t depth) override;
  void OnExpertTokens(const std::vector<int64_t>& tokens_per_expert) override;

 private:
  friend class ServerMetrics;
  struct KernelSeries {
    prometheus::Histogram* compute = nullptr;
    prometheus::Histogram* batch_rows = nullptr;
  };
  std::unique_ptr<RequestMetrics> forward_;
  std::unique_ptr<RequestMetrics> moe_forward_;
  prometheus::Histogram* queue_ = nullptr;
  prometheus::Gauge* depth_ = nullptr;
  std::vector<KernelSeries> kernels_;  // by index into LoadedLinear::kernels()
  // MoE blocks: qlayer_moe_expert_tokens_total{layer,expert}, one per expert.
  std::vector<prometheus::Counter*> expert_tokens_;
};

class ServerMetrics {
 public:
  // Registers every family and resolves every layer's series.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Create(const Model& model);
  ~ServerMetrics();

  // Serves /metrics over HTTP on `listen` ("127.0.0.1:9400"; port 0 picks a
  // free one, see port()); with `tokens`, a scrape must carry
  // "Authorization: Bearer <token>" (server/metrics/metrics_http.h).
  absl::Status Serve(const std::string& listen,
                     std::shared_ptr<const BearerTokens> tokens = nullptr);
  int port() const { return port_; }

  // nullptr for a layer the model does not host.
  LayerMetrics* ForLayer(absl::string_view name);
  // Requests naming no hosted layer (layer="").
  RequestMetrics& unknown_layer_forward() { return *unknown_forward_; }
  RequestMetrics& unknown_layer_moe_forward() { return *unknown_moe_forward_; }
  RequestMetrics& list_layers() { return *list_layers_; }
  RequestMetrics& describe_layer() { return *describe_layer_; }

  // qlayer_open_streams: Forward/MoEForward streams the server holds open.
  void SetOpenStreams(size_t n);

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  // The text exposition of everything registered (tests, debugging).
  std::string Scrape() const;

 private:
  ServerMetrics() = default;
  void Build(const Model& model);  // may throw; Create() catches

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> http_;
  int port_ = 0;
  prometheus::Gauge* open_streams_ = nullptr;
  std::map<std::string, std::unique_ptr<LayerMetrics>, std::less<>> layers_;
  std::unique_ptr<RequestMetrics> unknown_forward_, unknown_moe_forward_, list_layers_,
      describe_layer_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_METRICS_SERVER_METRICS_H_
