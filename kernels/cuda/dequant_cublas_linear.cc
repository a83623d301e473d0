// cuda_dequant_cublas: the prefill path. Prepare keeps the quantized weight
// on the GPU and dequantizes it once into a dense [N, K] copy in the
// activation dtype the scales suggest (bf16 scales -> bf16, else f16); the
// other dtype's copy is made on first use. Forward is one cuBLAS GEMM (fp32
// accumulation) plus a bias epilogue: at large M the GEMM is compute-bound,
// so reading 16-bit weights costs nothing next to cuBLAS's tensor-core rate.
// The price is memory: 16 bits per weight beside the packed copy, 4x the
// int4 bytes, so a model whose int4 weights take more than a fifth of the GPU
// could not load with a copy for every layer. So the copy is a policy
// (QLAYER_CUDA_DENSE_COPY): "always"; "never" (each call dequantizes into the
// calling worker's scratch, then the GEMM: K x N x 2 bytes more written and
// read per call, ~+0.25 ms on 8192x28672, which matters less the larger M);
// "auto" (default), a copy while at least half of the GPU's memory stays
// free after it, else per call.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cuda/cublas_loader.h"
#include "cuda/cuda_linear.h"
#include "cuda/device_ops.h"

namespace qlayer::cuda {
namespace {

constexpr char kName[] = "cuda_dequant_cublas";

class CudaDequantCublasLinear final : public CudaLinearKernel {
 public:
  absl::string_view name() const override { return kName; }
  std::string variant() const override {
    return keep_dense_ ? "dense copy" : "dequantize per call";
  }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    if (WeightBits(w.wtype) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(kName, " takes quantized weights, not ", WeightTypeName(w.wtype)));
    }
    QLAYER_RETURN_IF_ERROR(w.Validate());
    QLAYER_RETURN_IF_ERROR(CheckCudaDevice(device));
    device_ = device.index;
    K_ = w.K;
    N_ = w.N;
    QLAYER_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");
    QLAYER_RETURN_IF_ERROR(qweight_.Upload(w.qweight.data(), w.qweight.nbytes()));
    QLAYER_RETURN_IF_ERROR(scales_.Upload(w.scales.data(), w.scales.nbytes()));
    if (HasZeroPoints(w.wtype)) {
      QLAYER_RETURN_IF_ERROR(zeros_.Upload(w.zeros.data(), w.zeros.nbytes()));
    }
    if (!w.g_idx.empty()) QLAYER_RETURN_IF_ERROR(g_idx_.Upload(w.g_idx.data(), w.g_idx.nbytes()));
    if (!w.bias.empty()) {
      std::vector<float> b(static_cast<size_t>(w.N));
      for (int64_t n = 0; n < w.N; ++n) {
        b[static_cast<size_t>(n)] =
            static_cast<float>(LoadAsDouble(w.bias.data(), w.bias.dtype(), n));
      }
      QLAYER_RETURN_IF_ERROR(bias_.Upload(b.data(), b.size() * sizeof(float)));
    }
    args_.qweight = qweight_.as<int32_t>();
    args_.scales = scales_.get();
    args_.scale_kind = w.scales.dtype() == DType::kF32
                           ? kScaleF32
                           : (w.scales.dtype() == DType::kBF16 ? kScaleBf16 : kScaleF16);
    args_.zeros = zeros_.as<int32_t>();
    args_.sym_zero = SymmetricZero(w.wtype);
    args_.g_idx = g_idx_.as<int32_t>();
    args_.K = static_cast<int>(w.K);
    args_.N = static_cast<int>(w.N);
    args_.bits = WeightBits(w.wtype);
    args_.group_size = static_cast<int>(w.group_size);
    QLAYER_ASSIGN_OR_RETURN(keep_dense_, KeepDenseCopy(static_cast<size_t>(N_) * K_ * 2));
    if (!keep_dense_) return absl::OkStatus();
    absl::MutexLock lock(&mu_);
    return DenseLocked(w.scales.dtype() == DType::kBF16, nullptr).status();
  }

