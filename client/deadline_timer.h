// One thread that runs callbacks at given times: the per-call deadlines of
// qlayer::Client. A Forward call's deadline is the client's business (the
// wire contract has no per-request deadline, and a stream lives far longer
// than any call on it), so expiry is enforced here: the call ends with
// DEADLINE_EXCEEDED and a late answer for its id is dropped.
#ifndef QLAYER_CLIENT_DEADLINE_TIMER_H_
#define QLAYER_CLIENT_DEADLINE_TIMER_H_

#include <functional>
#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace qlayer {

class DeadlineTimer {
 public:
  DeadlineTimer();
  // Stops the thread; callbacks not yet due are dropped without running.
  ~DeadlineTimer();
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  // Runs `fn` on the timer thread at or soon after `when`. `fn` must be quick
  // and must not call Schedule's owner in a way that waits on the timer.
  void Schedule(absl::Time when, std::function<void()> fn);

 private:
  void Loop();

  absl::Mutex mu_;
  std::multimap<absl::Time, std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_DEADLINE_TIMER_H_
