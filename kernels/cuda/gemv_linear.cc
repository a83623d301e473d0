// cuda_gemv_w4a16 / cuda_gemv_w8a16: the M <= 2 decode path (gemv_decode.cu)
// behind the kernel contract. Prepare plans the permuted K order (shared with
// the mma kernels), uploads the canonical tensors and transposes them on the
// GPU into rows per output; Forward gathers activation columns when the
// order needs it and launches the GEMV.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cuda/cuda_linear.h"
#include "cuda/decode_operands.h"
#include "cuda/device_ops.h"
#include "cuda/k_plan.h"

namespace qlayer::cuda {
namespace {

class CudaGemvLinear final : public CudaLinearKernel {
 public:
  CudaGemvLinear(int bits, std::string name) : bits_(bits), name_(std::move(name)) {}

  absl::string_view name() const override { return name_; }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    if (WeightBits(w.wtype) != bits_) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, " takes ", bits_, "-bit weights, not ", WeightTypeName(w.wtype)));
    }
    QLAYER_RETURN_IF_ERROR(w.Validate());
    QLAYER_RETURN_IF_ERROR(CheckCudaDevice(device));
    QLAYER_ASSIGN_OR_RETURN(PermutedKPlan plan, PlanPermutedK(w));
    if (plan.Kp > GemvMaxKp(bits_)) {
      return absl::InvalidArgumentError(absl::StrCat(name_, ": K'=", plan.Kp, " (K=", w.K,
                                                     ") is longer than ", GemvMaxKp(bits_)));
    }
    QLAYER_ASSIGN_OR_RETURN(DeviceFacts facts, GetDeviceFacts(device.index));
    sms_ = facts.sms;
    device_ = device.index;
    K_ = w.K;
    N_ = w.N;
    QLAYER_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");

    GemvLayoutArgs& l = layout_;
    l.K = static_cast<int>(w.K);
    l.N = static_cast<int>(w.N);
    l.Kp = static_cast<int>(plan.Kp);
    l.bits = bits_;
    l.geff = static_cast<int>(plan.geff);
    l.ngroups = static_cast<int>(plan.ngroups);
    l.scale_kind = ScaleKindOf(w.scales.dtype());
    l.zeros = HasZeroPoints(w.wtype);
    l.sym_zero = SymmetricZero(w.wtype);

    DeviceBuffer qweight, scales, zeros;
    QLAYER_RETURN_IF_ERROR(qweight.Upload(w.qweight.data(), w.qweight.nbytes()));
    QLAYER_RETURN_IF_ERROR(scales.Upload(w.scales.data(), w.scales.nbytes()));
    if (l.zeros) QLAYER_RETURN_IF_ERROR(zeros.Upload(w.zeros.data(), w.zeros.nbytes()));
    if (!plan.perm.empty()) {
      QLAYER_RETURN_IF_ERROR(perm_.Upload(plan.perm.data(), plan.perm.size() * sizeof(int32_t)));
    }
    const size_t rows = static_cast<size_t>(l.N);
    const size_t groups = rows * static_cast<size_t>(l.ngroups);
    QLAYER_RETURN_IF_ERROR(packed_.Grow(rows * static_cast<size_t>(l.Kp) * bits_ / 8));
    QLAYER_RETURN_IF_ERROR(scales_t_.Grow(groups * (l.scale_kind == kScaleF32 ? 4 : 2)));
    if (l.zeros) QLAYER_RETURN_IF_ERROR(zeros_t_.Grow(groups * sizeof(uint16_t)));
    QLAYER_CUDA_RETURN_IF_ERROR(
        LaunchRepackGemv(l, qweight.as<int32_t>(), perm_.as<int32_t>(), scales.get(),
                         zeros.as<int32_t>(), packed_.as<uint32_t>(), scales_t_.get(),
                         zeros_t_.as<uint16_t>(), 0),
        "repacking the weight");
    QLAYER_RETURN_IF_ERROR(UploadBiasAsFloat(w, bias_));
    QLAYER_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize(), absl::StrCat(name_, " Prepare"));
    return absl::OkStatus();
  }

  absl::Status ForwardDevice(const void* x, void* y, int64_t M, DType dtype, Worker& worker,
                             cudaStream_t stream) const override {
    if (dtype != DType::kF16 && dtype != DType::kBF16) {
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", DTypeName(dtype), " is not supported; supported: f16, bf16"));
    }
    const GemvLayoutArgs& l = layout_;
    QLAYER_ASSIGN_OR_RETURN(GatheredInput in,
                            GatherForPermutedK(x, M, l.K, l.Kp, perm_, worker, stream));
    GemvArgs a;
    a.w = packed_.as<uint32_t>();
    a.scales = scales_t_.get();
    a.zeros = zeros_t_.as<uint16_t>();
    a.x = in.x;
    a.y = y;
    a.bias = bias_.as<float>();
    a.M = static_cast<int>(M);
    a.ldx = in.ld;
    a.ldy = l.N;
    a.layout = l;
    a.bf16 = dtype == DType::kBF16;
    QLAYER_CUDA_RETURN_IF_ERROR(LaunchGemv(a, sms_, stream), absl::StrCat("GEMV, M=", M));
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    return static_cast<int64_t>(packed_.bytes() + scales_t_.bytes() + zeros_t_.bytes() +
                                perm_.bytes() + bias_.bytes());
  }

 private:
  int bits_;
  std::string name_;
  int sms_ = 1;
  GemvLayoutArgs layout_;
  DeviceBuffer packed_, scales_t_, zeros_t_, perm_, bias_;
};

