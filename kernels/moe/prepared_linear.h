// One canonical linear prepared with every kernel SelectLinearKernel chose
// for it (each serving rows up to its max_m), so an MoE kernel can run expert
// projections through whatever linear kernels the build has.
#ifndef QLAYER_KERNELS_MOE_PREPARED_LINEAR_H_
#define QLAYER_KERNELS_MOE_PREPARED_LINEAR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {

class PreparedLinear {
 public:
  // Selects (for activation dtype `act`), creates and prepares the kernels.
  absl::Status Prepare(const QuantizedLinear& w, const Device& device, DType act,
                       const SelectOptions& options);
  // Runs the kernel serving x's row count; `used` (optional) gets its name.
  absl::Status Forward(const ConstTensorView& x, const TensorView& y, ExecContext& ctx,
                       absl::string_view* used) const;
  int64_t prepared_bytes() const;
  // "onednn_dense" or "cpu_avx512_w4a16_gemv (M<=16), onednn_dense".
  std::string Describe() const;

 private:
  struct Entry {
    int64_t max_m = kUnboundedM;
    std::unique_ptr<LinearKernel> kernel;
  };
  std::vector<Entry> entries_;  // ascending max_m, last unbounded
};

}  // namespace qlayer

#endif  // QLAYER_KERNELS_MOE_PREPARED_LINEAR_H_
