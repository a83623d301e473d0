#include "qlayer/kernels/linear_kernel.h"

#include "absl/strings/str_cat.h"

namespace qlayer {

absl::string_view BackendName(Backend b) { return b == Backend::kCuda ? "cuda" : "cpu"; }

std::string Device::ToString() const {
  return backend == Backend::kCuda ? absl::StrCat("cuda:", index) : "cpu";
}

LinearSpec LinearSpec::Of(const QuantizedLinear& w, DType act) {
  LinearSpec s;
  s.K = w.K;
  s.N = w.N;
  s.wtype = w.wtype;
  s.group_size = w.group_size;
  s.zero_points = HasZeroPoints(w.wtype);
  s.g_idx = !w.g_idx.empty();
  s.bias = !w.bias.empty();
  s.scale_dtype = w.wtype == WeightType::kDense ? w.dense.dtype() : w.scales.dtype();
  s.act = act;
  return s;
}

absl::Status CheckForwardArgs(const ConstTensorView& x, const TensorView& y, int64_t K, int64_t N) {
  if (!IsFloatActivation(x.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input dtype ", DTypeName(x.dtype), " is not f16, bf16 or f32"));
  }
  if (x.shape.size() != 2 || x.shape[1] != K) {
    return absl::InvalidArgumentError(
        absl::StrCat("input shape ", ShapeToString(x.shape), " is not [M, K] with K=", K));
  }
  if (y.dtype != x.dtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output dtype ", DTypeName(y.dtype), " differs from input dtype ", DTypeName(x.dtype)));
  }
  if (y.shape.size() != 2 || y.shape[0] != x.shape[0] || y.shape[1] != N) {
    return absl::InvalidArgumentError(absl::StrCat("output shape ", ShapeToString(y.shape),
                                                   " is not [M, N] with M=", x.shape[0], " N=", N));
  }
  if ((x.data == nullptr && x.shape[0] > 0) || (y.data == nullptr && y.shape[0] > 0)) {
    return absl::InvalidArgumentError("null tensor data");
  }
  return absl::OkStatus();
}

}  // namespace qlayer

namespace qlayer {

absl::StatusOr<double> LinearKernel::MeasureForwardUs(int64_t /*M*/, DType /*act*/) const {
  return absl::UnimplementedError(absl::StrCat(name(), " offers no timing"));
}

}  // namespace qlayer
