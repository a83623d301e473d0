// Spec checks every CPU kernel's CanImplement starts from. Compiled without
// ISA flags: selection must run on any x86-64.
#ifndef QLAYER_KERNELS_CPU_CPU_SPEC_CHECKS_H_
#define QLAYER_KERNELS_CPU_CPU_SPEC_CHECKS_H_

#include "absl/status/status.h"
#include "qlayer/kernels/linear_kernel.h"

namespace qlayer {

// OK when the device is the CPU.
absl::Status CheckCpuDevice(const Device& device);

// OK when the spec describes a layer the canonical weight can hold: positive
// K and N, a known weight type, K a multiple of the pack factor and of the
// group size, float scale (or dense weight) and activation dtypes. Every
// CPU kernel accepts at least this much; ISA kernels narrow it further.
absl::Status CheckValidLinearSpec(const LinearSpec& spec);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_CPU_SPEC_CHECKS_H_
