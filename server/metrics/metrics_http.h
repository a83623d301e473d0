// The /metrics HTTP endpoint: civetweb (the library prometheus-cpp's
// Exposer wraps) driven through its C API, so that it can check
// "Authorization: Bearer <token>" (--metrics-auth-token-file) the way the
// gRPC port does; the Exposer offers HTTP basic auth only. Every GET/HEAD
// of /metrics is answered with the registry's text exposition (401 without
// an accepted token); any other path is civetweb's 404.
//
// No TLS here, on purpose: Debian 12's civetweb 1.15 is built against the
// OpenSSL 1.1 API and dlopens libssl; under OpenSSL 3 its lookup of
// SSL_get_peer_certificate (renamed SSL_get1_peer_certificate) comes back
// null, and the first HTTPS request crashes the process (a worker thread
// jumps to address 0; seen with gdb, both with certificates set up in an
// init_ssl callback and with civetweb's own ssl_certificate option in a
// standalone program). An HTTPS /metrics needs a TLS proxy in front (README
// "Security"); keep the port on loopback or the pod network.
#ifndef QLAYER_SERVER_METRICS_METRICS_HTTP_H_
#define QLAYER_SERVER_METRICS_METRICS_HTTP_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/security/bearer_tokens.h"

struct mg_context;
struct mg_connection;

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace qlayer {

class MetricsHttpServer {
 public:
  // Listens on `listen` ("127.0.0.1:9400"; port 0 = any free port); with
  // `tokens` (may be null: open), a scrape must carry one of them.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
      std::shared_ptr<const BearerTokens> tokens);
  ~MetricsHttpServer();  // stops civetweb (waits for its threads)

  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  static int HandleMetrics(mg_connection* conn, void* self);

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<const BearerTokens> tokens_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_METRICS_METRICS_HTTP_H_
