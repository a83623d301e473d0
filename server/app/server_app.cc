#include "server/app/server_app.h"

#include <algorithm>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "qlayer/kernels/status_macros.h"
#include "server/common/log.h"
#include "server/security/grpc_credentials.h"

namespace qlayer {
namespace {

// While draining, a stream whose client has not half-closed is finished
// once it owes nothing and has read no request for this long: qlayer::Client
// and the Python client keep their streams open for the next call. Long
// enough that a client still sending its last requests is not cut off.
constexpr absl::Duration kDrainQuiet = absl::Milliseconds(500);

// "127.0.0.1:0" -> "127.0.0.1:<port>"; "[::1]:0" -> "[::1]:<port>".
std::string WithPort(const std::string& listen, int port) {
  const size_t colon = listen.rfind(':');
  return absl::StrCat(colon == std::string::npos ? listen : listen.substr(0, colon), ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerApp>> ServerApp::Start(const ServerOptions& options) {
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, Model::Load(options.model));
  return Serve(std::move(model), options);
}

absl::StatusOr<std::unique_ptr<ServerApp>> ServerApp::Serve(std::unique_ptr<Model> model,
                                                            const ServerOptions& options) {
  if (options.max_receive_bytes <= 0 ||
      options.max_receive_bytes > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max-receive-bytes ", options.max_receive_bytes, " is not in [1, 2147483647]"));
  }
  if (options.service.max_rows_per_request < 1 || options.scheduler.queue.max_batch_rows < 1 ||
      options.scheduler.queue.max_queue < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limits must be positive: --max-rows-per-request ", options.service.max_rows_per_request,
        ", --max-batch-rows ", options.scheduler.queue.max_batch_rows, ", --max-queue ",
        options.scheduler.queue.max_queue));
  }
  if (options.max_streams_per_connection < 0 ||
      options.max_streams_per_connection > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("--max-streams-per-connection ",
                                                   options.max_streams_per_connection,
                                                   " is not in [0, 2147483647]"));
  }
  // Files first: a bad certificate or token file stops the start before
  // anything listens.
  QLAYER_ASSIGN_OR_RETURN(const LoadedSecurity security, LoadSecurity(options.security));
  auto app = std::unique_ptr<ServerApp>(new ServerApp);
  app->model_ = std::move(model);
  QLAYER_ASSIGN_OR_RETURN(app->metrics_, ServerMetrics::Create(*app->model_));
  if (!options.metrics_listen.empty()) {
    QLAYER_RETURN_IF_ERROR(app->metrics_->Serve(options.metrics_listen, security.metrics_tokens));
  }
  ServerMetrics* metrics = app->metrics_.get();
  app->scheduler_ = std::make_unique<Scheduler>(
      *app->model_, options.scheduler,
      [metrics](const std::string& layer) -> BatchObserver* { return metrics->ForLayer(layer); });
  app->served_ = std::make_unique<ServedModel>(*app->model_, *app->scheduler_, *app->metrics_,
                                               options.service);
  app->layer_service_ = std::make_unique<LayerServiceImpl>(app->served_.get());
  app->health_ = std::make_unique<HealthService>();

  grpc::ServerBuilder builder;
  // Without this, Linux lets a second server bind the same port (SO_REUSEPORT)
  // and split the traffic; a taken port must be an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_receive_bytes));
  if (options.max_streams_per_connection > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               static_cast<int>(options.max_streams_per_connection));
  }
  builder.AddListeningPort(options.listen, MakeServerCredentials(security), &app->port_);
  builder.RegisterService(app->layer_service_.get());
  builder.RegisterService(app->health_.get());
  app->server_ = builder.BuildAndStart();
  if (app->server_ == nullptr || app->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("--listen ", options.listen, ": cannot bind (address in use or invalid",
                     security.tls() ? ", or the TLS certificate and key do not match" : "", ")"));
  }
  app->address_ = WithPort(options.listen, app->port_);
  app->health_->SetServing(true);
  QLAYER_LOG(INFO) << "serving " << app->model_->linears().size() << " linear layer(s) and "
                   << app->model_->moes().size() << " MoE block(s) on " << app->address_ << " with "
                   << app->scheduler_->workers() << " compute workers; max batch rows "
                   << options.scheduler.queue.max_batch_rows << ", queue "
                   << options.scheduler.queue.max_queue << " per layer, "
                   << options.service.max_rows_per_request << " rows per request, "
                   << options.max_receive_bytes << " bytes per message, "
                   << options.max_streams_per_connection << " streams per connection; "
                   << (security.mutual_tls() ? "mutual TLS"
                       : security.tls()      ? "TLS"
                                             : "plaintext")
                   << (security.tokens != nullptr
                           ? absl::StrCat(", bearer tokens (", security.tokens->size(), ")")
                           : std::string(", no authentication"));
  return app;
}

ServerApp::~ServerApp() { Drain(absl::ZeroDuration()); }

void ServerApp::Drain(absl::Duration grace) {
  absl::MutexLock lock(&drain_mu_);
  if (drained_) return;
  drained_ = true;
  if (server_ == nullptr) return;
  QLAYER_LOG(INFO) << "draining: health NOT_SERVING, " << served_->streams().size()
                   << " open stream(s) finish their accepted requests (grace "
                   << absl::FormatDuration(grace) << ")";
  const absl::Time deadline = absl::Now() + grace;
  // Past this, streams that owe nothing are finished however recently they
  // read; the rest of the grace lets their statuses go out.
  const absl::Time quiet_until = deadline - std::min(grace / 10, absl::Seconds(1));
  health_->SetServing(false);
  StreamRegistry& streams = served_->streams();
  streams.DrainAll();
  absl::Notification stopped;
  std::thread finisher([&] {
    while (!stopped.WaitForNotificationWithTimeout(absl::Milliseconds(20))) {
      const absl::Time now = absl::Now();
      streams.FinishIdle(now < quiet_until ? now - kDrainQuiet : absl::InfiniteFuture());
    }
  });
  // The streams end before Server::Shutdown, not under it: after its GOAWAY
  // gRPC closes a connection as soon as its last stream ends, and a close
  // with request bytes still unread in the socket makes Linux reset the
  // connection, discarding answers not yet delivered. Until then the
  // connections stay open, so whatever clients still send is read (and
  // refused) and every answer reaches them.
  streams.AwaitEmpty(quiet_until);
  health_->Shutdown();
  // Refuses new calls; waits for streams still open, at most until the
  // deadline, then cancels them.
  server_->Shutdown(absl::ToChronoTime(deadline));
  stopped.Notify();
  finisher.join();
  scheduler_->Shutdown();
  server_->Wait();
  QLAYER_LOG(INFO) << "drained";
}

}  // namespace qlayer
