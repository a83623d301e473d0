// The live streams of the server, so that draining (SIGTERM) can tell each
// to finish once its accepted requests are answered.
#ifndef QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_
#define QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_

#include <cstddef>
#include <functional>
#include <set>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qlayer {

// A ref-counted stream reactor that can be asked to wind down.
class DrainableStream {
 public:
  virtual void Ref() = 0;
  virtual void Unref() = 0;
  // Stop taking requests; finish the stream once accepted ones are answered.
  virtual void Drain() = 0;

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
  bool draining() const;
  size_t size() const;

 private:
  std::function<void(size_t)> on_change_;
  mutable absl::Mutex mu_;
  std::set<DrainableStream*> streams_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_STREAM_REGISTRY_H_
