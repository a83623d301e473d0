// The kernel contract (DESIGN.md "Kernel contract", after vLLM's
// MPLinearKernel): a kernel says whether it can implement a layer, repacks the
// canonical weight once in Prepare(), then computes y = x W^T (+ bias) in
// Forward(), concurrently from many threads.
#ifndef QLAYER_KERNELS_LINEAR_KERNEL_H_
#define QLAYER_KERNELS_LINEAR_KERNEL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

enum class Backend : uint8_t { kCpu, kCuda };
absl::string_view BackendName(Backend b);  // "cpu", "cuda"

struct Device {
  Backend backend = Backend::kCpu;
  int index = 0;                 // CUDA ordinal
  std::string ToString() const;  // "cpu", "cuda:0"
};

// The only input to kernel selection (vLLM's MPLinearLayerConfig).
struct LinearSpec {
  int64_t K = 0, N = 0;
  WeightType wtype = WeightType::kDense;
  int64_t group_size = 0;
  bool zero_points = false;
  bool g_idx = false;
  bool bias = false;
  DType scale_dtype = DType::kF16;  // dense weight dtype for kDense
  DType act = DType::kF16;          // the activation dtype expected most

  static LinearSpec Of(const QuantizedLinear& w, DType act);
};

// Per-call context: how many threads the kernel may use (0 = its default),
// and on CUDA the stream to launch on.
struct ExecContext {
  int num_threads = 0;
  void* cuda_stream = nullptr;
};

class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  // Registered name, e.g. "cpu_reference", "onednn_dense".
  virtual absl::string_view name() const = 0;
  // Repacks (and uploads) the weight. Called once, before any Forward. The
  // kernel must not keep references into `w`: the checkpoint may be unmapped.
  virtual absl::Status Prepare(const QuantizedLinear& w, const Device& device) = 0;
  // x [M, K] -> y [M, N]; x and y are f16, bf16 or f32 (y has x's dtype).
  // Thread-safe after Prepare. Validates shapes and dtypes.
  virtual absl::Status Forward(const ConstTensorView& x, const TensorView& y,
                               ExecContext& ctx) const = 0;
  // Bytes this kernel holds for the layer after Prepare.
  virtual int64_t prepared_bytes() const = 0;
  // Median microseconds of one call on M rows of `act` (synthetic input,
  // weights cold), for crossovers measured at load (crossover.h).
  // Unimplemented where a kernel offers no such timing (the CPU kernels:
  // their crossovers are measured offline, BENCHMARKS.md).
  virtual absl::StatusOr<double> MeasureForwardUs(int64_t M, DType act) const;
  // How this instance runs where its name does not say it, decided at
  // Prepare (cuda_dequant_cublas: "dense copy" or "dequantize per call");
  // empty for most kernels. Timings differ between variants, so it is part
  // of the crossover cache key (crossover.h).
  virtual std::string variant() const { return ""; }
};

// Shared shape/dtype check for Forward implementations: x [M, K], y [M, N],
// same float dtype. Messages name the values.
absl::Status CheckForwardArgs(const ConstTensorView& x, const TensorView& y, int64_t K, int64_t N);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_LINEAR_KERNEL_H_
