#include "server/service/moe_forward_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/wire/status_codec.h"

namespace qlayer {

MoEForwardReactor::MoEForwardReactor(const ServedModel* served)
    : PipelinedReactor(&served->streams(), served->options().max_inflight_per_stream),
      served_(served) {
  Start();
}

void MoEForwardReactor::HandleRequest(std::unique_ptr<v1::MoEForwardRequest> request) {
  const absl::Time arrival = absl::Now();
  const ServedLayer* served = served_->Find(request->layer());
  absl::Status status;
  RequestMetrics* metrics;
  if (served == nullptr) {
    // UNIMPLEMENTED before NOT_FOUND: no name could succeed until MoE lands.
    status = absl::UnimplementedError(
        absl::StrCat("MoEForward is not served yet (MoE blocks are not loaded); layer '",
                     request->layer(), "' is not hosted either"));
    metrics = &served_->metrics().unknown_layer_moe_forward();
  } else {
    status = absl::UnimplementedError(absl::StrCat(
        "layer '", request->layer(), "' is a ", served->layer->kind(),
        " layer; MoEForward serves MoE blocks, which this server does not load yet (use "
        "Forward)"));
    metrics = &served->metrics->moe_forward();
  }
  v1::MoEForwardResponse response;
  response.set_request_id(request->request_id());
  ToRpcStatus(status, response.mutable_error());
  const absl::Duration total = absl::Now() - arrival;
  response.mutable_timing()->set_total_us(absl::ToInt64Microseconds(total));
  metrics->Record(status.code(), absl::ToDoubleSeconds(total));
  Answer(std::move(response));
}

}  // namespace qlayer