  absl::Status ForwardDevice(const void* x, void* y, int64_t M, DType dtype, Worker& worker,
                             cudaStream_t stream) const override {
    if (dtype != DType::kF16 && dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype), " is not supported; supported: f16, bf16"));
    }
    const bool bf16 = dtype == DType::kBF16;
    const void* dense = nullptr;
    if (keep_dense_) {
      absl::MutexLock lock(&mu_);
      QLAYER_ASSIGN_OR_RETURN(dense, DenseLocked(bf16, stream));
    } else {
      QLAYER_RETURN_IF_ERROR(worker.dense_scratch.Grow(static_cast<size_t>(N_) * K_ * 2));
      QLAYER_CUDA_RETURN_IF_ERROR(
          LaunchDequantToDense(args_, bf16, worker.dense_scratch.get(), stream),
          "dequantizing the weight into the worker's scratch");
      dense = worker.dense_scratch.get();
    }
    QLAYER_ASSIGN_OR_RETURN(cublasHandle_t handle, worker.Cublas(stream));
    QLAYER_ASSIGN_OR_RETURN(const CublasApi* api, LoadCublas());
    const float alpha = 1.f, beta = 0.f;
    const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    const int n = static_cast<int>(N_), k = static_cast<int>(K_), m = static_cast<int>(M);
    // Column-major view: y^T [N, M] = W [K, N]^T x^T [K, M] ("TN", cuBLAS's
    // fastest layout for row-major x [M, K] and W [N, K]).
    QLAYER_RETURN_IF_ERROR(
        CublasStatus(api->gemm_ex(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, dense, t, k, x,
                                  t, k, &beta, y, t, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     absl::StrCat("cublasGemmEx M=", M, " N=", N_, " K=", K_)));
    if (bias_.get() != nullptr) {
      QLAYER_CUDA_RETURN_IF_ERROR(LaunchAddBias(y, m, n, bias_.as<float>(), bf16, stream),
                                  "bias epilogue");
    }
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    absl::MutexLock lock(&mu_);
    return static_cast<int64_t>(qweight_.bytes() + scales_.bytes() + zeros_.bytes() +
                                g_idx_.bytes() + bias_.bytes() + dense_[0].bytes() +
                                dense_[1].bytes());
  }

 private:
  // The dense copy for f16 (bf16 = false) or bf16, made on first use. A copy
  // made from Forward is synchronised before it is published, so other
  // threads' streams may read it at once.
  absl::StatusOr<const void*> DenseLocked(bool bf16, cudaStream_t stream) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    DeviceBuffer& d = dense_[bf16 ? 1 : 0];
    if (d.get() != nullptr) return static_cast<const void*>(d.get());
    DeviceBuffer fresh;
    QLAYER_RETURN_IF_ERROR(fresh.Grow(static_cast<size_t>(N_) * static_cast<size_t>(K_) * 2));
    QLAYER_CUDA_RETURN_IF_ERROR(LaunchDequantToDense(args_, bf16, fresh.get(), stream),
                                "dequantizing the weight");
    QLAYER_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "dequantizing the weight");
    d = std::move(fresh);
    return static_cast<const void*>(d.get());
  }

  // QLAYER_CUDA_DENSE_COPY (see the top of the file) for a copy of `bytes`.
  static absl::StatusOr<bool> KeepDenseCopy(size_t bytes) {
    const char* e = std::getenv("QLAYER_CUDA_DENSE_COPY");
    const std::string policy = e != nullptr && *e != '\0' ? e : "auto";
    if (policy == "always") return true;
    if (policy == "never") return false;
    if (policy != "auto") {
      return absl::InvalidArgumentError(
          absl::StrCat("QLAYER_CUDA_DENSE_COPY=", policy, ": expected auto, always or never"));
    }
    size_t free_bytes = 0, total = 0;
    QLAYER_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    return free_bytes >= bytes && free_bytes - bytes >= total / 2;
  }

  DeviceBuffer qweight_, scales_, zeros_, g_idx_, bias_;
  bool keep_dense_ = true;
  DequantArgs args_;
  mutable absl::Mutex mu_;
  mutable DeviceBuffer dense_[2] ABSL_GUARDED_BY(mu_);
};

}  // namespace
}  // namespace qlayer::cuda

namespace qlayer {

KernelFactory CudaDequantCublasKernelFactory() {
  KernelFactory f;
  f.name = cuda::kName;
  f.backend = Backend::kCuda;
  f.priority = 20;
  f.max_m = kUnboundedM;
  f.can_implement = [](const LinearSpec& spec, const Device& device) -> absl::Status {
    QLAYER_RETURN_IF_ERROR(cuda::CheckCudaDevice(device));
    QLAYER_RETURN_IF_ERROR(cuda::LoadCublas().status());
    if (WeightBits(spec.wtype) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight type ", WeightTypeName(spec.wtype), " is not supported by ",
                       cuda::kName, "; supported: uint4, uint4b8, uint8, uint8b128"));
    }
    QLAYER_RETURN_IF_ERROR(cuda::CheckCudaLinearSpec(spec));
    if (spec.group_size <= 0 || spec.K % spec.group_size != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("K=", spec.K, " is not divisible by group size ", spec.group_size));
    }
    return absl::OkStatus();
  };
  f.create = []() -> std::unique_ptr<LinearKernel> {
    return std::make_unique<cuda::CudaDequantCublasLinear>();
  };
  return f;
}

}  // namespace qlayer
