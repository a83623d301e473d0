#include "client/cli/health_command.h"

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

absl::Status RunHealth(const std::string& address, const ChannelSecurity& security,
                       absl::Duration timeout, std::ostream& out) {
  QLAYER_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                          CreateSecureChannel(address, grpc::ChannelArguments(), security));
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;  // "" = the whole server
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status s = stub->Check(&ctx, request, &response);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("health check of ", address, ": ", s.error_message()));
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat(address, " reports ", status));
  }
  out << status << "\n";
  return absl::OkStatus();
}

}  // namespace qlayer
