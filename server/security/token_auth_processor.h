// gRPC's AuthMetadataProcessor for bearer tokens: runs in the transport,
// before any handler (so every service, reflection included, is covered),
// and fails a call with UNAUTHENTICATED when its "authorization" metadata
// is missing or carries no accepted token. grpc.health.v1.Health is exempt:
// Kubernetes' gRPC probes and load balancers send no credentials. The
// accepted header is consumed (handlers never see the token).
//
// gRPC runs metadata processors only on secure (TLS) ports:
// InsecureServerCredentials aborts on SetAuthMetadataProcessor, which is one
// reason --auth-token-file requires TLS.
#ifndef QLAYER_SERVER_SECURITY_TOKEN_AUTH_PROCESSOR_H_
#define QLAYER_SERVER_SECURITY_TOKEN_AUTH_PROCESSOR_H_

#include <memory>

#include "grpcpp/security/auth_metadata_processor.h"
#include "server/security/bearer_tokens.h"

namespace qlayer {

class TokenAuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenAuthProcessor(std::shared_ptr<const BearerTokens> tokens)
      : tokens_(std::move(tokens)) {}

  // A hash and a compare: cheap enough for gRPC's own thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<const BearerTokens> tokens_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SECURITY_TOKEN_AUTH_PROCESSOR_H_
