#include "server/scheduler/scheduler.h"

namespace qlayer {

Scheduler::Scheduler(const Model& model, const SchedulerOptions& options,
                     const std::function<BatchObserver*(const std::string&)>& observer_for)
    : pool_(options.workers, options.worker_spin_us) {
  for (const auto& layer : model.linears()) {
    BatchObserver* observer = observer_for ? observer_for(layer->name()) : nullptr;
    queues_[layer->name()] = std::make_unique<BatchQueue>(*layer, pool_, options.queue, observer);
  }
  for (const auto& moe : model.moes()) {
    BatchObserver* observer = observer_for ? observer_for(moe->name()) : nullptr;
    moe_runners_.push_back(std::make_unique<MoERunner>(*moe));
    queues_[moe->name()] =
        std::make_unique<BatchQueue>(*moe_runners_.back(), pool_, options.queue, observer);
  }
}

Scheduler::~Scheduler() { Shutdown(); }

BatchQueue* Scheduler::QueueFor(absl::string_view layer) const {
  auto it = queues_.find(layer);
  return it == queues_.end() ? nullptr : it->second.get();
}

void Scheduler::Shutdown() {
  for (auto& [name, queue] : queues_) queue->Close();
  pool_.Shutdown();
}

}  // namespace qlayer
