// grpc.health.v1.Health served from the compiled proto/grpc/health/v1/
// health.proto, so its descriptors are in the reflection pool and grpcurl
// (and Kubernetes' grpc probes) resolve it by name; gRPC's built-in
// EnableDefaultHealthCheckService does not register them.
//
// Services answered: "" (the whole server) and "qlayer.v1.LayerService".
// NOT_SERVING until SetServing(true) after load; NOT_SERVING again when
// draining. Watch streams get the current status, then every change.
#ifndef QLAYER_SERVER_SERVICE_HEALTH_SERVICE_H_
#define QLAYER_SERVER_SERVICE_HEALTH_SERVICE_H_

#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace qlayer {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  HealthService() = default;
  ~HealthService() override;

  void SetServing(bool serving);
  // Ends every Watch stream (call before the server shuts down, or its
  // Shutdown waits on them until the grace deadline).
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest* request,
                                  grpc::health::v1::HealthCheckResponse* response) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request) override;

  class WatchReactor;

 private:
  static bool KnownService(const std::string& name);
  ServingStatus StatusOfLocked(const std::string& service) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Remove(WatchReactor* w);

  mutable absl::Mutex mu_;
  bool serving_ ABSL_GUARDED_BY(mu_) = false;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::set<WatchReactor*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_HEALTH_SERVICE_H_
