#include "server/model/loaded_linear.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// The activation dtype a layer expects most: its scale (or dense weight)
// dtype when that is a 16-bit float, the checkpoint's compute dtype in
// practice; f16 otherwise. Kernels accept every float activation; this only
// steers selection.
DType ExpectedActivation(const LinearSpec& spec) {
  return spec.scale_dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
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
  return layer;
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
