// A fixed set of compute threads shared by every layer's batch queue, so
// that kernels never run on gRPC's threads (which must stay free to read
// and write streams).
#ifndef QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_
#define QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace qlayer {

class WorkerPool {
 public:
  // num_threads <= 0: one per hardware thread.
  explicit WorkerPool(int num_threads);
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

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_WORKER_POOL_H_
