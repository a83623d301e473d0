// The live streams of the server, so that draining (SIGTERM) can tell each
// to stop accepting requests, and finish those whose clients never
// half-close once they owe nothing.
#ifndef QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_
#define QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_

#include <cstddef>
#include <functional>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace qlayer {

// A ref-counted stream reactor that can be asked to wind down.
class DrainableStream {
 public:
  virtual void Ref() = 0;
  virtual void Unref() = 0;
  // Stop taking requests: answer each one read from now on with an error,
  // and finish once the client half-closes and everything is answered.
  virtual void Drain() = 0;
  // A drained stream that owes no answer and has read no request since
  // `read_before` finishes (its client may never half-close).
  virtual void FinishIfIdle(absl::Time read_before) = 0;

 protected:
  virtual ~DrainableStream() = default;
};

class StreamRegistry {
 public:
  // Told the number of open streams after each change (metrics); optional,
  // set before the server starts.
  void set_on_change(std::function<void(size_t)> f) { on_change_ = std::move(f); }
  void Add(DrainableStream* s);
  void Remove(DrainableStream* s);
  // Drains every registered stream (and, through `draining()`, every stream
  // that registers later).
  void DrainAll();
  // FinishIfIdle(read_before) on every registered stream.
  void FinishIdle(absl::Time read_before);
  // Waits until no stream is registered or `until`; true when none is.
  bool AwaitEmpty(absl::Time until) const;
  bool draining() const;
  size_t size() const;

 private:
  // Calls `f` on every registered stream, outside the lock (holding a ref);
  // `start_draining` first marks the registry draining, under the lock.
  void ForEach(const std::function<void(DrainableStream*)>& f, bool start_draining);

  std::function<void(size_t)> on_change_;
  mutable absl::Mutex mu_;
  std::set<DrainableStream*> streams_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_
