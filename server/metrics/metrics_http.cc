#include "server/metrics/metrics_http.h"

#include <civetweb.h>

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/common/log.h"

namespace qlayer {
namespace {

void Respond(mg_connection* conn, int code, absl::string_view reason, absl::string_view extra,
             absl::string_view content_type, absl::string_view body) {
  const std::string head =
      absl::StrCat("HTTP/1.1 ", code, " ", reason, "\r\n", extra, "Content-Type: ", content_type,
                   "\r\nContent-Length: ", body.size(), "\r\nCache-Control: no-store\r\n\r\n");
  mg_write(conn, head.data(), head.size());
  if (!body.empty()) mg_write(conn, body.data(), body.size());
}

}  // namespace

int MetricsHttpServer::HandleMetrics(mg_connection* conn, void* self) {
  auto* server = static_cast<MetricsHttpServer*>(self);
  const mg_request_info* request = mg_get_request_info(conn);
  const bool head = std::strcmp(request->request_method, "HEAD") == 0;
  if (!head && std::strcmp(request->request_method, "GET") != 0) {
    Respond(conn, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "text/plain",
            "GET /metrics\n");
    return 405;
  }
  if (server->tokens_ != nullptr) {
    const char* auth = mg_get_header(conn, "Authorization");
    if (auth == nullptr || !server->tokens_->Accepts(auth)) {
      Respond(conn, 401, "Unauthorized", "WWW-Authenticate: Bearer realm=\"qlayer\"\r\n",
              "text/plain", "qlayer /metrics requires 'Authorization: Bearer <token>'\n");
      return 401;
    }
  }
  const std::string body = prometheus::TextSerializer().Serialize(server->registry_->Collect());
  Respond(conn, 200, "OK", "", "text/plain; version=0.0.4; charset=utf-8", head ? "" : body);
  return 200;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
    std::shared_ptr<const BearerTokens> tokens) {
  auto server = std::unique_ptr<MetricsHttpServer>(new MetricsHttpServer);
  server->registry_ = std::move(registry);
  server->tokens_ = std::move(tokens);
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2",
                           // A scrape is small: a client that stalls is cut off.
                           "request_timeout_ms", "10000", nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  char error_text[256] = {0};
  mg_error_data error{};
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = options;
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("--metrics-listen ", listen, ": cannot serve /metrics: ", error_text));
  }
  mg_set_request_handler(server->ctx_, "/metrics", &MetricsHttpServer::HandleMetrics, server.get());
  std::vector<mg_server_port> bound(4);
  const int n = mg_get_server_ports(server->ctx_, static_cast<int>(bound.size()), bound.data());
  server->port_ = n > 0 ? bound[0].port : 0;
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

}  // namespace qlayer
