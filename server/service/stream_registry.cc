#include "server/service/stream_registry.h"

#include <vector>

namespace qlayer {

void StreamRegistry::Add(DrainableStream* s) {
  bool drain_now;
  {
    // on_change_ runs under the lock so that concurrent changes report
    // their sizes in order (it only sets a gauge).
    absl::MutexLock lock(&mu_);
    streams_.insert(s);
    drain_now = draining_;
    if (on_change_) on_change_(streams_.size());
  }
  if (drain_now) s->Drain();
}

void StreamRegistry::Remove(DrainableStream* s) {
  absl::MutexLock lock(&mu_);
  streams_.erase(s);
  if (on_change_) on_change_(streams_.size());
}

void StreamRegistry::DrainAll() {
  std::vector<DrainableStream*> streams;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    // A ref keeps each stream alive after the lock is released: Drain() may
    // lead to Finish() and OnDone(), which calls Remove().
    for (DrainableStream* s : streams_) {
      s->Ref();
      streams.push_back(s);
    }
  }
  for (DrainableStream* s : streams) {
    s->Drain();
    s->Unref();
  }
}

bool StreamRegistry::draining() const {
  absl::MutexLock lock(&mu_);
  return draining_;
}

size_t StreamRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

}  // namespace qlayer
