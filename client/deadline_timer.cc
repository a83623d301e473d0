#include "client/deadline_timer.h"

#include <utility>

namespace qlayer {

DeadlineTimer::DeadlineTimer() : thread_([this] { Loop(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void DeadlineTimer::Schedule(absl::Time when, std::function<void()> fn) {
  absl::MutexLock lock(&mu_);
  queue_.emplace(when, std::move(fn));
}

void DeadlineTimer::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    if (queue_.empty()) {
      // Schedule() and the destructor change what we wait for.
      auto changed = [this]()
                         ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&changed));
      continue;
    }
    const absl::Time first = queue_.begin()->first;
    if (absl::Now() < first) {
      // Wake early if an earlier deadline arrives or we are stopped.
      auto changed = [this, first]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || queue_.begin()->first < first;
      };
      mu_.AwaitWithDeadline(absl::Condition(&changed), first);
      continue;
    }
    std::function<void()> fn = std::move(queue_.begin()->second);
    queue_.erase(queue_.begin());
    mu_.Unlock();
    fn();
    mu_.Lock();
  }
}

}  // namespace qlayer
