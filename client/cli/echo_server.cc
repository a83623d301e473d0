// echo-server: the plain-gRPC baseline for bench. It serves the same
// LayerService.Forward method on the same messages and answers each request
// at once with an [M, N] output of the request's dtype, so that a bench
// against it measures what the transport alone costs for the same payloads
// (request M x K, answer M x N) through the same client.
#include <unistd.h>

#include <deque>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cli/commands.h"
#include "client/wire_tensor.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {
namespace {

class EchoReactor final : public grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse> {
 public:
  explicit EchoReactor(int64_t out_features) : out_features_(out_features) { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    const absl::Time arrival = absl::Now();
    v1::ForwardResponse response;
    response.set_request_id(request_.request_id());
    const v1::Tensor& in = request_.input();
    const int64_t m = in.shape_size() == 2 ? in.shape(0) : 1;
    const int64_t n = out_features_ > 0 ? out_features_ : in.shape(in.shape_size() - 1);
    v1::Tensor* y = response.mutable_output();
    y->set_dtype(in.dtype());
    if (in.shape_size() == 2) y->add_shape(m);
    y->add_shape(n);
    const auto dtype = FromWireDType(in.dtype());
    const size_t elem = dtype.ok() ? DTypeSize(*dtype) : 4;
    y->mutable_data()->assign(static_cast<size_t>(m * n) * elem, '\0');
    response.set_kernel("echo");
    response.set_batch_rows(m);
    response.mutable_timing()->set_total_us(absl::ToInt64Microseconds(absl::Now() - arrival));
    StartRead(&request_);  // request_ is no longer needed
    absl::MutexLock lock(&mu_);
    ready_.push_back(std::move(response));
    MaybeWriteLocked();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    ready_.pop_front();
    if (!ok) {
      broken_ = true;
      ready_.clear();
    }
    MaybeWriteLocked();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || broken_ || ready_.empty()) return;
    writing_ = true;
    StartWrite(&ready_.front());  // deque: front stays put while we push_back
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || !reads_done_ || writing_ || !ready_.empty()) return;
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  const int64_t out_features_;
  v1::ForwardRequest request_;
  absl::Mutex mu_;
  std::deque<v1::ForwardResponse> ready_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class EchoService final : public v1::LayerService::CallbackService {
 public:
  explicit EchoService(int64_t out_features) : out_features_(out_features) {}
  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* Forward(
      grpc::CallbackServerContext* /*context*/) override {
    return new EchoReactor(out_features_);
  }

 private:
  const int64_t out_features_;
};

}  // namespace

absl::Status RunEchoServer(const std::string& listen, int64_t out_features, std::ostream& out) {
  EchoService service(out_features);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("echo-server cannot listen on ", listen));
  }
  const std::string host = listen.substr(0, listen.rfind(':'));
  out << "qlayer-cli echo-server listening on " << host << ":" << port << std::endl;
  // Serve until stdin closes: a bench that spawned us holds the other end,
  // so the echo server cannot outlive it even if it crashes.
  char buf[256];
  while (read(STDIN_FILENO, buf, sizeof(buf)) > 0) {
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return absl::OkStatus();
}

}  // namespace qlayer
