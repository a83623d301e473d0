// --device auto|cpu|cuda:N -> the Device layers are placed on, and why.
#ifndef QLAYER_SERVER_MODEL_DEVICE_CHOICE_H_
#define QLAYER_SERVER_MODEL_DEVICE_CHOICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/linear_kernel.h"

namespace qlayer {

struct DeviceChoice {
  Device device;
  std::string why;  // logged at startup: "auto: built without CUDA -> cpu"
};

// Number of CUDA devices this process can use: 0 when built without CUDA
// (QLAYER_HAVE_CUDA unset), when no driver or GPU is present, or when no CUDA
// kernel is registered.
int UsableCudaDevices();

// "auto": cuda:0 when UsableCudaDevices() > 0, else cpu. "cpu". "cuda:N":
// FAILED_PRECONDITION when CUDA is unusable or N is out of range.
// Anything else: INVALID_ARGUMENT naming the accepted spellings.
absl::StatusOr<DeviceChoice> ChooseDevice(absl::string_view flag);

}  // namespace qlayer

#endif  // QLAYER_SERVER_MODEL_DEVICE_CHOICE_H_
