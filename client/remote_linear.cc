#include "client/remote_linear.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qlayer {

struct RemoteLinear::Call {
  Tensor input;  // [M, K], kept for re-sends
  ForwardCallback done;
  absl::Time start;
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time retry_until = absl::InfiniteFuture();  // set at the first failure
  bool failed_once = false;
  int attempts = 0;
  absl::Status last_error;
};

absl::StatusOr<std::unique_ptr<RemoteLinear>> RemoteLinear::Create(
    Client* client, absl::string_view layer, const RemoteLinearOptions& options) {
  if (client == nullptr) return absl::InvalidArgumentError("RemoteLinear: client is null");
  absl::StatusOr<v1::LayerInfo> info = client->DescribeLayer(layer);
  if (!info.ok()) return info.status();
  if (info->kind() != "linear") {
    return absl::FailedPreconditionError(absl::StrCat("RemoteLinear: ", layer, " on ",
                                                      client->address(), " is a '", info->kind(),
                                                      "' layer, not a linear one"));
  }
  return std::unique_ptr<RemoteLinear>(new RemoteLinear(
      client, std::string(layer), info->in_features(), info->out_features(), options));
}

RemoteLinear::RemoteLinear(Client* client, std::string layer, int64_t in_features,
                           int64_t out_features, const RemoteLinearOptions& options)
    : client_(client),
      layer_(std::move(layer)),
      in_features_(in_features),
      out_features_(out_features),
      options_(options) {}

RemoteLinear::~RemoteLinear() {
  std::vector<std::shared_ptr<Call>> waiting;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    waiting.assign(waiting_.begin(), waiting_.end());
    waiting_.clear();
  }
  for (const auto& call : waiting) {
    Finish(call, absl::CancelledError(absl::StrCat("Forward ", layer_,
                                                   ": RemoteLinear destroyed before a re-send")));
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* inflight) { return *inflight == 0; }, &inflight_));
}

Shape RemoteLinear::OutputShape(const Shape& input_shape) const {
  Shape out = input_shape;
  if (out.empty()) {
    out.push_back(out_features_);
  } else {
    out.back() = out_features_;
  }
  return out;
}

std::future<absl::StatusOr<ForwardResult>> RemoteLinear::ForwardAsync(const ConstTensorView& x) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ForwardResult>>>();
  auto future = promise->get_future();
  ForwardAsync(x, [promise](absl::StatusOr<ForwardResult> r) { promise->set_value(std::move(r)); });
  return future;
}

void RemoteLinear::ForwardAsync(const ConstTensorView& x, ForwardCallback done) {
  const absl::Time start = absl::Now();
  if (x.dtype != DType::kF16 && x.dtype != DType::kBF16 && x.dtype != DType::kF32) {
    done(absl::InvalidArgumentError(absl::StrCat("Forward ", layer_, ": input dtype ",
                                                 DTypeName(x.dtype), " is not f16, bf16 or f32")));
    return;
  }
  if (x.shape.empty() || x.shape.back() != in_features_ || x.data == nullptr) {
    done(absl::InvalidArgumentError(absl::StrCat("Forward ", layer_, ": input has shape ",
                                                 ShapeToString(x.shape), ", expected [..., ",
                                                 in_features_, "]")));
    return;
  }
  const int64_t rows = x.numel() / in_features_;
  auto call = std::make_shared<Call>();
  call->input = Tensor::CopyOf(ConstTensorView{x.dtype, {rows, in_features_}, x.data});
  call->done = std::move(done);
  call->start = start;
  if (options_.timeout != absl::InfiniteDuration()) call->deadline = start + options_.timeout;
  {
    absl::MutexLock lock(&mu_);
    ++inflight_;
  }
  Attempt(call);
}

void RemoteLinear::Attempt(const std::shared_ptr<Call>& call) {
  ++call->attempts;
  CallOptions o;
  o.lane = options_.lane;
  // A re-send waits for the channel instead of failing fast; the retry
  // budget (or the call's own deadline) bounds the wait.
  o.wait_for_ready = call->attempts > 1;
  const absl::Time until = std::min(call->deadline, call->retry_until);
  if (until != absl::InfiniteFuture()) {
    o.timeout = std::max(until - absl::Now(), absl::Microseconds(1));
  }
  client_->Forward(layer_, call->input.view(), o,
                   [this, call](absl::StatusOr<ForwardResult> r) { OnAnswer(call, std::move(r)); });
}

absl::Duration RemoteLinear::Backoff(int attempts) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  absl::Duration d = options_.initial_backoff;
  for (int i = 1; i < attempts && d < options_.max_backoff; ++i) d *= 2;
  d = std::min(d, options_.max_backoff);
  return d * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
}

void RemoteLinear::OnAnswer(const std::shared_ptr<Call>& call, absl::StatusOr<ForwardResult> r) {
  const absl::Time now = absl::Now();
  if (r.ok()) {
    r->attempts = call->attempts;
    r->latency_us = absl::ToInt64Microseconds(now - call->start);
    Finish(call, std::move(r));
    return;
  }
  const absl::Status& s = r.status();
  const std::string sent =
      call->attempts > 1 ? absl::StrCat(" (sent ", call->attempts, " times)") : "";
  // A re-send that ran into the retry budget before the call's deadline.
  if (s.code() == absl::StatusCode::kDeadlineExceeded && call->failed_once &&
      now < call->deadline) {
    Finish(call, absl::UnavailableError(absl::StrCat(
                     "Forward ", layer_, ": no answer from ", client_->address(), " within ",
                     absl::FormatDuration(options_.retry_timeout), " of retrying", sent,
                     "; last error: ", call->last_error.message())));
    return;
  }
  if (s.code() != absl::StatusCode::kUnavailable ||
      options_.retry_timeout <= absl::ZeroDuration()) {
    Finish(call, sent.empty() ? s : absl::Status(s.code(), absl::StrCat(s.message(), sent)));
    return;
  }
  if (!call->failed_once) {
    call->failed_once = true;
    call->retry_until = now + options_.retry_timeout;
  }
  call->last_error = s;
  const absl::Time limit = std::min(call->deadline, call->retry_until);
  if (now >= limit) {
    Finish(call,
           absl::Status(call->deadline <= call->retry_until ? absl::StatusCode::kDeadlineExceeded
                                                            : absl::StatusCode::kUnavailable,
                        absl::StrCat(s.message(), sent, "; retried for ",
                                     absl::FormatDuration(now - call->start))));
    return;
  }
  {
    // Scheduling under mu_ keeps the destructor (which takes mu_ before
    // timer_ goes) from passing between the insert and the Schedule; the
    // timer runs callbacks without its own lock, so the order is safe.
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      waiting_.insert(call);
      timer_.Schedule(now + std::min(Backoff(call->attempts), limit - now), [this, call] {
        {
          absl::MutexLock lock(&mu_);
          if (waiting_.erase(call) == 0) return;  // the destructor finished it
        }
        Attempt(call);
      });
      return;
    }
  }
  Finish(call, absl::CancelledError(
                   absl::StrCat("Forward ", layer_, ": RemoteLinear destroyed before a re-send")));
}

void RemoteLinear::Finish(const std::shared_ptr<Call>& call, absl::StatusOr<ForwardResult> r) {
  ForwardCallback done = std::move(call->done);
  call->input = Tensor();
  done(std::move(r));
  absl::MutexLock lock(&mu_);
  --inflight_;
}

}  // namespace qlayer
