// How a client reaches a qlayer-server that runs with --tls-cert,
// --tls-client-ca and/or --auth-token-file: TLS with a root CA (or the
// system's roots), an optional client certificate for mutual TLS, and a
// bearer token sent as "authorization: Bearer <token>" on every call.
//
//   qlayer::ClientOptions options;
//   options.security = qlayer::ChannelSecurity::FromFiles(
//       {.tls_ca = "ca.pem", .auth_token_file = "token"}).value();
//   auto client = qlayer::Client::Connect("qlayer.example:50051", options);
//
// The token rides on gRPC call credentials, which gRPC sends only over TLS:
// a token without TLS is refused here rather than silently not sent.
#ifndef QLAYER_CLIENT_CHANNEL_SECURITY_H_
#define QLAYER_CLIENT_CHANNEL_SECURITY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/channel_arguments.h"

namespace qlayer {

// File names, as the qlayer-cli flags give them ("" = not given).
struct ChannelSecurityFiles {
  std::string tls_ca;           // PEM roots; given alone it turns TLS on
  std::string tls_cert;         // PEM client certificate chain (mutual TLS)
  std::string tls_key;          // its private key
  std::string auth_token_file;  // the first token line (blank / '#' lines skipped)
  std::string tls_server_name;  // name to verify instead of the address's host
  bool tls = false;             // TLS with the system's roots when tls_ca is ""
};

struct ChannelSecurity {
  bool tls = false;
  std::string root_certs_pem;   // "" = the system's roots (gRPC's default)
  std::string cert_chain_pem;   // client certificate, mutual TLS
  std::string private_key_pem;  // its key
  std::string server_name;      // overrides the name checked in the server's cert
  std::string bearer_token;     // "" = none

  // Reads the files; errors name the flag and the file, never a secret.
  static absl::StatusOr<ChannelSecurity> FromFiles(const ChannelSecurityFiles& files);
};

// A channel to `address` with `args` plus what `security` asks for.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateSecureChannel(const std::string& address,
                                                                   grpc::ChannelArguments args,
                                                                   const ChannelSecurity& security);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CHANNEL_SECURITY_H_
