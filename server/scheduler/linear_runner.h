// The compute step of a linear layer's batch queue: the prepared kernel that
// serves the batch's row count (LoadedLinear::KernelIndexFor), one call.
#ifndef QLAYER_SERVER_SCHEDULER_LINEAR_RUNNER_H_
#define QLAYER_SERVER_SCHEDULER_LINEAR_RUNNER_H_

#include <string>
#include <vector>

#include "server/model/loaded_linear.h"
#include "server/scheduler/batch_runner.h"

namespace qlayer {

class LinearRunner final : public BatchRunner {
 public:
  explicit LinearRunner(const LoadedLinear& layer) : layer_(layer) {}

  const std::string& name() const override { return layer_.name(); }
  int64_t in_features() const override { return layer_.K(); }
  int64_t out_features() const override { return layer_.N(); }
  void Run(const ConstTensorView& x, const std::vector<BatchItem>& items, const TensorView& y,
           ExecContext& ctx, BatchRun& run) const override;

 private:
  const LoadedLinear& layer_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_LINEAR_RUNNER_H_
