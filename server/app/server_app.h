// The assembled server: model -> metrics -> scheduler -> gRPC services, with
// the startup order (health NOT_SERVING until everything is up) and the
// drain order (health NOT_SERVING, streams finish their accepted work, the
// server stops accepting, the workers finish, exit) in one place.
// qlayer_server_main.cc is flags + signals around this; tests start it
// in-process too.
#ifndef QLAYER_SERVER_APP_SERVER_APP_H_
#define QLAYER_SERVER_APP_SERVER_APP_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/metrics/server_metrics.h"
#include "server/model/model.h"
#include "server/scheduler/scheduler.h"
#include "server/security/security_options.h"
#include "server/service/health_service.h"
#include "server/service/layer_service.h"
#include "server/service/served_model.h"

namespace qlayer {

struct ServerOptions {
  ModelOptions model;
  std::string listen = "127.0.0.1:50051";         // port 0 = any free port
  std::string metrics_listen = "127.0.0.1:9400";  // "" = no /metrics endpoint
  SchedulerOptions scheduler;
  ServiceOptions service;
  // gRPC's own limit: a larger message ends its stream with
  // RESOURCE_EXHAUSTED. Requests under it but over --max-rows-per-request
  // get an INVALID_ARGUMENT answer and the stream lives on.
  int64_t max_receive_bytes = 64 << 20;
  // HTTP/2 streams one client connection may hold open at once
  // (GRPC_ARG_MAX_CONCURRENT_STREAMS). A client holds one Forward stream per
  // (layer, lane) it calls, so this caps what one connection can pin; more
  // streams wait (client side) for one to end. 0 = gRPC's default (no limit).
  int64_t max_streams_per_connection = 1024;
  // TLS, mutual TLS and bearer tokens, on the gRPC port and on /metrics.
  SecurityOptions security;
};

class ServerApp {
 public:
  // Loads options.model, then serves it.
  static absl::StatusOr<std::unique_ptr<ServerApp>> Start(const ServerOptions& options);
  // Serves an already-loaded model (options.model is ignored).
  static absl::StatusOr<std::unique_ptr<ServerApp>> Serve(std::unique_ptr<Model> model,
                                                          const ServerOptions& options);
  ~ServerApp();  // Drain(0) if not drained

  int port() const { return port_; }
  int metrics_port() const { return metrics_ ? metrics_->port() : 0; }
  // "127.0.0.1:PORT" with the bound port.
  std::string address() const { return address_; }
  const Model& model() const { return *model_; }
  ServerMetrics& metrics_registry() { return *metrics_; }

  // Stops serving gracefully: health NOT_SERVING; open streams answer what
  // they accepted, refuse (with an UNAVAILABLE answer each) what arrives
  // after, and end when their clients half-close -- or, for clients that
  // never do, once they owe nothing and have been quiet for kDrainQuiet;
  // new calls are refused; then the connections close, and after `grace`
  // whatever is left is cancelled. Returns when all is stopped.
  // Idempotent and thread-safe.
  void Drain(absl::Duration grace);

 private:
  ServerApp() = default;

  std::unique_ptr<Model> model_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<ServedModel> served_;
  std::unique_ptr<LayerServiceImpl> layer_service_;
  std::unique_ptr<HealthService> health_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  absl::Mutex drain_mu_;
  bool drained_ ABSL_GUARDED_BY(drain_mu_) = false;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_APP_SERVER_APP_H_
