#include "cuda/cuda_linear.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace qlayer::cuda {

absl::Status CheckCudaLinearSpec(const LinearSpec& spec) {
  if (spec.act != DType::kF16 && spec.act != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("activation dtype ", DTypeName(spec.act),
                                                   " is not supported; supported: f16, bf16"));
  }
  if (spec.scale_dtype != DType::kF16 && spec.scale_dtype != DType::kBF16 &&
      spec.scale_dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("scale dtype ", DTypeName(spec.scale_dtype),
                                                   " is not supported; supported: f16, bf16, f32"));
  }
  if (spec.K <= 0 || spec.N <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad shape K=", spec.K, " N=", spec.N));
  }
  const int pack = PackFactor(spec.wtype);
  if (spec.K % pack != 0) {
    return absl::InvalidArgumentError(absl::StrCat("K=", spec.K, " is not a multiple of ", pack,
                                                   " (values per int32 of ",
                                                   WeightTypeName(spec.wtype), ")"));
  }
  // Tile and element indices are 32-bit in the kernels; 2^30 leaves room for
  // the padding to 64 (K) and 16 (N).
  constexpr int64_t kMaxDim = int64_t{1} << 30;
  if (spec.K >= kMaxDim || spec.N >= kMaxDim || spec.K * spec.N / pack >= (int64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", spec.K, " N=", spec.N, " is too large for 32-bit tile indices"));
  }
  return absl::OkStatus();
}

absl::Status CudaLinearKernel::Forward(const ConstTensorView& x, const TensorView& y,
                                       ExecContext& ctx) const {
  QLAYER_RETURN_IF_ERROR(CheckForwardArgs(x, y, K_, N_));
  if (x.dtype != DType::kF16 && x.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(name(), ": input dtype ", DTypeName(x.dtype),
                                                   " is not supported; supported: f16, bf16"));
  }
  const int64_t M = x.dim(0);
  if (M == 0) return absl::OkStatus();
  QLAYER_ASSIGN_OR_RETURN(Worker * worker, ThisThreadWorker(device_));
  cudaStream_t stream =
      ctx.cuda_stream != nullptr ? static_cast<cudaStream_t>(ctx.cuda_stream) : worker->stream();
  const size_t x_bytes = x.nbytes(), y_bytes = y.nbytes();
  QLAYER_RETURN_IF_ERROR(worker->host_x.Grow(x_bytes));
  QLAYER_RETURN_IF_ERROR(worker->host_y.Grow(y_bytes));
  QLAYER_RETURN_IF_ERROR(worker->x.Grow(x_bytes));
  QLAYER_RETURN_IF_ERROR(worker->y.Grow(y_bytes));
  std::memcpy(worker->host_x.get(), x.data, x_bytes);
  QLAYER_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(worker->x.get(), worker->host_x.get(), x_bytes,
                                              cudaMemcpyHostToDevice, stream),
                              "copying the input to the GPU");
  absl::Status st = ForwardDevice(worker->x.get(), worker->y.get(), M, x.dtype, *worker, stream);
  if (!st.ok()) {
    worker->MarkSplitKDirty();
    cudaStreamSynchronize(stream);
    return absl::Status(st.code(),
                        absl::StrCat(name(), " M=", M, " K=", K_, " N=", N_, ": ", st.message()));
  }
  QLAYER_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(worker->host_y.get(), worker->y.get(), y_bytes,
                                              cudaMemcpyDeviceToHost, stream),
                              "copying the output from the GPU");
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    worker->MarkSplitKDirty();
    return CudaStatus(err, absl::StrCat(name(), " M=", M, " K=", K_, " N=", N_));
  }
  std::memcpy(y.data, worker->host_y.get(), y_bytes);
  return absl::OkStatus();
}

}  // namespace qlayer::cuda
