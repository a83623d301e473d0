#include "server/scheduler/scheduler.h"

namespace qlayer {

Scheduler::Scheduler(const Model& model, const SchedulerOptions& options,
                     const std::function<BatchObserver*(const LoadedLinear&)>& observer_for)
    : pool_(options.workers) {
  for (const auto& layer : model.linears()) {
    BatchObserver* observer = observer_for ? observer_for(*layer) : nullptr;
    queues_[layer->name()] = std::make_unique<BatchQueue>(*layer, pool_, options.queue, observer);
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
