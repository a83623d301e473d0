// cpu_reference: the plain, obviously-correct CPU kernel, and the last-resort
// candidate for any valid layer. It keeps the canonical weight as given and
// dequantizes one output column at a time through QuantizedLinear's own
// accessors (q, zero, group_of), accumulating in f32. No layout tricks: it is
// the scalar twin the ISA kernels are compared with and the fallback when
// nothing faster can implement a layer.
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_convert.h"
#include "cpu/cpu_spec_checks.h"
#include "qlayer/kernels/registry.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

class ReferenceLinearKernel final : public LinearKernel {
 public:
  absl::string_view name() const override { return "cpu_reference"; }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
    QLAYER_RETURN_IF_ERROR(w.Validate());
    w_ = w.Clone();
    return absl::OkStatus();
  }

  absl::Status Forward(const ConstTensorView& x, const TensorView& y,
                       ExecContext& /*ctx*/) const override {
    if (w_.K == 0) return absl::FailedPreconditionError("cpu_reference: Forward before Prepare");
    QLAYER_RETURN_IF_ERROR(CheckForwardArgs(x, y, w_.K, w_.N));
    const int64_t M = x.dim(0), K = w_.K, N = w_.N;
    if (M == 0) return absl::OkStatus();
    std::vector<float> xf(static_cast<size_t>(M * K));
    ConvertToF32(x.data, x.dtype, M * K, xf.data());
    std::vector<float> col(static_cast<size_t>(K));
    std::vector<float> yf(static_cast<size_t>(M * N));
    for (int64_t n = 0; n < N; ++n) {
      // (q - z) * s is exact in f32 for f16/bf16 scales (at most 9 + 11
      // significant bits); only f32 scales round, once.
      for (int64_t k = 0; k < K; ++k) col[k] = static_cast<float>(DequantF32(k, n));
      const float b = w_.bias.empty() ? 0.0f : LoadAsFloat(w_.bias.data(), w_.bias.dtype(), n);
      for (int64_t m = 0; m < M; ++m) {
        const float* xr = xf.data() + m * K;
        float acc = 0.0f;
        for (int64_t k = 0; k < K; ++k) acc += xr[k] * col[k];
        yf[m * N + n] = acc + b;
      }
    }
    ConvertFromF32(yf.data(), M * N, y.dtype, y.data);
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    return w_.weight_bytes() + static_cast<int64_t>(w_.g_idx.nbytes() + w_.bias.nbytes());
  }

 private:
  float DequantF32(int64_t k, int64_t n) const {
    if (w_.wtype == WeightType::kDense) {
      return LoadAsFloat(w_.dense.data(), w_.dense.dtype(), n * w_.K + k);
    }
    const int64_t g = w_.group_of(k);
    return static_cast<float>(w_.q(k, n) - w_.zero(g, n)) *
           LoadAsFloat(w_.scales.data(), w_.scales.dtype(), g * w_.N + n);
  }

  QuantizedLinear w_;
};

absl::Status ReferenceCanImplement(const LinearSpec& spec, const Device& device) {
  QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
  return CheckValidLinearSpec(spec);
}

}  // namespace

KernelFactory CpuReferenceKernelFactory() {
  KernelFactory f;
  f.name = "cpu_reference";
  f.backend = Backend::kCpu;
  // Last resort: slow (one scalar dequant per weight per call), but it
  // implements every valid layer, so selection never fails on the CPU.
  f.priority = 1000;
  f.max_m = kUnboundedM;
  f.can_implement = ReferenceCanImplement;
  f.create = [] { return std::make_unique<ReferenceLinearKernel>(); };
  return f;
}

}  // namespace qlayer
