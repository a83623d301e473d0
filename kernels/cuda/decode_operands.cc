#include "cuda/decode_operands.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_linear.h"
#include "cuda/device_ops.h"
#include "qlayer/kernels/dtype.h"

namespace qlayer::cuda {

absl::Status CheckDecodeKernelSpec(int bits, absl::string_view name, const LinearSpec& spec,
                                   const Device& device) {
  QLAYER_RETURN_IF_ERROR(CheckCudaDevice(device));
  if (WeightBits(spec.wtype) != bits) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight type ", WeightTypeName(spec.wtype), " is not supported by ", name,
                     "; supported: ", bits == 4 ? "uint4, uint4b8" : "uint8, uint8b128"));
  }
  QLAYER_RETURN_IF_ERROR(CheckCudaLinearSpec(spec));
  if (spec.group_size <= 0 || spec.K % spec.group_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", spec.K, " is not divisible by group size ", spec.group_size));
  }
  // A group (after the K plan's padding) must hold whole 32-row steps.
  if (spec.group_size != spec.K && spec.group_size % 32 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group size ", spec.group_size, " is not supported by ", name,
        "; supported group sizes are multiples of 32 (32, 64, 128, ...) or channel-wise (", spec.K,
        ")"));
  }
  return absl::OkStatus();
}

int ScaleKindOf(DType t) {
  return t == DType::kF32 ? kScaleF32 : (t == DType::kBF16 ? kScaleBf16 : kScaleF16);
}

absl::Status UploadBiasAsFloat(const QuantizedLinear& w, DeviceBuffer& out) {
  if (w.bias.empty()) return absl::OkStatus();
  std::vector<float> b(static_cast<size_t>(w.N));
  for (int64_t n = 0; n < w.N; ++n) {
    b[static_cast<size_t>(n)] = static_cast<float>(LoadAsDouble(w.bias.data(), w.bias.dtype(), n));
  }
  return out.Upload(b.data(), b.size() * sizeof(float));
}

absl::StatusOr<GatheredInput> GatherForPermutedK(const void* x, int64_t M, int K, int Kp,
                                                 const DeviceBuffer& perm, Worker& worker,
                                                 cudaStream_t stream) {
  if (perm.get() == nullptr) return GatheredInput{x, K};
  QLAYER_RETURN_IF_ERROR(worker.gathered.Grow(static_cast<size_t>(M) * Kp * 2));
  // The gather's grid spans at most 65535 rows.
  for (int64_t m0 = 0; m0 < M; m0 += 65535) {
    const int rows = static_cast<int>(std::min<int64_t>(65535, M - m0));
    QLAYER_CUDA_RETURN_IF_ERROR(
        LaunchGatherColumns(static_cast<const uint16_t*>(x) + m0 * K, K, perm.as<int32_t>(), Kp,
                            rows, worker.gathered.as<uint16_t>() + m0 * Kp, stream),
        "gathering activation columns");
  }
  return GatheredInput{worker.gathered.get(), Kp};
}

}  // namespace qlayer::cuda
