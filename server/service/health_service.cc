#include "server/service/health_service.h"

#include <optional>
#include <vector>

namespace qlayer {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch stream, fed from SetServing() on any thread (gRPC's own
// WatchReactor pattern): one write in flight, the latest unsent status kept
// in `next_`, finished once cancelled or shut down with no write pending.
// Lives until OnDone.
class HealthService::WatchReactor final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  WatchReactor(HealthService* service, std::string name)
      : service_(service), name_(std::move(name)) {}

  const std::string& name() const { return name_; }

  // Called with service->mu_ held (lock order: service, then watcher).
  void Send(ServingStatus status) {
    absl::MutexLock lock(&mu_);
    if (finish_requested_) return;
    if (write_pending_) {
      next_ = status;
      return;
    }
    WriteLocked(status);
  }

  void End() {
    absl::MutexLock lock(&mu_);
    finish_requested_ = true;
    finish_status_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "qlayer-server is shutting down");
    MaybeFinishLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_pending_ = false;
    if (!ok) {
      finish_requested_ = true;
      finish_status_ = grpc::Status::CANCELLED;
      next_.reset();
    } else if (next_.has_value()) {
      // Sent even when End() came meanwhile: a draining server's last word
      // to its watchers is NOT_SERVING.
      const ServingStatus s = *next_;
      next_.reset();
      WriteLocked(s);
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    next_.reset();
    finish_requested_ = true;
    finish_status_ = grpc::Status::CANCELLED;
    MaybeFinishLocked();
  }

  void OnDone() override {
    service_->Remove(this);
    delete this;
  }

 private:
  void WriteLocked(ServingStatus status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    response_.set_status(status);
    write_pending_ = true;
    StartWrite(&response_);
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_ && !write_pending_ && !finished_) {
      finished_ = true;
      Finish(finish_status_);
    }
  }

  HealthService* const service_;
  const std::string name_;
  absl::Mutex mu_;
  HealthCheckResponse response_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> next_ ABSL_GUARDED_BY(mu_);
  bool write_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
};

HealthService::~HealthService() = default;

bool HealthService::KnownService(const std::string& name) {
  return name.empty() || name == "qlayer.v1.LayerService";
}

HealthService::ServingStatus HealthService::StatusOfLocked(const std::string& service) const {
  if (!KnownService(service)) return HealthCheckResponse::SERVICE_UNKNOWN;
  return serving_ ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthService::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  serving_ = serving;
  for (WatchReactor* w : watchers_) w->Send(StatusOfLocked(w->name()));
}

void HealthService::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  serving_ = false;
  for (WatchReactor* w : watchers_) {
    w->Send(HealthCheckResponse::NOT_SERVING);
    w->End();
  }
}

void HealthService::Remove(WatchReactor* w) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(w);
}

grpc::ServerUnaryReactor* HealthService::Check(grpc::CallbackServerContext* context,
                                               const HealthCheckRequest* request,
                                               HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (!KnownService(request->service())) {
    // The protocol's answer for a service the server does not know.
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "unknown service '" + request->service() +
                                     "' (known: \"\" and \"qlayer.v1.LayerService\")"));
    return reactor;
  }
  {
    absl::MutexLock lock(&mu_);
    response->set_status(StatusOfLocked(request->service()));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthService::Watch(
    grpc::CallbackServerContext* /*context*/, const HealthCheckRequest* request) {
  auto* w = new WatchReactor(this, request->service());
  absl::MutexLock lock(&mu_);
  watchers_.insert(w);
  w->Send(shutdown_ ? HealthCheckResponse::NOT_SERVING : StatusOfLocked(request->service()));
  if (shutdown_) w->End();
  return w;
}

}  // namespace qlayer
