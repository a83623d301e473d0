#include "server/model/loaded_linear.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/crossover.h"
#include "qlayer/kernels/status_macros.h"
#include "server/common/log.h"

namespace qlayer {
namespace {

// The activation dtype a layer expects most: its scale (or dense weight)
// dtype when that is a 16-bit float, the checkpoint's compute dtype in
// practice; f16 otherwise. Kernels accept every float activation; this only
// steers selection.
DType ExpectedActivation(const LinearSpec& spec) {
  return spec.scale_dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
}

// A kernel's name and, where it has one, its variant: "cuda_dequant_cublas
// (dense copy)". Layers whose kernels run differently time differently.
std::string KernelLabel(const LinearKernel& k) {
  const std::string v = k.variant();
  return v.empty() ? std::string(k.name()) : absl::StrCat(k.name(), " (", v, ")");
}

}  // namespace

absl::StatusOr<std::unique_ptr<LoadedLinear>> LoadedLinear::Create(std::string name,
                                                                   const QuantizedLinear& w,
                                                                   const LayerScheme& scheme,
                                                                   const Device& device,
                                                                   const SelectOptions& options) {
  auto layer = std::unique_ptr<LoadedLinear>(new LoadedLinear);
  layer->name_ = std::move(name);
  layer->scheme_ = scheme;
  layer->device_ = device;
  layer->spec_ = LinearSpec::Of(w, DType::kF16);
  layer->spec_.act = ExpectedActivation(layer->spec_);
  layer->weight_bytes_ = w.weight_bytes();

  absl::StatusOr<Selection> selection = SelectLinearKernel(layer->spec_, device, options);
  if (!selection.ok()) {
    return absl::Status(selection.status().code(),
                        absl::StrCat("layer ", layer->name_, ": ", selection.status().message()));
  }
  layer->rejected_ = std::move(selection->rejected);
  for (const ChosenKernel& chosen : selection->chosen) {
    PreparedKernel p;
    p.name = chosen.factory->name;
    p.max_m = chosen.max_m;
    p.kernel = chosen.factory->create();
    if (p.kernel == nullptr) {
      return absl::InternalError(
          absl::StrCat("layer ", layer->name_, ": kernel ", p.name, " factory returned null"));
    }
    absl::Status prepared = p.kernel->Prepare(w, device);
    if (!prepared.ok()) {
      return absl::Status(prepared.code(),
                          absl::StrCat("layer ", layer->name_, ": kernel ", p.name, " Prepare on ",
                                       device.ToString(), ": ", prepared.message()));
    }
    layer->kernels_.push_back(std::move(p));
  }
  if (layer->kernels_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("layer ", layer->name_, ": kernel selection chose nothing"));
  }
  if (options.measure_crossover) QLAYER_RETURN_IF_ERROR(layer->MeasureCrossovers());
  return layer;
}

absl::Status LoadedLinear::MeasureCrossovers() {
  int64_t lo = 0;  // rows served by the kernels before
  for (size_t i = 0; i + 1 < kernels_.size(); ++i) {
    PreparedKernel& small = kernels_[i];
    const PreparedKernel& large = kernels_[i + 1];
    if (small.max_m == kUnboundedM) break;
    // Up to the largest candidate, but not past a bounded next kernel.
    const int64_t hi = std::min<int64_t>(CrossoverCandidates().back(), large.max_m);
    absl::StatusOr<Crossover> c = MeasureCrossover(
        CrossoverKey(spec_, device_, KernelLabel(*small.kernel), KernelLabel(*large.kernel)),
        *small.kernel, *large.kernel, spec_.act, lo + 1, hi);
    if (absl::IsUnimplemented(c.status())) {
      lo = small.max_m;
      continue;  // a CPU kernel: its factory's crossover stands
    }
    if (!c.ok()) {
      return absl::Status(
          c.status().code(),
          absl::StrCat("layer ", name_, ": timing ", small.name, " against ", large.name, " on ",
                       device_.ToString(), ": ", c.status().message()));
    }
    if (!c->cached) {
      QLAYER_LOG(INFO) << "layer " << name_ << ": " << small.name << " serves rows <= " << c->max_m
                       << " (measured, " << small.name << " / " << large.name << ": " << c->detail
                       << ")";
    }
    small.max_m = c->max_m;
    small.measured = true;
    small.crossover_timings = c->detail;
    lo = small.max_m;
  }
  return absl::OkStatus();
}

int64_t LoadedLinear::prepared_bytes() const {
  int64_t total = 0;
  for (const PreparedKernel& k : kernels_) total += k.kernel->prepared_bytes();
  return total;
}

int LoadedLinear::KernelIndexFor(int64_t rows) const {
  for (size_t i = 0; i < kernels_.size(); ++i) {
    if (rows <= kernels_[i].max_m) return static_cast<int>(i);
  }
  return static_cast<int>(kernels_.size()) - 1;
}

}  // namespace qlayer
