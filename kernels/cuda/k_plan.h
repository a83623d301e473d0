// The permuted, padded K order the CUDA decode kernels read: act-order rows
// sorted by group with every group padded to the same span (a multiple of 32,
// so that neither an mma k16 step nor a GEMV 32-row chunk straddles two
// groups), and K padded to a multiple of 64. Activation columns are gathered
// into this order at Forward (padding rows read 0).
#ifndef QLAYER_KERNELS_CUDA_K_PLAN_H_
#define QLAYER_KERNELS_CUDA_K_PLAN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "qlayer/kernels/quantized_linear.h"

namespace qlayer::cuda {

struct PermutedKPlan {
  int64_t Kp = 0;
  int64_t geff = 0;  // rows per scale group after permutation; 0 = one group
  int64_t ngroups = 1;
  std::vector<int32_t> perm;  // [Kp] canonical row or -1; empty = identity, no gather
};

absl::StatusOr<PermutedKPlan> PlanPermutedK(const QuantizedLinear& w);

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_K_PLAN_H_
