// qlayer-server: serves the linear layers of one checkpoint directory over
// gRPC (qlayer.v1.LayerService, grpc.health.v1, server reflection) and
// Prometheus metrics over HTTP.
//
//   qlayer-server --model DIR [--layers GLOB] [--listen 127.0.0.1:50051]
//                 [--metrics-listen 127.0.0.1:9400] [--device auto|cpu|cuda:N]
//                 [--kernel NAME] [--disabled-kernels a,b] ...
//                 [--tls-cert F --tls-key F [--tls-client-ca F]] [--auth-token-file F]
//
// Once serving, prints one line on stdout with the bound ports (port 0 picks
// a free one), for scripts and tests:
//   qlayer-server listening on 127.0.0.1:PORT metrics 127.0.0.1:MPORT
// SIGTERM / SIGINT drain: health NOT_SERVING, open streams answer what they
// accepted and end, then the process exits 0 (within --grace-seconds).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "server/app/server_app.h"
#include "server/common/log.h"

ABSL_FLAG(std::string, model, "", "checkpoint directory (config.json + *.safetensors)");
ABSL_FLAG(std::string, layers, "",
          "which linear layers to serve: glob over module names ('*', '?'; several separated "
          "by ','); empty = all");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address; port 0 = any free port");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9400",
          "address of the Prometheus /metrics endpoint; port 0 = any free port; empty = none");
ABSL_FLAG(std::string, device, "auto",
          "auto (a CUDA GPU when one is present and the build has CUDA, else cpu) | cpu | "
          "cuda:N");
ABSL_FLAG(std::string, kernel, "",
          "force this kernel for every layer (load fails, naming the layer, if it cannot "
          "implement one)");
ABSL_FLAG(std::vector<std::string>, disabled_kernels, {},
          "kernels never to select, comma-separated (like VLLM_DISABLED_KERNELS)");
ABSL_FLAG(bool, measure_crossover, true,
          "on a GPU, time each layer shape's decode kernel against dequantize + cuBLAS at load "
          "and hand over at the measured row count (else the kernels' defaults)");
ABSL_FLAG(int64_t, max_batch_rows, 256, "rows of one batched kernel call per layer");
ABSL_FLAG(int64_t, max_queue, 1024,
          "requests waiting per layer; beyond it requests are answered RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_rows_per_request, 4096,
          "rows one request may carry; more is answered INVALID_ARGUMENT");
ABSL_FLAG(int64_t, max_receive_bytes, 64 << 20,
          "largest gRPC message accepted; a larger one ends its stream with RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_inflight_per_stream, 1024,
          "requests read but not yet answered per stream before reading pauses");
ABSL_FLAG(int64_t, max_streams_per_connection, 1024,
          "HTTP/2 streams one client connection may hold open (a client holds one per layer "
          "and lane it calls); 0 = gRPC's default, no limit");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls-key); /metrics stays HTTP");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: mutual TLS, gRPC clients must present a certificate it signed");
ABSL_FLAG(std::string, auth_token_file, "",
          "file of accepted bearer tokens (one per line): every RPC except grpc.health.v1 needs "
          "'authorization: Bearer <token>'; requires TLS");
ABSL_FLAG(std::string, metrics_auth_token_file, "",
          "file of bearer tokens accepted on /metrics (plain HTTP: not the gRPC tokens)");
ABSL_FLAG(int, workers, 0, "compute worker threads; 0 = one per hardware thread");
ABSL_FLAG(int, worker_spin_us, 0,
          "an idle compute worker polls for the next request this long (yielding the CPU) "
          "before it sleeps; saves a thread wake-up per request of a closed-loop caller");
ABSL_FLAG(int, kernel_threads, 0, "threads one kernel call may use; 0 = the kernel's default");
ABSL_FLAG(double, grace_seconds, 10, "on SIGTERM, how long open streams may take to finish");

