// A fixed set of compute threads shared by every layer's batch queue, so
// that kernels never run on gRPC's threads (which must stay free to read
// and write streams).
#ifndef QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_
#define QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_

#include <atomic>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qlayer {

class WorkerPool {
 public:
  // num_threads <= 0: one per hardware thread. An idle worker polls for the
  // next task for `spin_us` before it sleeps on the mutex: waking a sleeping
  // thread costs tens of microseconds on a VM, about a fifth of a small
  // layer's whole round trip, and the next request of a closed-loop caller
  // arrives within about one round trip of the last answer. The poll yields
  // the CPU between checks, so gRPC's threads still run on a busy machine.
  explicit WorkerPool(int num_threads, int spin_us = 0);
  ~WorkerPool();  // Shutdown()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int size() const { return static_cast<int>(threads_.size()); }
  // Runs `task` on a worker. Tasks posted during Shutdown (by running tasks)
  // still run: draining finishes everything already accepted.
  void Post(std::function<void()> task);
  // Runs every queued task (and those they post), then joins. Idempotent.
  void Shutdown();

 private:
  void Loop();

  const int spin_us_;
  absl::Mutex mu_;
  // tasks_.size(), readable without the lock by spinning workers.
  std::atomic<int> queued_{0};
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_
