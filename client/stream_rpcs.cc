#include "client/stream_rpcs.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/wire_tensor.h"
#include "google/rpc/error_details.pb.h"

namespace qlayer {

bool SaysServerDraining(const google::rpc::Status& error) {
  if (error.code() != static_cast<int>(absl::StatusCode::kUnavailable)) return false;
  for (const google::protobuf::Any& detail : error.details()) {
    google::rpc::ErrorInfo info;
    if (detail.UnpackTo(&info) && info.reason() == "SERVER_DRAINING" &&
        info.domain() == "qlayer.v1") {
      return true;
    }
  }
  return absl::StartsWith(error.message(), "qlayer-server is draining");
}

absl::StatusOr<ForwardResult> ForwardRpc::Decode(v1::ForwardResponse& r, absl::Time sent) {
  const int64_t latency_us = absl::ToInt64Microseconds(absl::Now() - sent);
  if (r.has_error() && r.error().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(r.error().code()), r.error().message());
  }
  auto output = FromWireTensor(r.output());
  if (!output.ok()) {
    return absl::InternalError(
        absl::StrCat("answer to request ", r.request_id(),
                     " has a malformed output: ", output.status().message()));
  }
  ForwardResult result;
  result.request_id = r.request_id();
  result.output = *std::move(output);
  result.kernel = std::move(*r.mutable_kernel());
  result.queue_us = r.timing().queue_us();
  result.compute_us = r.timing().compute_us();
  result.total_us = r.timing().total_us();
  result.batch_rows = r.batch_rows();
  result.latency_us = latency_us;
  return result;
}

absl::StatusOr<MoEResult> MoEForwardRpc::Decode(v1::MoEForwardResponse& a, absl::Time sent) {
  if (a.has_error() && a.error().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(a.error().code()), a.error().message());
  }
  MoEResult r;
  r.request_id = a.request_id();
  r.latency_us = absl::ToInt64Microseconds(absl::Now() - sent);
  r.queue_us = a.timing().queue_us();
  r.compute_us = a.timing().compute_us();
  r.total_us = a.timing().total_us();
  r.batch_rows = a.batch_rows();
  r.kernels.assign(a.kernels().begin(), a.kernels().end());
  absl::StatusOr<Tensor> y = FromWireTensor(a.output());
  if (!y.ok()) {
    return absl::InternalError(absl::StrCat("answer to MoE request ", a.request_id(),
                                            " has a malformed output: ", y.status().message()));
  }
  r.output = *std::move(y);
  if (a.has_topk_ids()) {
    absl::StatusOr<Tensor> ids = FromWireTensor(a.topk_ids());
    absl::StatusOr<Tensor> w = FromWireTensor(a.topk_weights());
    if (!ids.ok() || !w.ok()) {
      return absl::InternalError(absl::StrCat(
          "answer to MoE request ", a.request_id(),
          " has a malformed routing: ", (ids.ok() ? w.status() : ids.status()).message()));
    }
    r.topk_ids = *std::move(ids);
    r.topk_weights = *std::move(w);
  }
  return r;
}

}  // namespace qlayer
