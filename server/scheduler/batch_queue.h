// Per-layer batching (linear layers and MoE blocks alike): requests that are waiting when a batch
// starts (from any number of streams) are concatenated along M, up to max_batch_rows, and run as
// one kernel call on the worker pool; the output is split back by rows. The weights are read once
// for all of them, which is what makes decode-size requests cheap under load.
//
// No artificial wait: a request that finds the layer idle runs at once; while
// a batch computes, arrivals accumulate and form the next batch. At most
// max_inflight_batches batches of one layer compute at a time (1: kernels
// parallelise internally, and one wide batch beats two narrow ones).
//
// Bounded: a full queue rejects with RESOURCE_EXHAUSTED instead of growing.
// Expired (deadline) and cancelled requests are answered when their batch is
// formed, never computed.
#ifndef QLAYER_SERVER_SCHEDULER_BATCH_QUEUE_H_
#define QLAYER_SERVER_SCHEDULER_BATCH_QUEUE_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "qlayer/kernels/tensor.h"
#include "server/model/loaded_linear.h"
#include "server/scheduler/batch_observer.h"
#include "server/scheduler/batch_runner.h"
#include "server/scheduler/worker_pool.h"

namespace qlayer {

struct BatchQueueOptions {
  int64_t max_batch_rows = 256;  // rows of one kernel call (a larger request runs alone)
  int64_t max_queue = 1024;      // waiting requests per layer
  int max_inflight_batches = 1;  // concurrent kernel calls per layer
  int kernel_threads = 0;        // ExecContext::num_threads (0: kernel default)
};

class BatchQueue {
 public:
  // `runner` (the layer's compute step: linear_runner.h, moe_runner.h),
  // `pool` and `observer` (nullable) must outlive the queue.
  BatchQueue(const BatchRunner& runner, WorkerPool& pool, BatchQueueOptions options,
             BatchObserver* observer);
  // A linear layer's queue (its LinearRunner is owned by the queue).
  BatchQueue(const LoadedLinear& layer, WorkerPool& pool, BatchQueueOptions options,
             BatchObserver* observer);
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  const std::string& name() const { return runner_.name(); }
  // Accepts the item or says why not: RESOURCE_EXHAUSTED (queue full),
  // UNAVAILABLE (closed). The input must already be validated [M, K].
  absl::Status Submit(BatchItem item);
  // Refuses new items; everything accepted still runs.
  void Close();
  int64_t depth() const;

 private:
  void MaybeScheduleLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunBatch();

  std::unique_ptr<BatchRunner> owned_runner_;
  const BatchRunner& runner_;
  WorkerPool& pool_;
  const BatchQueueOptions options_;
  BatchObserver* const observer_;

  mutable absl::Mutex mu_;
  std::deque<BatchItem> queue_ ABSL_GUARDED_BY(mu_);
  int inflight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_BATCH_QUEUE_H_
