// The gRPC port's server credentials from the loaded security settings.
#ifndef QLAYER_SERVER_SECURITY_GRPC_CREDENTIALS_H_
#define QLAYER_SERVER_SECURITY_GRPC_CREDENTIALS_H_

#include <memory>

#include "grpcpp/security/server_credentials.h"
#include "server/security/security_options.h"

namespace qlayer {

// Insecure, TLS, or mutual TLS (client certificates requested, required and
// verified against the client CA), with the bearer-token check
// (TokenAuthProcessor) installed when tokens are given.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const LoadedSecurity& security);

}  // namespace qlayer

#endif  // QLAYER_SERVER_SECURITY_GRPC_CREDENTIALS_H_
