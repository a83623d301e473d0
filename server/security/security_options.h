// Transport security and authentication of qlayer-server, from its flags:
//   --tls-cert / --tls-key    TLS on the gRPC port
//   --tls-client-ca           mutual TLS: clients must present a certificate
//                             signed by this CA
//   --auth-token-file         "authorization: Bearer <token>" required on
//                             every RPC except grpc.health.v1 (probes); needs
//                             TLS (a token sent in plaintext is anyone's on
//                             the path, and gRPC clients refuse to send call
//                             credentials without TLS anyway)
//   --metrics-auth-token-file "Authorization: Bearer <token>" required on
//                             /metrics. A separate set: /metrics is plain
//                             HTTP (server/metrics/metrics_http.h says why),
//                             so its token must not open the gRPC port.
// All files are read once at startup (a restart picks up rotated ones).
#ifndef QLAYER_SERVER_SECURITY_SECURITY_OPTIONS_H_
#define QLAYER_SERVER_SECURITY_SECURITY_OPTIONS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/security/bearer_tokens.h"

namespace qlayer {

struct SecurityOptions {
  std::string tls_cert;         // PEM certificate chain, leaf first
  std::string tls_key;          // PEM private key of tls_cert
  std::string tls_client_ca;    // PEM CA bundle; non-empty = mutual TLS
  std::string auth_token_file;  // see BearerTokens
  std::string metrics_auth_token_file;

  bool tls() const { return !tls_cert.empty(); }
};

// What the files say, read and checked once.
struct LoadedSecurity {
  std::string cert_pem, key_pem, client_ca_pem;        // empty when not given
  std::shared_ptr<const BearerTokens> tokens;          // nullptr = no token auth
  std::shared_ptr<const BearerTokens> metrics_tokens;  // nullptr = open /metrics
  bool tls() const { return !cert_pem.empty(); }
  bool mutual_tls() const { return !client_ca_pem.empty(); }
};

// Checks the combination (key without cert, token without TLS, ...) and
// reads every file; errors name the flag and the file.
absl::StatusOr<LoadedSecurity> LoadSecurity(const SecurityOptions& options);

// Reads a whole (small) file; NOT_FOUND naming `flag` and `path`.
absl::StatusOr<std::string> ReadSecretFile(const std::string& flag, const std::string& path);

}  // namespace qlayer

#endif  // QLAYER_SERVER_SECURITY_SECURITY_OPTIONS_H_
