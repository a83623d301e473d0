// What a batch queue reports as it works (the metrics module implements it;
// the scheduler knows nothing of Prometheus). Called from worker threads;
// implementations must be thread-safe and cheap.
#ifndef QLAYER_SERVER_SCHEDULER_BATCH_OBSERVER_H_
#define QLAYER_SERVER_SCHEDULER_BATCH_OBSERVER_H_

#include <cstdint>
#include <vector>

namespace qlayer {

class BatchObserver {
 public:
  virtual ~BatchObserver() = default;
  // A request left the queue for compute after `queue_seconds`.
  virtual void OnDequeued(double queue_seconds) = 0;
  // One kernel call: kernel = index into the layer's kernels().
  virtual void OnBatch(int kernel_index, int64_t rows, double compute_seconds) = 0;
  // Requests waiting in the queue now (called under the queue's lock, so
  // that depths arrive in order: do not call back into the queue).
  virtual void OnQueueDepth(int64_t depth) = 0;
  // MoE blocks: tokens routed to each expert ([E]) by one batch.
  virtual void OnExpertTokens(const std::vector<int64_t>& /*tokens_per_expert*/) {}
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_BATCH_OBSERVER_H_
