#include "server/service/stream_registry.h"

#include <vector>

namespace qlayer {

void StreamRegistry::Add(DrainableStream* s) {
  bool drain_now;
  {
    absl::MutexLock lock(&mu_);
    streams_.insert(s);
    drain_now = draining_;
  }
  if (drain_now) s->Drain();
}

void StreamRegistry::Remove(DrainableStream* s) {
  absl::MutexLock lock(&mu_);
  streams_.erase(s);
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
