// Every hosted layer's batch queue (linear layers and MoE blocks) over one
// shared worker pool.
#ifndef QLAYER_SERVER_SCHEDULER_SCHEDULER_H_
#define QLAYER_SERVER_SCHEDULER_SCHEDULER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/model/model.h"
#include "server/scheduler/batch_queue.h"
#include "server/scheduler/moe_runner.h"
#include "server/scheduler/worker_pool.h"

namespace qlayer {

struct SchedulerOptions {
  int workers = 0;  // <= 0: one per hardware thread
  int worker_spin_us = 0;  // an idle worker polls this long before sleeping
  BatchQueueOptions queue;
};

class Scheduler {
 public:
  // observer_for(layer name) may return nullptr; returned observers must
  // outlive the scheduler.
  Scheduler(const Model& model, const SchedulerOptions& options,
            const std::function<BatchObserver*(const std::string&)>& observer_for);
  ~Scheduler();  // Shutdown()

  // nullptr for a layer the model does not host.
  BatchQueue* QueueFor(absl::string_view layer) const;
  int workers() const { return pool_.size(); }
  // Refuses new requests, computes and answers every accepted one, joins
  // the workers. Idempotent.
  void Shutdown();

 private:
  WorkerPool pool_;
  std::vector<std::unique_ptr<MoERunner>> moe_runners_;  // before the queues that use them
  std::map<std::string, std::unique_ptr<BatchQueue>, std::less<>> queues_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_SCHEDULER_H_
