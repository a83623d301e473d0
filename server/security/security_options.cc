#include "server/security/security_options.h"

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// A PEM file must at least look like one: a wrong path (a directory, the
// key given as the cert) fails here with the flag's name rather than deep
// inside the TLS handshake of the first client.
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path,
                                    absl::string_view expect) {
  QLAYER_ASSIGN_OR_RETURN(std::string pem, ReadSecretFile(flag, path));
  if (!absl::StrContains(pem, "-----BEGIN ") || !absl::StrContains(pem, expect)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": not a PEM file holding ", expect));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(flag, " ", path, ": read error"));
  return ss.str();
}

absl::StatusOr<LoadedSecurity> LoadSecurity(const SecurityOptions& options) {
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together: give both or neither");
  }
  if (!options.tls_client_ca.empty() && !options.tls()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca (mutual TLS) needs the server's own --tls-cert and --tls-key");
  }
  if (!options.auth_token_file.empty() && !options.tls()) {
    return absl::InvalidArgumentError(
        "--auth-token-file needs TLS (--tls-cert, --tls-key): a bearer token sent in plaintext "
        "can be read and replayed by anyone on the path");
  }
  LoadedSecurity loaded;
  if (options.tls()) {
    QLAYER_ASSIGN_OR_RETURN(loaded.cert_pem,
                            ReadPem("--tls-cert", options.tls_cert, "CERTIFICATE-----"));
    QLAYER_ASSIGN_OR_RETURN(loaded.key_pem,
                            ReadPem("--tls-key", options.tls_key, "PRIVATE KEY-----"));
  }
  if (!options.tls_client_ca.empty()) {
    QLAYER_ASSIGN_OR_RETURN(loaded.client_ca_pem,
                            ReadPem("--tls-client-ca", options.tls_client_ca, "CERTIFICATE-----"));
  }
  if (!options.auth_token_file.empty()) {
    QLAYER_ASSIGN_OR_RETURN(BearerTokens tokens,
                            BearerTokens::FromFile("--auth-token-file", options.auth_token_file));
    loaded.tokens = std::make_shared<const BearerTokens>(std::move(tokens));
  }
  if (!options.metrics_auth_token_file.empty()) {
    if (options.metrics_auth_token_file == options.auth_token_file) {
      return absl::InvalidArgumentError(
          "--metrics-auth-token-file is --auth-token-file: /metrics is plain HTTP, so its token "
          "travels unencrypted and must not also open the gRPC port; use a separate token");
    }
    QLAYER_ASSIGN_OR_RETURN(
        BearerTokens tokens,
        BearerTokens::FromFile("--metrics-auth-token-file", options.metrics_auth_token_file));
    loaded.metrics_tokens = std::make_shared<const BearerTokens>(std::move(tokens));
  }
  return loaded;
}

}  // namespace qlayer
