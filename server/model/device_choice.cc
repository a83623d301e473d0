#include "server/model/device_choice.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "qlayer/kernels/registry.h"

#if defined(QLAYER_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace qlayer {
namespace {

bool HasCudaKernel() {
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    if (f->backend == Backend::kCuda) return true;
  }
  return false;
}

int CudaDeviceCount() {
#if defined(QLAYER_HAVE_CUDA)
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
#else
  return 0;
#endif
}

// Why CUDA cannot be used, or "" when it can.
std::string CudaUnusableReason() {
#if !defined(QLAYER_HAVE_CUDA)
  return "this qlayer-server was built without CUDA (configure with -DQLAYER_CUDA=on)";
#else
  if (CudaDeviceCount() == 0) return "no CUDA device is visible (driver missing or no GPU)";
  if (!HasCudaKernel()) return "no CUDA kernel is registered";
  return "";
#endif
}

}  // namespace

int UsableCudaDevices() { return CudaUnusableReason().empty() ? CudaDeviceCount() : 0; }

absl::StatusOr<DeviceChoice> ChooseDevice(absl::string_view flag) {
  DeviceChoice choice;
  if (flag == "auto" || flag.empty()) {
    const std::string reason = CudaUnusableReason();
    if (reason.empty()) {
      choice.device = {Backend::kCuda, 0};
      choice.why = absl::StrCat("auto: ", CudaDeviceCount(), " CUDA device(s) visible -> cuda:0");
    } else {
      choice.device = {Backend::kCpu, 0};
      choice.why = absl::StrCat("auto: ", reason, " -> cpu");
    }
    return choice;
  }
  if (flag == "cpu") {
    choice.device = {Backend::kCpu, 0};
    choice.why = "--device cpu";
    return choice;
  }
  absl::string_view rest = flag;
  int index = 0;
  if (absl::ConsumePrefix(&rest, "cuda:") && absl::SimpleAtoi(rest, &index) && index >= 0) {
    const std::string reason = CudaUnusableReason();
    if (!reason.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("--device ", flag, ": ", reason));
    }
    const int n = CudaDeviceCount();
    if (index >= n) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", flag, ": only ", n, " CUDA device(s) are visible"));
    }
    choice.device = {Backend::kCuda, index};
    choice.why = absl::StrCat("--device ", flag);
    return choice;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device '", flag, "' is not one of auto, cpu, cuda:N"));
}

}  // namespace qlayer
