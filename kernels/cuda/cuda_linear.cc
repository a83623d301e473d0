#include "cuda/cuda_linear.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

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
  // The GPU side of the call: copy in, compute, copy out. Replayed from a
  // graph at decode sizes; captured only while the split-K scratch is known
  // to be clean (else this call zeroes it first, directly).
  auto enqueue = [&]() -> absl::Status {
    QLAYER_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(worker->x.get(), worker->host_x.get(), x_bytes,
                                                cudaMemcpyHostToDevice, stream),
                                "copying the input to the GPU");
    absl::Status st = ForwardDevice(worker->x.get(), worker->y.get(), M, x.dtype, *worker, stream);
    if (!st.ok()) return st;
    return CudaStatus(cudaMemcpyAsync(worker->host_y.get(), worker->y.get(), y_bytes,
                                      cudaMemcpyDeviceToHost, stream),
                      "copying the output from the GPU");
  };
  absl::Status st;
  if (ForwardGraphsEnabled() && M <= kMaxGraphRows && !worker->split_k_dirty()) {
    ForwardGraphCache::Key key;
    key.worker = worker->id();
    key.stream = stream;
    key.M = M;
    key.dtype = x.dtype;
    key.buffers = worker->buffer_addresses();
    st = graphs_.Run(key, enqueue);
  } else {
    st = enqueue();
  }
  if (!st.ok()) {
    worker->MarkSplitKDirty();
    graphs_.Clear();
    cudaStreamSynchronize(stream);
    return absl::Status(st.code(),
                        absl::StrCat(name(), " M=", M, " K=", K_, " N=", N_, ": ", st.message()));
  }
  const cudaError_t err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    worker->MarkSplitKDirty();
    graphs_.Clear();
    return CudaStatus(err, absl::StrCat(name(), " M=", M, " K=", K_, " N=", N_));
  }
  std::memcpy(y.data, worker->host_y.get(), y_bytes);
  return absl::OkStatus();
}

absl::StatusOr<double> CudaLinearKernel::MeasureForwardUs(int64_t M, DType act) const {
  if (M <= 0 || (act != DType::kF16 && act != DType::kBF16)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name(), ": cannot time M=", M, " ", DTypeName(act)));
  }
  QLAYER_ASSIGN_OR_RETURN(Worker * worker, ThisThreadWorker(device_));
  cudaStream_t s = worker->stream();
  const size_t x_bytes = static_cast<size_t>(M * K_) * 2, y_bytes = static_cast<size_t>(M * N_) * 2;
  QLAYER_RETURN_IF_ERROR(worker->x.Grow(x_bytes));
  QLAYER_RETURN_IF_ERROR(worker->y.Grow(y_bytes));
  int l2 = 0;
  QLAYER_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device_),
                              "L2 size");
  DeviceBuffer& flush = worker->l2_flush;
  QLAYER_RETURN_IF_ERROR(flush.Grow(2 * static_cast<size_t>(std::max(l2, 1 << 20))));
  // 0x3C3C: 1.06 as f16, 0.0115 as bf16; the values do not change the time.
  QLAYER_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(worker->x.get(), 0x3C, x_bytes, s), "timing input");
  cudaEvent_t a = nullptr, b = nullptr;
  QLAYER_CUDA_RETURN_IF_ERROR(cudaEventCreate(&a), "cudaEventCreate");
  const cudaError_t eb = cudaEventCreate(&b);
  if (eb != cudaSuccess) {
    cudaEventDestroy(a);
    return CudaStatus(eb, "cudaEventCreate");
  }
  std::vector<double> us;
  absl::Status st = ForwardDevice(worker->x.get(), worker->y.get(), M, act, *worker, s);  // warm-up
  for (int r = 0; r < 5 && st.ok(); ++r) {
    st = CudaStatus(cudaMemsetAsync(flush.get(), r, flush.bytes(), s), "flushing the L2");
    if (st.ok()) st = CudaStatus(cudaEventRecord(a, s), "cudaEventRecord");
    if (st.ok()) st = ForwardDevice(worker->x.get(), worker->y.get(), M, act, *worker, s);
    if (st.ok()) st = CudaStatus(cudaEventRecord(b, s), "cudaEventRecord");
    if (st.ok()) st = CudaStatus(cudaEventSynchronize(b), "timing");
    float ms = 0;
    if (st.ok()) st = CudaStatus(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    us.push_back(ms * 1000.0);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  if (!st.ok()) {
    worker->MarkSplitKDirty();
    cudaStreamSynchronize(s);
    return st;
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace qlayer::cuda
