#include "server/model/loaded_moe.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

MoESelectOptions MoEOptionsFrom(const SelectOptions& linear) {
  MoESelectOptions o;
  if (!linear.forced_kernel.empty()) {
    // --kernel names one kernel for every layer: an MoE kernel forces the
    // experts kernel, a linear kernel forces the projections inside it.
    if (FindMoEKernel(linear.forced_kernel) != nullptr) {
      o.forced_kernel = linear.forced_kernel;
    } else {
      o.linear.forced_kernel = linear.forced_kernel;
    }
  }
  for (const std::string& k : linear.disabled_kernels) {
    (FindMoEKernel(k) != nullptr ? o.disabled_kernels : o.linear.disabled_kernels).push_back(k);
  }
  return o;
}

absl::StatusOr<std::unique_ptr<LoadedMoE>> LoadedMoE::Create(const MoEBlock& block,
                                                             const LayerScheme& scheme,
                                                             const Device& device,
                                                             const MoESelectOptions& options) {
  auto moe = std::unique_ptr<LoadedMoE>(new LoadedMoE);
  moe->name_ = block.name;
  moe->family_ = block.family;
  moe->intermediate_ = block.intermediate;
  moe->shared_intermediate_ = block.shared.has_value() ? block.shared->intermediate() : 0;
  moe->shared_expert_gate_ = !block.shared_expert_gate.empty();
  moe->scheme_ = scheme;
  moe->device_ = device;
  moe->weight_bytes_ = block.weight_bytes() + static_cast<int64_t>(block.gate.nbytes()) +
                       static_cast<int64_t>(block.correction_bias.nbytes()) +
                       static_cast<int64_t>(block.shared_expert_gate.nbytes());
  if (block.experts.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("MoE block ", block.name, ": no experts"));
  }
  moe->expert_spec_ = LinearSpec::Of(block.experts[0].w13, DType::kF16);
  // The activation dtype the block expects most, as for linear layers: the
  // experts' bf16 scales say the model runs in bf16, anything else f16.
  const DType act = moe->expert_spec_.scale_dtype == DType::kBF16 ? DType::kBF16 : DType::kF16;
  moe->expert_spec_.act = act;

  absl::StatusOr<MoERouter> router = MoERouter::FromBlock(block);
  if (!router.ok()) {
    return absl::Status(router.status().code(),
                        absl::StrCat("MoE block ", block.name, ": ", router.status().message()));
  }
  moe->router_ = *std::move(router);
  MoESelection selection;
  absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> kernel =
      CreateMoEKernel(block, device, act, options, &selection);
  if (!kernel.ok()) {
    const absl::Status& s = kernel.status();
    if (absl::StrContains(s.message(), absl::StrCat("MoE block ", block.name))) return s;
    return absl::Status(s.code(), absl::StrCat("MoE block ", block.name, ": ", s.message()));
  }
  moe->kernel_ = *std::move(kernel);
  moe->rejected_ = std::move(selection.rejected);
  return moe;
}

}  // namespace qlayer
