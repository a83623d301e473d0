#include "server/scheduler/linear_runner.h"

#include "absl/strings/str_cat.h"

namespace qlayer {

void LinearRunner::Run(const ConstTensorView& x, const std::vector<BatchItem>& /*items*/,
                       const TensorView& y, ExecContext& ctx, BatchRun& run) const {
  run.kernel_index = layer_.KernelIndexFor(x.dim(0));
  const PreparedKernel& kernel = layer_.kernels()[static_cast<size_t>(run.kernel_index)];
  run.kernel = kernel.name;
  const absl::Status status = kernel.kernel->Forward(x, y, ctx);
  if (!status.ok()) {
    run.status = absl::Status(status.code(), absl::StrCat("layer ", layer_.name(), ": kernel ",
                                                          kernel.name, ": ", status.message()));
  }
}

}  // namespace qlayer
