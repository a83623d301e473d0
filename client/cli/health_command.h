// qlayer-cli health: the standard gRPC health check (grpc.health.v1 Check)
// of the whole server. It needs no bearer token (qlayer-server exempts the
// health service), so it is the probe to use where the server runs with
// TLS: Kubernetes' built-in gRPC probe cannot speak TLS.
#ifndef QLAYER_CLIENT_CLI_HEALTH_COMMAND_H_
#define QLAYER_CLIENT_CLI_HEALTH_COMMAND_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/channel_security.h"

namespace qlayer {

// OK and prints "SERVING" when the server says so; UNAVAILABLE naming the
// status it reported (NOT_SERVING while loading or draining) otherwise.
absl::Status RunHealth(const std::string& address, const ChannelSecurity& security,
                       absl::Duration timeout, std::ostream& out);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_HEALTH_COMMAND_H_
