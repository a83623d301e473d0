#include "client/moe_stream.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"
#include "client/wire_tensor.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

absl::StatusOr<std::unique_ptr<MoEStream>> MoEStream::Open(const std::string& address,
                                                           absl::Duration connect_timeout,
                                                           absl::Duration stream_timeout,
                                                           const ChannelSecurity& security) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  auto s = std::unique_ptr<MoEStream>(new MoEStream);
  QLAYER_ASSIGN_OR_RETURN(s->channel_, CreateSecureChannel(address, args, security));
  if (!s->channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + connect_timeout))) {
    return absl::UnavailableError(absl::StrCat("server ", address, " not reachable within ",
                                               absl::FormatDuration(connect_timeout)));
  }
  s->stub_ = v1::LayerService::NewStub(s->channel_);
  if (stream_timeout != absl::InfiniteDuration()) {
    s->context_.set_deadline(absl::ToChronoTime(absl::Now() + stream_timeout));
  }
  s->stream_ = s->stub_->MoEForward(&s->context_);
  if (s->stream_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot open MoEForward on ", address));
  }
  return s;
}

MoEStream::~MoEStream() {
  if (stream_ != nullptr && !closed_) {
    context_.TryCancel();
    (void)stream_->Finish();
  }
}

absl::StatusOr<uint64_t> MoEStream::Send(absl::string_view layer,
                                         const ConstTensorView& hidden_states,
                                         const MoERoutingInput& routing) {
  if (closed_) return absl::FailedPreconditionError("MoEStream: Send after Close");
  v1::MoEForwardRequest r;
  const uint64_t id = next_id_++;
  r.set_request_id(id);
  r.set_layer(std::string(layer));
  QLAYER_RETURN_IF_ERROR(ToWireTensor(hidden_states, r.mutable_hidden_states()));
  if (!routing.router_logits.empty()) {
    QLAYER_RETURN_IF_ERROR(ToWireTensor(routing.router_logits, r.mutable_router_logits()));
  }
  if (!routing.topk_ids.empty()) {
    QLAYER_RETURN_IF_ERROR(ToWireTensor(routing.topk_ids, r.mutable_topk_ids()));
  }
  if (!routing.topk_weights.empty()) {
    QLAYER_RETURN_IF_ERROR(ToWireTensor(routing.topk_weights, r.mutable_topk_weights()));
  }
  r.set_return_routing(routing.return_routing);
  const absl::Time start = absl::Now();
  if (!stream_->Write(r)) {
    // The stream is over; its status says why.
    closed_ = true;
    stream_->WritesDone();
    absl::Status s = FromGrpcStatus(stream_->Finish());
    return s.ok() ? absl::UnavailableError("MoEForward stream ended") : s;
  }
  sent_.emplace_back(id, start);
  return id;
}

absl::StatusOr<MoEResult> MoEStream::Read() {
  v1::MoEForwardResponse a;
  if (closed_ || !stream_->Read(&a)) {
    if (!closed_) {
      closed_ = true;
      absl::Status s = FromGrpcStatus(stream_->Finish());
      if (!s.ok()) return s;
    }
    return absl::OutOfRangeError("MoEForward stream ended: no more answers");
  }
  MoEResult r;
  r.request_id = a.request_id();
  auto it = std::find_if(sent_.begin(), sent_.end(),
                         [&](const auto& p) { return p.first == a.request_id(); });
  if (it != sent_.end()) {
    r.latency_us = absl::ToInt64Microseconds(absl::Now() - it->second);
    sent_.erase(it);
  }
  r.queue_us = a.timing().queue_us();
  r.compute_us = a.timing().compute_us();
  r.total_us = a.timing().total_us();
  r.batch_rows = a.batch_rows();
  if (a.error().code() != 0) {
    r.status = absl::Status(static_cast<absl::StatusCode>(a.error().code()), a.error().message());
    return r;
  }
  r.kernels.assign(a.kernels().begin(), a.kernels().end());
  absl::StatusOr<Tensor> y = FromWireTensor(a.output());
  if (!y.ok()) {
    r.status = absl::DataLossError(
        absl::StrCat("answer ", a.request_id(), ": bad output tensor: ", y.status().message()));
    return r;
  }
  r.output = *std::move(y);
  if (a.has_topk_ids()) {
    absl::StatusOr<Tensor> ids = FromWireTensor(a.topk_ids());
    absl::StatusOr<Tensor> w = FromWireTensor(a.topk_weights());
    if (!ids.ok() || !w.ok()) {
      r.status = absl::DataLossError(
          absl::StrCat("answer ", a.request_id(),
                       ": bad routing: ", (ids.ok() ? w.status() : ids.status()).message()));
      return r;
    }
    r.topk_ids = *std::move(ids);
    r.topk_weights = *std::move(w);
  }
  return r;
}

absl::Status MoEStream::Close() {
  if (closed_) return absl::OkStatus();
  stream_->WritesDone();
  v1::MoEForwardResponse drop;
  while (stream_->Read(&drop)) {
  }
  closed_ = true;
  return FromGrpcStatus(stream_->Finish());
}

}  // namespace qlayer
