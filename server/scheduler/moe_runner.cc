#include "server/scheduler/moe_runner.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qlayer {
namespace {

absl::StatusOr<Routing> RouteItem(const MoERouter& router, const BatchItem& item) {
  const int64_t m = item.input.dim(0);
  if (item.moe == nullptr) return router.Route(item.input);
  switch (item.moe->mode) {
    case MoERouteInput::Mode::kGate:
      return router.Route(item.input);
    case MoERouteInput::Mode::kLogits:
      return router.RouteLogits(item.moe->logits, m);
    case MoERouteInput::Mode::kTopk:
      return item.moe->topk;
  }
  return absl::InternalError("unknown routing mode");
}

}  // namespace

void MoERunner::Run(const ConstTensorView& x, const std::vector<BatchItem>& items,
                    const TensorView& y, ExecContext& ctx, BatchRun& run) const {
  const int64_t T = x.dim(0), E = moe_.num_experts();
  const int k = moe_.top_k();
  Routing all;
  all.num_tokens = T;
  all.top_k = k;
  all.ids.resize(static_cast<size_t>(T * k));
  all.weights.resize(static_cast<size_t>(T * k));
  run.item_status.assign(items.size(), absl::OkStatus());
  run.routing.resize(items.size());
  run.tokens_per_expert.assign(static_cast<size_t>(E), 0);
  int64_t row = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& item = items[i];
    const int64_t m = item.input.dim(0);
    absl::StatusOr<Routing> r = RouteItem(moe_.router(), item);
    if (r.ok() && (r->num_tokens != m || r->top_k != k)) {
      r = absl::InternalError(absl::StrCat("routing of ", r->num_tokens, " x ", r->top_k, " for ",
                                           m, " rows with top-", k));
    }
    int32_t* ids = all.ids.data() + row * k;
    float* weights = all.weights.data() + row * k;
    if (r.ok()) {
      std::copy(r->ids.begin(), r->ids.end(), ids);
      std::copy(r->weights.begin(), r->weights.end(), weights);
      for (int32_t id : r->ids) ++run.tokens_per_expert[static_cast<size_t>(id)];
      if (item.moe != nullptr && item.moe->return_routing) run.routing[i] = *std::move(r);
    } else {
      // Its rows still ride this kernel call (zero weight) and are dropped.
      run.item_status[i] = absl::Status(
          r.status().code(), absl::StrCat("MoE block ", moe_.name(), ": ", r.status().message()));
      for (int j = 0; j < m * k; ++j) {
        ids[j] = j % k;
        weights[j] = 0.0f;
      }
    }
    row += m;
  }
  run.kernel = moe_.kernel().name();
  MoEForwardInfo info;
  const absl::Status status = moe_.kernel().Forward(x, all, y, ctx, &info);
  if (!status.ok()) {
    run.status = absl::Status(status.code(), absl::StrCat("MoE block ", moe_.name(), ": kernel ",
                                                          run.kernel, ": ", status.message()));
    run.tokens_per_expert.clear();
    return;
  }
  run.kernels.emplace_back(run.kernel);
  for (std::string& l : info.linear_kernels) run.kernels.push_back(std::move(l));
}

}  // namespace qlayer
