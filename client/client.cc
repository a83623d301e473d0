#include "client/client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "client/wire_tensor.h"

namespace qlayer {

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.min_reconnect_backoff)));
  // Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC takes it as the minimum time
  // a connection attempt may take (default 20 s); at 100 ms a loaded machine
  // failed handshakes with "timed out before receiving SETTINGS frame".
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
              static_cast<int>(absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateSecureChannel(address, args, options.security);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<Client>(new Client(address, options, *std::move(channel)));
}

Client::Client(std::string address, const ClientOptions& options,
               std::shared_ptr<grpc::Channel> channel)
    : address_(std::move(address)),
      options_(options),
      channel_(std::move(channel)),
      stub_(v1::LayerService::NewStub(channel_)),
      streams_(stub_.get(), &timer_, options.wait_for_ready, address_, &streams_opened_),
      moe_streams_(stub_.get(), &timer_, options.wait_for_ready, address_) {}

Client::~Client() {
  streams_.Shutdown();
  moe_streams_.Shutdown();
}

absl::Status Client::WaitForReady(absl::Duration timeout) {
  const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
  while (true) {
    const grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
    if (state == GRPC_CHANNEL_READY) return absl::OkStatus();
    if (!channel_->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(absl::StrCat("server ", address_, " not reachable within ",
                                                 absl::FormatDuration(timeout)));
    }
  }
}

absl::StatusOr<v1::ListLayersResponse> Client::ListLayers(absl::string_view glob) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.unary_timeout));
  v1::ListLayersRequest request;
  request.set_glob(std::string(glob));
  v1::ListLayersResponse response;
  const grpc::Status s = stub_->ListLayers(&ctx, request, &response);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("ListLayers on ", address_, ": ", s.error_message()));
  }
  return response;
}

absl::StatusOr<v1::LayerInfo> Client::DescribeLayer(absl::string_view name) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.unary_timeout));
  v1::DescribeLayerRequest request;
  request.set_name(std::string(name));
  v1::LayerInfo response;
  const grpc::Status s = stub_->DescribeLayer(&ctx, request, &response);
  if (!s.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(s.error_code()),
        absl::StrCat("DescribeLayer ", name, " on ", address_, ": ", s.error_message()));
  }
  return response;
}

std::future<absl::StatusOr<ForwardResult>> Client::Forward(absl::string_view layer,
                                                           const ConstTensorView& x,
                                                           const CallOptions& options) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ForwardResult>>>();
  auto future = promise->get_future();
  Forward(layer, x, options,
          [promise](absl::StatusOr<ForwardResult> r) { promise->set_value(std::move(r)); });
  return future;
}

void Client::Forward(absl::string_view layer, const ConstTensorView& x, const CallOptions& options,
                     ForwardCallback done) {
  const absl::Time start = absl::Now();
  const absl::Time deadline = options.timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                          : start + options.timeout;
  v1::ForwardRequest request;
  request.set_request_id(next_request_id_.fetch_add(1));
  request.set_layer(std::string(layer));
  request.set_output_encoding(v1::ENCODING_DATA);
  // The server drops a request still queued after this (never computed);
  // the client enforces the same deadline for the answer itself.
  if (options.timeout != absl::InfiniteDuration()) {
    request.set_timeout_us(std::max<int64_t>(1, absl::ToInt64Microseconds(options.timeout)));
  }
  if (absl::Status s = ToWireTensor(x, request.mutable_input()); !s.ok()) {
    done(absl::InvalidArgumentError(absl::StrCat("Forward ", layer, ": ", s.message())));
    return;
  }
  streams_.Send(std::string(layer), options.lane, options.wait_for_ready, &request, start, deadline,
                std::move(done));
}

}  // namespace qlayer
