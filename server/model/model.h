// The hosted model: every selected layer of one checkpoint directory, loaded,
// placed on one device and prepared: linear layers and MoE blocks (a block is
// one named layer, its module path; the linear modules inside it -- experts,
// shared experts, router gate, shared_expert_gate -- are not also served as
// linear layers). Immutable after Load, so the service
// reads it from any thread without locks.
#ifndef QLAYER_SERVER_MODEL_MODEL_H_
#define QLAYER_SERVER_MODEL_MODEL_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/model/device_choice.h"
#include "server/model/loaded_linear.h"
#include "server/model/loaded_moe.h"

namespace qlayer {

struct ModelOptions {
  std::string dir;                            // --model
  std::string layers;                         // --layers glob ("" = all)
  std::string device = "auto";                // --device auto|cpu|cuda:N
  std::string forced_kernel;                  // --kernel NAME ("" = select)
  std::vector<std::string> disabled_kernels;  // --disabled-kernels a,b
  bool measure_crossover = true;              // --measure-crossover
};

class Model {
 public:
  // Opens the checkpoint, lists the linear layers and MoE blocks matching
  // the glob, decodes each, selects and prepares its kernels. Fails on the first layer that cannot
  // be served (the message names it), and with NOT_FOUND when the glob
  // matches nothing (listing what the checkpoint has).
  static absl::StatusOr<std::unique_ptr<Model>> Load(const ModelOptions& options);
  // A model from already-built layers (tests, tools).
  static std::unique_ptr<Model> FromLayers(std::vector<std::unique_ptr<LoadedLinear>> layers,
                                           DeviceChoice device, std::string dir = "",
                                           std::vector<std::unique_ptr<LoadedMoE>> moes = {});

  const std::string& dir() const { return dir_; }
  const DeviceChoice& device() const { return device_; }
  // Sorted by name.
  const std::vector<std::unique_ptr<LoadedLinear>>& linears() const { return linears_; }
  // nullptr when no such layer is hosted.
  const LoadedLinear* FindLinear(absl::string_view name) const;
  // MoE blocks, sorted by name.
  const std::vector<std::unique_ptr<LoadedMoE>>& moes() const { return moes_; }
  const LoadedMoE* FindMoE(absl::string_view name) const;
  // Linear layers plus MoE blocks.
  size_t num_layers() const { return linears_.size() + moes_.size(); }

 private:
  Model() = default;

  std::string dir_;
  DeviceChoice device_;
  std::vector<std::unique_ptr<LoadedLinear>> linears_;
  std::map<std::string, const LoadedLinear*, std::less<>> by_name_;
  std::vector<std::unique_ptr<LoadedMoE>> moes_;
  std::map<std::string, const LoadedMoE*, std::less<>> moe_by_name_;
};

// "cpu_avx2_w4a16_gemv (rows <= 16), onednn_dense (rows > 16)"
std::string DescribeKernelChoice(const LoadedLinear& layer);

}  // namespace qlayer

#endif  // QLAYER_SERVER_MODEL_MODEL_H_
