#include "server/security/grpc_credentials.h"

#include "server/security/token_auth_processor.h"

namespace qlayer {

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(const LoadedSecurity& security) {
  if (!security.tls()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl(
      security.mutual_tls() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({security.key_pem, security.cert_pem});
  ssl.pem_root_certs = security.client_ca_pem;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(ssl);
  if (security.tokens != nullptr) {
    creds->SetAuthMetadataProcessor(std::make_shared<TokenAuthProcessor>(security.tokens));
  }
  return creds;
}

}  // namespace qlayer
