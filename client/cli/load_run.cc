#include "client/cli/load_run.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace qlayer {
namespace {

struct LoadState {
  Client* client;
  const LoadSpec* spec;
  const Tensor* x;
  absl::Time window_start, window_end;

  absl::Mutex mu;
  LoadResult result ABSL_GUARDED_BY(mu);
  int in_flight ABSL_GUARDED_BY(mu) = 0;
};

void Issue(const std::shared_ptr<LoadState>& state, int lane);

void OnAnswer(const std::shared_ptr<LoadState>& state, int lane, absl::StatusOr<ForwardResult> r) {
  const absl::Time now = absl::Now();
  bool again = false;
  {
    absl::MutexLock lock(&state->mu);
    LoadResult& out = state->result;
    if (!r.ok()) {
      ++out.errors[absl::StatusCodeToString(r.status().code())];
      if (out.first_error.empty()) out.first_error = r.status().ToString();
    } else {
      if (now >= state->window_start && now <= state->window_end) {
        out.samples.push_back(
            {r->latency_us, r->total_us, r->compute_us, r->queue_us, r->batch_rows});
        ++out.kernels[r->kernel];
      }
      again = now < state->window_end;
    }
    if (!again) --state->in_flight;
  }
  if (again) Issue(state, lane);
}

void Issue(const std::shared_ptr<LoadState>& state, int lane) {
  CallOptions options;
  options.lane = lane;
  options.timeout = state->spec->call_timeout;
  state->client->Forward(
      state->spec->layer, state->x->view(), options,
      [state, lane](absl::StatusOr<ForwardResult> r) { OnAnswer(state, lane, std::move(r)); });
}

}  // namespace

int64_t Percentile(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

absl::StatusOr<LoadResult> RunLoad(Client& client, const LoadSpec& spec, const Tensor& x) {
  if (spec.streams < 1 || spec.depth < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("streams (", spec.streams, ") and depth (", spec.depth, ") must be >= 1"));
  }
  auto state = std::make_shared<LoadState>();
  state->client = &client;
  state->spec = &spec;
  state->x = &x;
  state->window_start = absl::Now() + spec.warmup;
  state->window_end = state->window_start + spec.window;
  {
    absl::MutexLock lock(&state->mu);
    state->in_flight = spec.streams * spec.depth;
  }
  for (int lane = 0; lane < spec.streams; ++lane) {
    for (int d = 0; d < spec.depth; ++d) Issue(state, lane);
  }
  absl::MutexLock lock(&state->mu);
  auto idle = [&state]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) { return state->in_flight == 0; };
  // Calls end by their own deadline at the latest.
  state->mu.Await(absl::Condition(&idle));
  LoadResult result = std::move(state->result);
  result.window_seconds = absl::ToDoubleSeconds(spec.window);
  if (result.samples.empty()) {
    return absl::UnavailableError(absl::StrCat(
        "no answer from ", client.address(), " for layer ", spec.layer, " within the window",
        result.first_error.empty() ? "" : absl::StrCat(": ", result.first_error)));
  }
  return result;
}

}  // namespace qlayer
