// One hosted MoE block after load (issue 5): its router (gate copied to f32,
// correction bias), its prepared experts kernel with the selection's
// rejections, and the facts ListLayers / DescribeLayer report. Like
// LoadedLinear it keeps no reference to the checkpoint or to the canonical
// MoEBlock: the kernel repacked what it needs.
#ifndef QLAYER_SERVER_MODEL_LOADED_MOE_H_
#define QLAYER_SERVER_MODEL_LOADED_MOE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {

class LoadedMoE {
 public:
  // Builds the router, selects the experts kernel for `block` on `device`
  // (options: forced / disabled MoE kernels and the linear kernels inside)
  // and prepares it. `scheme` is the scheme of the experts (for listings).
  // Errors name the block.
  static absl::StatusOr<std::unique_ptr<LoadedMoE>> Create(const MoEBlock& block,
                                                           const LayerScheme& scheme,
                                                           const Device& device,
                                                           const MoESelectOptions& options);

  const std::string& name() const { return name_; }
  const std::string& kind() const { return kind_; }  // "moe"
  const std::string& family() const { return family_; }
  int64_t hidden() const { return router_.hidden(); }
  int64_t num_experts() const { return router_.num_experts(); }
  int top_k() const { return router_.config().top_k; }
  int64_t intermediate() const { return intermediate_; }
  int64_t shared_intermediate() const { return shared_intermediate_; }  // 0 = none
  bool shared_expert_gate() const { return shared_expert_gate_; }
  const MoERouter& router() const { return router_; }
  const MoEExpertsKernel& kernel() const { return *kernel_; }
  // The expert projections' LinearSpec (w13 of expert 0): weight type, group
  // size, zero points, act-order, scale dtype for listings.
  const LinearSpec& expert_spec() const { return expert_spec_; }
  const LayerScheme& scheme() const { return scheme_; }
  const Device& device() const { return device_; }
  // Canonical expert bytes (routed + shared) plus the router's f32 copy, and
  // what the prepared kernel holds.
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t prepared_bytes() const { return kernel_->prepared_bytes() + router_.bytes(); }
  const std::vector<Rejection>& rejected() const { return rejected_; }

 private:
  LoadedMoE() = default;

  std::string name_;
  std::string kind_ = "moe";
  std::string family_;
  int64_t intermediate_ = 0;
  int64_t shared_intermediate_ = 0;
  bool shared_expert_gate_ = false;
  MoERouter router_;
  std::unique_ptr<MoEExpertsKernel> kernel_;
  LinearSpec expert_spec_;
  LayerScheme scheme_;
  Device device_;
  int64_t weight_bytes_ = 0;
  std::vector<Rejection> rejected_;
};

// Splits the server's --kernel / --disabled-kernels between MoE kernels
// (names the MoE registry knows) and the linear kernels inside the experts.
MoESelectOptions MoEOptionsFrom(const SelectOptions& linear);

}  // namespace qlayer

#endif  // QLAYER_SERVER_MODEL_LOADED_MOE_H_
