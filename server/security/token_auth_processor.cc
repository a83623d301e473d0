#include "server/security/token_auth_processor.h"

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace qlayer {
namespace {

constexpr absl::string_view kHealthPrefix = "/grpc.health.v1.Health/";

absl::string_view View(const grpc::string_ref& s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

grpc::Status TokenAuthProcessor::Process(const InputMetadata& auth_metadata,
                                         grpc::AuthContext* /*context*/,
                                         OutputMetadata* consumed_auth_metadata,
                                         OutputMetadata* /*response_metadata*/) {
  // gRPC hands the request headers, ":path" (the method) included.
  const auto path = auth_metadata.find(":path");
  if (path != auth_metadata.end() && absl::StartsWith(View(path->second), kHealthPrefix)) {
    return grpc::Status::OK;
  }
  const auto auth = auth_metadata.find("authorization");
  if (auth == auth_metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "qlayer-server requires 'authorization: Bearer <token>' metadata");
  }
  if (!tokens_->Accepts(View(auth->second))) {
    // Says nothing about the token (not even its length).
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "bearer token not accepted");
  }
  consumed_auth_metadata->insert(
      std::make_pair(std::string("authorization"), std::string(View(auth->second))));
  return grpc::Status::OK;
}

}  // namespace qlayer
