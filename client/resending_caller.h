// The re-sending that RemoteLinear and RemoteMoE add to qlayer::Client, in
// one place. Their forwards are pure, so a call whose stream ended unanswered
// (server killed, restarted or draining: UNAVAILABLE) may be sent again:
// after a jittered exponential backoff, on a stream that waits for the
// channel to reconnect, until answered, its timeout passes
// (DEADLINE_EXCEEDED), or retry_timeout has gone by since its first failure
// (UNAVAILABLE, with how many times it was sent and the last error). The
// server's verdicts (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED...) are
// final.
//
// The caller hands Start() a `send` function that issues one attempt with the
// CallOptions given (it keeps the inputs for re-sends, freed when the call
// finishes) and the call's `done`.
//
// Thread-safe. Destruction ends calls waiting for a re-send with CANCELLED
// and waits for calls in flight to finish, so whatever `send` uses must
// outlive the ResendingCaller (make it its owner's last member).
#ifndef QLAYER_CLIENT_RESENDING_CALLER_H_
#define QLAYER_CLIENT_RESENDING_CALLER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/deadline_timer.h"

namespace qlayer {

// Options of RemoteLinear and RemoteMoE (RemoteLinearOptions,
// RemoteMoEOptions).
struct RemoteCallOptions {
  // Per call, re-sends included.
  absl::Duration timeout = absl::InfiniteDuration();
  // The stream (of this layer or block) that carries the calls.
  int lane = 0;
  // How long a call that got no answer keeps being re-sent; zero: never.
  absl::Duration retry_timeout = absl::Seconds(30);
  // Between re-sends: doubled each time up to max_backoff, times a random
  // factor in [0.5, 1) so that the clients of a restarted server spread out.
  absl::Duration initial_backoff = absl::Milliseconds(50);
  absl::Duration max_backoff = absl::Seconds(1);
};

// Result: ForwardResult or MoEResult (both have `attempts` and `latency_us`).
template <typename Result>
class ResendingCaller {
 public:
  using Callback = std::function<void(absl::StatusOr<Result>)>;
  // Sends one attempt with `options`; `answer` runs exactly once.
  using SendFn = std::function<void(const CallOptions& options, Callback answer)>;

  // `what` names the calls in errors ("Forward model.layers.0.q_proj"),
  // `owner` the class that re-sends them ("RemoteLinear"). `client` gives the
  // address for errors only.
  ResendingCaller(const Client* client, std::string what, std::string owner,
                  const RemoteCallOptions& options)
      : client_(client), what_(std::move(what)), owner_(std::move(owner)), options_(options) {}
  ~ResendingCaller();
  ResendingCaller(const ResendingCaller&) = delete;
  ResendingCaller& operator=(const ResendingCaller&) = delete;

  // Starts a call timed from `start`. `done` runs exactly once; on success
  // the result's latency_us covers every attempt and `attempts` counts them.
  void Start(absl::Time start, SendFn send, Callback done);

 private:
  struct Call {
    SendFn send;  // holds the inputs, kept for re-sends
    Callback done;
    absl::Time start;
    absl::Time deadline = absl::InfiniteFuture();
    absl::Time retry_until = absl::InfiniteFuture();  // set at the first failure
    bool failed_once = false;
    int attempts = 0;
    absl::Status last_error;
  };

  void Attempt(const std::shared_ptr<Call>& call);
  void OnAnswer(const std::shared_ptr<Call>& call, absl::StatusOr<Result> r);
  void Finish(const std::shared_ptr<Call>& call, absl::StatusOr<Result> r);
  absl::Duration Backoff(int attempts) const;
  absl::Status Destroyed() const;

  const Client* const client_;
  const std::string what_;
  const std::string owner_;
  const RemoteCallOptions options_;

  absl::Mutex mu_;
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;                     // calls not yet finished
  std::set<std::shared_ptr<Call>> waiting_ ABSL_GUARDED_BY(mu_);  // backing off
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  // Last member: destroyed first, so its thread stops before mu_ goes.
  DeadlineTimer timer_;
};

// Defined (and instantiated) in resending_caller.cc.
extern template class ResendingCaller<ForwardResult>;
extern template class ResendingCaller<MoEResult>;

}  // namespace qlayer

#endif  // QLAYER_CLIENT_RESENDING_CALLER_H_
