// cuda_mma_w4a16 / cuda_mma_w8a16: the decode path (mma_decode.cu) behind the
// kernel contract. Prepare plans the permuted, padded K layout on the host
// (a few vectors of K ints), uploads the canonical tensors and repacks them on
// the GPU; Forward gathers activation columns when the layout needs it and
// launches the decode kernel per 64-row slice of M.
#include <algorithm>
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

class CudaMmaLinear final : public CudaLinearKernel {
 public:
  CudaMmaLinear(int bits, std::string name) : bits_(bits), name_(std::move(name)) {}

  absl::string_view name() const override { return name_; }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    if (WeightBits(w.wtype) != bits_) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, " takes ", bits_, "-bit weights, not ", WeightTypeName(w.wtype)));
    }
    QLAYER_RETURN_IF_ERROR(w.Validate());
    QLAYER_RETURN_IF_ERROR(CheckCudaDevice(device));
    QLAYER_ASSIGN_OR_RETURN(PermutedKPlan plan, PlanPermutedK(w));
    device_ = device.index;
    K_ = w.K;
    N_ = w.N;
    QLAYER_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_), "cudaSetDevice");

    MmaLayoutArgs& l = layout_;
    l.K = static_cast<int>(w.K);
    l.N = static_cast<int>(w.N);
    l.Kp = static_cast<int>(plan.Kp);
    l.NT = static_cast<int>((w.N + 15) / 16);
    l.C = l.Kp / 64;
    l.bits = bits_;
    l.geff = static_cast<int>(plan.geff);
    l.ngroups = static_cast<int>(plan.ngroups);
    l.scale_kind = ScaleKindOf(w.scales.dtype());
    l.zeros = HasZeroPoints(w.wtype);
    l.rec_bytes = 16 * (l.scale_kind == kScaleF32 ? 4 : 2) + (l.zeros ? 32 : 0);

    // Canonical tensors go up once, are repacked on the GPU, then freed.
    DeviceBuffer qweight, scales, zeros;
    QLAYER_RETURN_IF_ERROR(qweight.Upload(w.qweight.data(), w.qweight.nbytes()));
    QLAYER_RETURN_IF_ERROR(scales.Upload(w.scales.data(), w.scales.nbytes()));
    if (l.zeros) QLAYER_RETURN_IF_ERROR(zeros.Upload(w.zeros.data(), w.zeros.nbytes()));
    if (!plan.perm.empty()) {
      QLAYER_RETURN_IF_ERROR(perm_.Upload(plan.perm.data(), plan.perm.size() * sizeof(int32_t)));
    }
    QLAYER_RETURN_IF_ERROR(packed_.Grow(static_cast<size_t>(MmaPackedTiles(l)) * 512 *
                                        static_cast<size_t>(bits_ / 4)));
    QLAYER_RETURN_IF_ERROR(
        records_.Grow(static_cast<size_t>(l.ngroups) * l.NT * static_cast<size_t>(l.rec_bytes)));
    QLAYER_CUDA_RETURN_IF_ERROR(
        LaunchRepackMmaWeights(l, qweight.as<int32_t>(), perm_.as<int32_t>(), packed_.get(), 0),
        "repacking the weight");
    QLAYER_CUDA_RETURN_IF_ERROR(
        LaunchBuildMmaRecords(l, scales.get(), zeros.as<int32_t>(), records_.get(), 0),
        "building scale records");
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
    const MmaLayoutArgs& l = layout_;
    QLAYER_ASSIGN_OR_RETURN(GatheredInput in,
                            GatherForPermutedK(x, M, l.K, l.Kp, perm_, worker, stream));
    const int ws_ld = l.NT * 16;
    QLAYER_RETURN_IF_ERROR(worker.EnsureSplitK(
        static_cast<size_t>(64) * ws_ld, static_cast<size_t>(MmaDecodeCounters(l.NT)), stream));
    MmaDecodeArgs a;
    a.w = packed_.get();
    a.rec = records_.get();
    a.ws = worker.split_ws();
    a.counters = worker.split_counters();
    a.bias = bias_.as<float>();
    a.ldx = in.ld;
    a.ldy = l.N;
    a.ws_ld = ws_ld;
    a.layout = l;
    a.bf16 = dtype == DType::kBF16;
    for (int64_t m0 = 0; m0 < M; m0 += 64) {
      a.M = static_cast<int>(std::min<int64_t>(64, M - m0));
      a.x = static_cast<const uint16_t*>(in.x) + m0 * in.ld;
      a.y = static_cast<uint16_t*>(y) + m0 * l.N;
      QLAYER_CUDA_RETURN_IF_ERROR(LaunchMmaDecode(a, stream),
                                  absl::StrCat("decode kernel, rows ", m0, "..", m0 + a.M));
    }
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    return static_cast<int64_t>(packed_.bytes() + records_.bytes() + perm_.bytes() + bias_.bytes());
  }

 private:
  int bits_;
  std::string name_;
  MmaLayoutArgs layout_;
  DeviceBuffer packed_, records_, perm_, bias_;
};

absl::Status CanImplementMma(int bits, absl::string_view name, const LinearSpec& spec,
                             const Device& device) {
  return CheckDecodeKernelSpec(bits, name, spec, device);
}

KernelFactory MmaFactory(int bits, std::string name, int priority) {
  KernelFactory f;
  f.name = name;
  f.backend = Backend::kCuda;
  f.priority = priority;
  // Crossover with cuda_dequant_cublas measured on the H100 (BENCHMARKS.md,
  // "CUDA linear kernels"; K x N 4096x4096 ... 8192x28672, int4 group 128):
  // at M = 32 the decode kernel was faster on 3 of the 4 shapes (not on
  // 4096x4096), at M = 64 slower on all 4.
  f.max_m = 32;
  f.can_implement = [bits, name](const LinearSpec& spec, const Device& device) {
    return CanImplementMma(bits, name, spec, device);
  };
  f.create = [bits, name]() -> std::unique_ptr<LinearKernel> {
    return std::make_unique<CudaMmaLinear>(bits, name);
  };
  return f;
}

}  // namespace
}  // namespace qlayer::cuda

namespace qlayer {

KernelFactory CudaMmaW4A16KernelFactory() { return cuda::MmaFactory(4, "cuda_mma_w4a16", 10); }
KernelFactory CudaMmaW8A16KernelFactory() { return cuda::MmaFactory(8, "cuda_mma_w8a16", 11); }

}  // namespace qlayer
