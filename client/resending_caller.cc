#include "client/resending_caller.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qlayer {

template <typename Result>
ResendingCaller<Result>::~ResendingCaller() {
  std::vector<std::shared_ptr<Call>> waiting;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    waiting.assign(waiting_.begin(), waiting_.end());
    waiting_.clear();
  }
  for (const auto& call : waiting) Finish(call, Destroyed());
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* inflight) { return *inflight == 0; }, &inflight_));
}

template <typename Result>
absl::Status ResendingCaller<Result>::Destroyed() const {
  return absl::CancelledError(absl::StrCat(what_, ": ", owner_, " destroyed before a re-send"));
}

template <typename Result>
void ResendingCaller<Result>::Start(absl::Time start, SendFn send, Callback done) {
  auto call = std::make_shared<Call>();
  call->send = std::move(send);
  call->done = std::move(done);
  call->start = start;
  if (options_.timeout != absl::InfiniteDuration()) call->deadline = start + options_.timeout;
  {
    absl::MutexLock lock(&mu_);
    ++inflight_;
  }
  Attempt(call);
}

template <typename Result>
void ResendingCaller<Result>::Attempt(const std::shared_ptr<Call>& call) {
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
  // A copy: an answer given inline (a call rejected before the wire)
  // finishes the call, which drops call->send while it runs.
  const SendFn send = call->send;
  send(o, [this, call](absl::StatusOr<Result> r) { OnAnswer(call, std::move(r)); });
}

template <typename Result>
absl::Duration ResendingCaller<Result>::Backoff(int attempts) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  absl::Duration d = options_.initial_backoff;
  for (int i = 1; i < attempts && d < options_.max_backoff; ++i) d *= 2;
  d = std::min(d, options_.max_backoff);
  return d * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
}

template <typename Result>
void ResendingCaller<Result>::OnAnswer(const std::shared_ptr<Call>& call,
                                       absl::StatusOr<Result> r) {
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
    Finish(call, absl::UnavailableError(
                     absl::StrCat(what_, ": no answer from ", client_->address(), " within ",
                                  absl::FormatDuration(options_.retry_timeout), " of retrying",
                                  sent, "; last error: ", call->last_error.message())));
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
  Finish(call, Destroyed());
}

template <typename Result>
void ResendingCaller<Result>::Finish(const std::shared_ptr<Call>& call, absl::StatusOr<Result> r) {
  Callback done = std::move(call->done);
  call->send = nullptr;  // frees the inputs kept for re-sends
  done(std::move(r));
  absl::MutexLock lock(&mu_);
  --inflight_;
}

template class ResendingCaller<ForwardResult>;
template class ResendingCaller<MoEResult>;

}  // namespace qlayer