namespace {

// The checkpoint is read through mmap while it loads. A file truncated in
// place by someone else meanwhile makes those reads fault (SIGBUS): say so
// and exit 1 rather than die of the signal. Loaded weights are copies and no
// mapping is kept, so the default action is restored after the load (a
// SIGBUS then is a bug to crash on). The message is formatted beforehand:
// only write and _exit are safe in the handler.
std::string* sigbus_message = nullptr;

void OnSigbusWhileLoading(int /*sig*/) {
  if (sigbus_message != nullptr) {
    (void)!write(STDERR_FILENO, sigbus_message->data(), sigbus_message->size());
  }
  _exit(1);
}

int Run() {
  qlayer::ServerOptions options;
  options.model.dir = absl::GetFlag(FLAGS_model);
  options.model.layers = absl::GetFlag(FLAGS_layers);
  options.model.device = absl::GetFlag(FLAGS_device);
  options.model.forced_kernel = absl::GetFlag(FLAGS_kernel);
  options.model.disabled_kernels = absl::GetFlag(FLAGS_disabled_kernels);
  options.model.measure_crossover = absl::GetFlag(FLAGS_measure_crossover);
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.scheduler.workers = absl::GetFlag(FLAGS_workers);
  options.scheduler.worker_spin_us = absl::GetFlag(FLAGS_worker_spin_us);
  options.scheduler.queue.max_batch_rows = absl::GetFlag(FLAGS_max_batch_rows);
  options.scheduler.queue.max_queue = absl::GetFlag(FLAGS_max_queue);
  options.scheduler.queue.kernel_threads = absl::GetFlag(FLAGS_kernel_threads);
  options.service.max_rows_per_request = absl::GetFlag(FLAGS_max_rows_per_request);
  options.service.max_inflight_per_stream = absl::GetFlag(FLAGS_max_inflight_per_stream);
  options.max_receive_bytes = absl::GetFlag(FLAGS_max_receive_bytes);
  options.max_streams_per_connection = absl::GetFlag(FLAGS_max_streams_per_connection);
  options.security.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.security.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.security.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.security.auth_token_file = absl::GetFlag(FLAGS_auth_token_file);
  options.security.metrics_auth_token_file = absl::GetFlag(FLAGS_metrics_auth_token_file);
  if (options.model.dir.empty()) {
    std::fprintf(stderr, "qlayer-server: --model DIR is required\n");
    return 2;
  }

  // Signals are taken synchronously by this thread (sigwait below): blocked
  // here, before gRPC and the workers start, so every thread inherits the
  // mask and none is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  sigbus_message = new std::string(
      absl::StrCat("qlayer-server: a checkpoint file in ", options.model.dir,
                   " was truncated or rewritten in place while it was being loaded (SIGBUS "
                   "reading its mapping); not started. Replace checkpoint files by rename.\n"));
  struct sigaction on_sigbus = {}, default_sigbus = {};
  on_sigbus.sa_handler = OnSigbusWhileLoading;
  sigaction(SIGBUS, &on_sigbus, &default_sigbus);
  absl::StatusOr<std::unique_ptr<qlayer::ServerApp>> app = absl::UnknownError("not started");
  try {
    app = qlayer::ServerApp::Start(options);
  } catch (const std::bad_alloc&) {
    // Model::Load names the layer; this catches the rest of the start-up.
    app = absl::ResourceExhaustedError(
        absl::StrCat("out of memory starting with --model ", options.model.dir));
  }
  sigaction(SIGBUS, &default_sigbus, nullptr);
  if (!app.ok()) {
    std::fprintf(stderr, "qlayer-server: %s\n", app.status().ToString().c_str());
    return 1;
  }
  std::string metrics = "off";
  if (!options.metrics_listen.empty()) {
    const size_t colon = options.metrics_listen.rfind(':');
    metrics = absl::StrCat(options.metrics_listen.substr(0, colon), ":", (*app)->metrics_port());
  }
  std::printf("qlayer-server listening on %s metrics %s\n", (*app)->address().c_str(),
              metrics.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  QLAYER_LOG(INFO) << "received " << (sig == SIGTERM ? "SIGTERM" : "SIGINT") << ", draining";
  (*app)->Drain(absl::Seconds(absl::GetFlag(FLAGS_grace_seconds)));
  QLAYER_LOG(INFO) << "exiting";
  // Every accepted request is answered and the gRPC server has stopped; what
  // remains is freeing memory, which the OS does at once. Destroying the
  // /metrics endpoint would instead block ~2 s (civetweb's mg_stop waits out
  // its 2 s listening-poll quantum), so exit here.
  std::fflush(nullptr);
  std::_Exit(0);
}

}  // namespace

// Abseil names flags with underscores; the documented spelling uses dashes
// (--metrics-listen). Both are accepted: dashes in a flag's name (not its
// value) become underscores before parsing.
void DashesToUnderscores(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* a = argv[i];
    if (a[0] != '-' || a[1] != '-' || a[2] == '\0') continue;
    for (char* c = a + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

int main(int argc, char** argv) {
  DashesToUnderscores(argc, argv);
  absl::SetProgramUsageMessage(
      "serves a checkpoint's quantized linear layers over gRPC.\n"
      "  qlayer-server --model DIR [--layers GLOB] [--listen 127.0.0.1:50051]\n"
      "                [--metrics-listen 127.0.0.1:9400] [--device auto|cpu|cuda:N]\n"
      "                [--kernel NAME] [--disabled-kernels a,b]\n"
      "                [--tls-cert F --tls-key F [--tls-client-ca F]] [--auth-token-file F]\n"
      "                [--metrics-auth-token-file F]\n"
      "Flags may be spelled with dashes or underscores (--metrics-listen = --metrics_listen).");
  absl::ParseCommandLine(argc, argv);
  return Run();
}
