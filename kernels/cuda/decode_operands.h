// Pieces the CUDA decode kernels (mma and GEMV) share around their own
// layouts: the scale-dtype code their device code switches on, the bias as
// fp32 on the GPU, and the activation gather into the permuted K order of
// k_plan.h.
#ifndef QLAYER_KERNELS_CUDA_DECODE_OPERANDS_H_
#define QLAYER_KERNELS_CUDA_DECODE_OPERANDS_H_

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cuda/cuda_common.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/quantized_linear.h"

namespace qlayer::cuda {

// What the mma and GEMV kernels both need of a layer: a CUDA device of
// compute capability 8.0+, `bits`-bit weights, f16/bf16 activations, and
// groups of whole multiples of 32 rows (or one group: channel-wise).
absl::Status CheckDecodeKernelSpec(int bits, absl::string_view name, const LinearSpec& spec,
                                   const Device& device);

// kScaleF32 / kScaleBf16 / kScaleF16 (device_ops.h) for a scales dtype.
int ScaleKindOf(DType t);

// w.bias (any float dtype) as [N] fp32 in `out`; leaves `out` empty when the
// layer has no bias.
absl::Status UploadBiasAsFloat(const QuantizedLinear& w, DeviceBuffer& out);

// The activations as the kernel reads them: `x` itself ([M, K], ld K) when
// `perm` is empty, else its columns gathered into the worker's buffer in the
// order `perm` gives ([M, Kp], ld Kp; padding columns 0).
struct GatheredInput {
  const void* x = nullptr;
  int ld = 0;
};
absl::StatusOr<GatheredInput> GatherForPermutedK(const void* x, int64_t M, int K, int Kp,
                                                 const DeviceBuffer& perm, Worker& worker,
                                                 cudaStream_t stream);

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_DECODE_OPERANDS_H_
