#include "client/cli/reference.h"

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer {

absl::StatusOr<QuantizedLinear> LoadReferenceLayer(const std::string& model_dir,
                                                   const std::string& layer) {
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  QLAYER_ASSIGN_OR_RETURN(QuantConfig config, QuantConfig::Parse(ckpt->config()));
  // The name as the glob: only this layer's scheme is resolved, so another
  // layer the reader cannot decode does not get in the way.
  QLAYER_ASSIGN_OR_RETURN(std::vector<LinearLayerEntry> entries,
                          ListLinearLayers(*ckpt, config, layer));
  for (const LinearLayerEntry& e : entries) {
    if (e.name == layer) return LoadLinearLayer(*ckpt, e);
  }
  std::vector<std::string> names;
  auto all = ListLinearLayers(*ckpt, config);
  if (all.ok()) {
    for (const LinearLayerEntry& e : *all) names.push_back(e.name);
  }
  if (names.size() > 8) {
    names.resize(8);
    names.push_back("...");
  }
  return absl::NotFoundError(absl::StrCat("checkpoint ", model_dir, " has no linear layer '", layer,
                                          "' (it has ", absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<Tensor> ReferenceForward(const QuantizedLinear& w, const ConstTensorView& x) {
  const bool one_row = x.shape.size() == 1;
  if (!one_row && x.shape.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("input has shape ", ShapeToString(x.shape), ", expected [M, K] or [K]"));
  }
  const int64_t M = one_row ? 1 : x.dim(0);
  const int64_t K = x.shape.back();
  if (K != w.K) {
    return absl::InvalidArgumentError(
        absl::StrCat("input has K=", K, " but the layer has K=", w.K));
  }
  const int64_t N = w.N;
  std::vector<double> xd(static_cast<size_t>(M * K));
  for (int64_t i = 0; i < M * K; ++i) xd[static_cast<size_t>(i)] = LoadAsDouble(x.data, x.dtype, i);
  Tensor y = Tensor::Zeros(DType::kF64, one_row ? Shape{N} : Shape{M, N});
  double* yd = y.as<double>();
  // k outer, n inner: Dequant walks qweight/scales rows in memory order and
  // each weight is dequantized once for all M rows.
  std::vector<double> wrow(static_cast<size_t>(N));
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t n = 0; n < N; ++n) wrow[static_cast<size_t>(n)] = w.Dequant(k, n);
    for (int64_t m = 0; m < M; ++m) {
      const double xv = xd[static_cast<size_t>(m * K + k)];
      double* row = yd + m * N;
      for (int64_t n = 0; n < N; ++n) row[n] += xv * wrow[static_cast<size_t>(n)];
    }
  }
  if (!w.bias.empty()) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n)
        yd[m * N + n] += LoadAsDouble(w.bias.data(), w.bias.dtype(), n);
    }
  }
  return y;
}

double RelativeError(const ConstTensorView& out, const ConstTensorView& ref) {
  if (out.shape != ref.shape) return std::numeric_limits<double>::infinity();
  double err = 0, norm = 0;
  const int64_t n = ref.numel();
  for (int64_t i = 0; i < n; ++i) {
    const double o = LoadAsDouble(out.data, out.dtype, i);
    const double r = LoadAsDouble(ref.data, ref.dtype, i);
    if (!std::isfinite(o)) return std::numeric_limits<double>::infinity();
    err += (o - r) * (o - r);
    norm += r * r;
  }
  if (norm == 0) return err == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(err / norm);
}

}  // namespace qlayer
