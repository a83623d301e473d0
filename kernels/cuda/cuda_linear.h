// The CUDA linear kernels' common shape: Prepare uploads and repacks on the
// GPU, ForwardDevice computes on device pointers (benchmarks call it
// directly), and Forward wraps it for host tensors: the payload goes through
// the calling thread's pinned staging buffers and stream, and the one host
// synchronisation is the one that returns the answer.
#ifndef QLAYER_KERNELS_CUDA_CUDA_LINEAR_H_
#define QLAYER_KERNELS_CUDA_CUDA_LINEAR_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/cuda_common.h"
#include "cuda/forward_graphs.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/registry.h"

namespace qlayer::cuda {

class CudaLinearKernel : public LinearKernel {
 public:
  // y[M, N] = x[M, K] W^T (+ bias) with x, y device pointers of `dtype`
  // (f16 or bf16), enqueued on `stream`; no host synchronisation.
  virtual absl::Status ForwardDevice(const void* x, void* y, int64_t M, DType dtype, Worker& worker,
                                     cudaStream_t stream) const = 0;
  absl::Status Forward(const ConstTensorView& x, const TensorView& y,
                       ExecContext& ctx) const override;
  // ForwardDevice alone, timed with events on the calling thread's stream,
  // each of five calls after a write of twice the L2 (weights cold).
  absl::StatusOr<double> MeasureForwardUs(int64_t M, DType act) const override;

  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  int device() const { return device_; }
  // What Forward's graph cache did so far (tests check that graphs ran).
  ForwardGraphCache::Stats graph_stats() const { return graphs_.stats(); }

 protected:
  int64_t K_ = 0, N_ = 0;
  int device_ = 0;

 private:
  mutable ForwardGraphCache graphs_;
};

// Checks shared by every CUDA kernel's CanImplement after the platform:
// activation dtype (f16, bf16), scale dtype, K multiple of the pack factor,
// sizes that fit 32-bit indices.
absl::Status CheckCudaLinearSpec(const LinearSpec& spec);

}  // namespace qlayer::cuda

namespace qlayer {
// Factories (listed in kernels/core/builtin_kernels.cc).
KernelFactory CudaGemvW4A16KernelFactory();
KernelFactory CudaGemvW8A16KernelFactory();
KernelFactory CudaMmaW4A16KernelFactory();
KernelFactory CudaMmaW8A16KernelFactory();
KernelFactory CudaDequantCublasKernelFactory();
}  // namespace qlayer

#endif  // QLAYER_KERNELS_CUDA_CUDA_LINEAR_H_
