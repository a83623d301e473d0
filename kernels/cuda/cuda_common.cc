#include "cuda/cuda_common.h"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cuda/cublas_loader.h"

namespace qlayer::cuda {

absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ", static_cast<int>(err), " (",
                                          cudaGetErrorName(err), ": ", cudaGetErrorString(err),
                                          ")"));
}

absl::Status CublasStatus(cublasStatus_t st, absl::string_view what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  absl::StatusOr<const CublasApi*> api = LoadCublas();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(st), " (",
                                          api.ok() ? (*api)->status_string(st) : "?", ")"));
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

absl::Status DeviceBuffer::Grow(size_t bytes) {
  if (bytes <= bytes_ && ptr_ != nullptr) return absl::OkStatus();
  Reset();
  if (bytes == 0) return absl::OkStatus();
  QLAYER_CUDA_RETURN_IF_ERROR(cudaMalloc(&ptr_, bytes), absl::StrCat("cudaMalloc(", bytes, ")"));
  bytes_ = bytes;
  return absl::OkStatus();
}

absl::Status DeviceBuffer::Upload(const void* src, size_t bytes) {
  Reset();
  QLAYER_RETURN_IF_ERROR(Grow(bytes));
  if (bytes == 0) return absl::OkStatus();
  return CudaStatus(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice),
                    absl::StrCat("upload of ", bytes, " bytes"));
}

void DeviceBuffer::Reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::Status PinnedBuffer::Grow(size_t bytes) {
  if (bytes <= bytes_ && ptr_ != nullptr) return absl::OkStatus();
  Reset();
  if (bytes == 0) return absl::OkStatus();
  QLAYER_CUDA_RETURN_IF_ERROR(cudaMallocHost(&ptr_, bytes),
                              absl::StrCat("cudaMallocHost(", bytes, ")"));
  bytes_ = bytes;
  return absl::OkStatus();
}

void PinnedBuffer::Reset() {
  if (ptr_ != nullptr) cudaFreeHost(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<DeviceFacts> GetDeviceFacts(int index) {
  static std::mutex mu;
  static std::map<int, absl::StatusOr<DeviceFacts>>* cache =
      new std::map<int, absl::StatusOr<DeviceFacts>>;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache->find(index);
  if (it != cache->end()) return it->second;
  absl::StatusOr<DeviceFacts> result = [&]() -> absl::StatusOr<DeviceFacts> {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("no CUDA device: cudaGetDeviceCount failed with ", cudaGetErrorName(err),
                       " (", cudaGetErrorString(err), ")"));
    }
    if (index < 0 || index >= count) {
      return absl::FailedPreconditionError(
          absl::StrCat("CUDA device ", index, " does not exist (", count, " present)"));
    }
    cudaDeviceProp prop{};
    QLAYER_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, index),
                                absl::StrCat("cudaGetDeviceProperties(", index, ")"));
    DeviceFacts f;
    f.name = prop.name;
    f.major = prop.major;
    f.minor = prop.minor;
    f.sms = prop.multiProcessorCount;
    return f;
  }();
  cache->emplace(index, result);
  return result;
}

absl::Status CheckCudaDevice(const Device& device) {
  if (device.backend != Backend::kCuda) {
    return absl::FailedPreconditionError(
        absl::StrCat("runs on a CUDA GPU, but the layer is placed on ", device.ToString()));
  }
  QLAYER_ASSIGN_OR_RETURN(DeviceFacts f, GetDeviceFacts(device.index));
  if (f.major < 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("needs compute capability >= 8.0 (mma.sync, cp.async); ", device.ToString(),
                     " (", f.name, ") has ", f.major, ".", f.minor));
  }
  return absl::OkStatus();
}

Worker::~Worker() {
  // At process exit the CUDA runtime may already be gone; errors are moot.
  if (cublas_ != nullptr) {
    absl::StatusOr<const CublasApi*> api = LoadCublas();
    if (api.ok()) (*api)->destroy(cublas_);
  }
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

absl::StatusOr<cublasHandle_t> Worker::Cublas(cudaStream_t stream) {
  QLAYER_ASSIGN_OR_RETURN(const CublasApi* api, LoadCublas());
  if (cublas_ == nullptr) {
    QLAYER_RETURN_IF_ERROR(CublasStatus(api->create(&cublas_), "cublasCreate"));
    // An explicit workspace (32 MiB, cuBLAS's Hopper recommendation) keeps
    // cuBLAS from allocating inside a CUDA graph capture.
    QLAYER_RETURN_IF_ERROR(cublas_ws_.Grow(size_t{32} << 20));
    QLAYER_RETURN_IF_ERROR(CublasStatus(
        api->set_workspace(cublas_, cublas_ws_.get(), cublas_ws_.bytes()), "cublasSetWorkspace"));
  }
  QLAYER_RETURN_IF_ERROR(CublasStatus(api->set_stream(cublas_, stream), "cublasSetStream"));
  return cublas_;
}

absl::Status Worker::EnsureSplitK(size_t floats, size_t counters, cudaStream_t stream) {
  const size_t ws_bytes = floats * sizeof(float), ctr_bytes = counters * sizeof(unsigned);
  if (ws_bytes > split_ws_.bytes() || split_dirty_) {
    QLAYER_RETURN_IF_ERROR(split_ws_.Grow(ws_bytes));
    QLAYER_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(split_ws_.get(), 0, split_ws_.bytes(), stream),
                                "zeroing the split-K workspace");
  }
  if (ctr_bytes > split_counters_.bytes() || split_dirty_) {
    QLAYER_RETURN_IF_ERROR(split_counters_.Grow(ctr_bytes));
    QLAYER_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(split_counters_.get(), 0, split_counters_.bytes(), stream),
        "zeroing the split-K counters");
  }
  split_dirty_ = false;
  return absl::OkStatus();
}

absl::StatusOr<Worker*> ThisThreadWorker(int device) {
  thread_local std::map<int, std::unique_ptr<Worker>> workers;
  QLAYER_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), absl::StrCat("cudaSetDevice(", device, ")"));
  auto it = workers.find(device);
  if (it != workers.end()) return it->second.get();
  static std::atomic<uint64_t> next_id{1};
  auto w = std::make_unique<Worker>();
  w->device_ = device;
  w->id_ = next_id.fetch_add(1, std::memory_order_relaxed);
  QLAYER_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&w->stream_, cudaStreamNonBlocking),
                              "cudaStreamCreate");
  Worker* raw = w.get();
  workers.emplace(device, std::move(w));
  return raw;
}

}  // namespace qlayer::cuda
