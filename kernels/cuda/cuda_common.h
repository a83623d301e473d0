// Host-side CUDA plumbing shared by the CUDA kernels: errors as absl::Status,
// owning device / pinned buffers, device facts, and the per-thread worker
// (stream, cuBLAS handle, staging and scratch buffers) that Forward runs on.
#ifndef QLAYER_KERNELS_CUDA_CUDA_COMMON_H_
#define QLAYER_KERNELS_CUDA_CUDA_COMMON_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer::cuda {

// OK for cudaSuccess, else INTERNAL naming `what` and the CUDA error.
absl::Status CudaStatus(cudaError_t err, absl::string_view what);
absl::Status CublasStatus(cublasStatus_t st, absl::string_view what);

#define QLAYER_CUDA_RETURN_IF_ERROR(expr, what) \
  QLAYER_RETURN_IF_ERROR(::qlayer::cuda::CudaStatus((expr), (what)))

// Owning cudaMalloc'd bytes. Grow() reallocates without preserving contents.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) {
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  absl::Status Grow(size_t bytes);
  // Allocates exactly `bytes` and copies `src` (host) into it, synchronously.
  absl::Status Upload(const void* src, size_t bytes);
  void Reset();
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Owning page-locked host bytes (cudaMallocHost), for async copies.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  absl::Status Grow(size_t bytes);
  void Reset();
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

struct DeviceFacts {
  std::string name;
  int major = 0, minor = 0;
  int sms = 0;
};
// Facts of CUDA device `index`, or why there is none.
absl::StatusOr<DeviceFacts> GetDeviceFacts(int index);

// The platform checks every CUDA kernel's CanImplement starts with: a CUDA
// device, present, of compute capability >= 8.0 (mma.sync m16n8k16, cp.async).
absl::Status CheckCudaDevice(const Device& device);

// Per (thread, device): Forward calls from one thread run in order on its
// stream, so the buffers below are never shared between concurrent calls.
class Worker {
 public:
  ~Worker();
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  absl::StatusOr<cublasHandle_t> Cublas(cudaStream_t stream);
  // Split-K scratch: `floats` fp32 and `counters` uint32, all zero on the
  // stream's timeline (the decode kernel leaves them zero again).
  absl::Status EnsureSplitK(size_t floats, size_t counters, cudaStream_t stream);
  float* split_ws() const { return split_ws_.as<float>(); }
  unsigned* split_counters() const { return split_counters_.as<unsigned>(); }
  // A failed launch may leave partial sums behind: zero them before reuse.
  void MarkSplitKDirty() { split_dirty_ = true; }
  bool split_k_dirty() const { return split_dirty_; }

  // Unique for the life of the process (a worker's address may be reused
  // by the next thread's): CUDA graphs are keyed by it.
  uint64_t id() const { return id_; }
  // Every buffer a Forward may touch, by address: a graph captured with
  // these addresses is valid while they are unchanged (buffers only grow).
  using BufferAddresses = std::array<const void*, 9>;
  BufferAddresses buffer_addresses() const {
    return {host_x.get(),    host_y.get(),          x.get(),
            y.get(),         gathered.get(),        dense_scratch.get(),
            split_ws_.get(), split_counters_.get(), cublas_ws_.get()};
  }

  PinnedBuffer host_x, host_y;
  DeviceBuffer x, y, gathered;
  // A weight dequantized for one call (cuda_dequant_cublas without a dense
  // copy of its own).
  DeviceBuffer dense_scratch;
  // Written between timed calls to evict the weights from L2
  // (CudaLinearKernel::MeasureForwardUs); kept so that timing a layer at
  // eight row counts allocates once. Forward never touches it, so it is not
  // among buffer_addresses().
  DeviceBuffer l2_flush;

 private:
  friend absl::StatusOr<Worker*> ThisThreadWorker(int device);
  int device_ = 0;
  uint64_t id_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer split_ws_, split_counters_, cublas_ws_;
  bool split_dirty_ = false;
};

// The calling thread's worker for `device` (created on first use; the
// device is made current).
absl::StatusOr<Worker*> ThisThreadWorker(int device);

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_CUDA_COMMON_H_
