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
  ForEach([](DrainableStream* s) { s->Drain(); }, /*start_draining=*/true);
}

void StreamRegistry::FinishIdle(absl::Time read_before) {
  ForEach([read_before](DrainableStream* s) { s->FinishIfIdle(read_before); },
          /*start_draining=*/false);
}

void StreamRegistry::ForEach(const std::function<void(DrainableStream*)>& f, bool start_draining) {
  std::vector<DrainableStream*> streams;
  {
    absl::MutexLock lock(&mu_);
    if (start_draining) draining_ = true;
    // A ref keeps each stream alive after the lock is released: `f` may
    // lead to Finish() and OnDone(), which calls Remove().
    for (DrainableStream* s : streams_) {
      s->Ref();
      streams.push_back(s);
    }
  }
  for (DrainableStream* s : streams) {
    f(s);
    s->Unref();
  }
}

bool StreamRegistry::AwaitEmpty(absl::Time until) const {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&empty), until);
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