absl::Status CanImplementGemv(int bits, absl::string_view name, const LinearSpec& spec,
                              const Device& device) {
  QLAYER_RETURN_IF_ERROR(CheckDecodeKernelSpec(bits, name, spec, device));
  // Act-order may pad each group (PlanPermutedK allows up to 2K + 64 rows).
  const int64_t longest = spec.g_idx ? 2 * spec.K + 64 : (spec.K + 63) / 64 * 64;
  if (longest > GemvMaxKp(bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat("K=", spec.K, spec.g_idx ? " with act-order" : "", " is longer than ", name,
                     " takes (", GemvMaxKp(bits), " rows after padding)"));
  }
  return absl::OkStatus();
}

KernelFactory GemvFactory(int bits, std::string name, int priority) {
  KernelFactory f;
  f.name = name;
  f.backend = Backend::kCuda;
  f.priority = priority;
  // M = 1 and 2 share one pass over the weight (gemv_decode.cu); beyond that
  // the fp32 FMAs per weight byte grow with M and the mma kernel takes over.
  f.max_m = 2;
  f.can_implement = [bits, name](const LinearSpec& spec, const Device& device) {
    return CanImplementGemv(bits, name, spec, device);
  };
  f.create = [bits, name]() -> std::unique_ptr<LinearKernel> {
    return std::make_unique<CudaGemvLinear>(bits, name);
  };
  return f;
}

}  // namespace
}  // namespace qlayer::cuda

namespace qlayer {

// Ranked after the mma kernels (10/11), whose M <= 32 range covers the
// GEMV's, so selection never picks it: on the H100 it measured slower at every
// shape (8192x28672 M=1: 104 us vs mma's 54.5; BENCHMARKS.md). Registers alone
// keep too few bytes in flight per SM; a cp.async ring in shared memory is the
// next step. It stays correct, tested and selectable with --kernel.
KernelFactory CudaGemvW4A16KernelFactory() { return cuda::GemvFactory(4, "cuda_gemv_w4a16", 15); }
KernelFactory CudaGemvW8A16KernelFactory() { return cuda::GemvFactory(8, "cuda_gemv_w8a16", 16); }

}  // namespace qlayer
