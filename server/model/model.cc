#include "server/model/model.h"

#include <algorithm>
#include <new>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/moe_catalog.h"
#include "server/checkpoint/quant_config.h"
#include "server/common/log.h"

namespace qlayer {

std::string DescribeKernelChoice(const LoadedLinear& layer) {
  std::vector<std::string> parts;
  int64_t lo = 0;
  for (const PreparedKernel& k : layer.kernels()) {
    if (k.max_m == kUnboundedM) {
      parts.push_back(lo == 0 ? absl::StrCat(k.name, " (all rows)")
                              : absl::StrCat(k.name, " (rows > ", lo, ")"));
    } else {
      parts.push_back(
          absl::StrCat(k.name, " (rows <= ", k.max_m, k.measured ? ", measured" : "", ")"));
      lo = k.max_m;
    }
  }
  return absl::StrJoin(parts, ", ");
}

namespace {

void LogLayer(const LoadedLinear& layer) {
  const LinearSpec& s = layer.spec();
  QLAYER_LOG(INFO) << "layer " << layer.name() << ": " << layer.scheme().origin << " "
                   << WeightTypeName(s.wtype) << " group " << s.group_size << " K=" << s.K
                   << " N=" << s.N << " on " << layer.device().ToString() << ": kernels "
                   << DescribeKernelChoice(layer) << "; " << layer.weight_bytes()
                   << " weight bytes, " << layer.prepared_bytes() << " prepared";
  for (const Rejection& r : layer.rejected()) {
    QLAYER_LOG(INFO) << "layer " << layer.name() << ": rejected " << r.kernel << ": "
                     << r.why.message();
  }
}

void LogMoE(const LoadedMoE& moe) {
  const LinearSpec& s = moe.expert_spec();
  QLAYER_LOG(INFO) << "MoE block " << moe.name() << " (" << moe.family()
                   << "): " << moe.num_experts() << " experts " << moe.scheme().origin << " "
                   << WeightTypeName(s.wtype) << " group " << s.group_size << ", H=" << moe.hidden()
                   << " I=" << moe.intermediate()
                   << (moe.shared_intermediate() > 0
                           ? absl::StrCat(" shared I=", moe.shared_intermediate())
                           : std::string())
                   << ", router " << moe.router().config().ToString() << " on "
                   << moe.device().ToString() << ": " << moe.kernel().Describe() << "; "
                   << moe.weight_bytes() << " weight bytes, " << moe.prepared_bytes()
                   << " prepared";
  for (const Rejection& r : moe.rejected()) {
    QLAYER_LOG(INFO) << "MoE block " << moe.name() << ": rejected " << r.kernel << ": "
                     << r.why.message();
  }
}

// Decoding and repacking allocate; a checkpoint larger than the memory this
// process may use (RLIMIT_AS, overcommit off) makes an allocation throw
// std::bad_alloc, which would otherwise end the server with "terminate
// called" (SIGABRT) instead of naming what did not fit.
template <class Load>
auto CatchOutOfMemory(const std::string& what, int64_t prepared, Load load) -> decltype(load()) {
  try {
    return load();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory loading ", what, " (", prepared,
                     " bytes of prepared weights held by the layers before it): the checkpoint "
                     "needs more memory than this process may use"));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelOptions& options) {
  QLAYER_ASSIGN_OR_RETURN(DeviceChoice device, ChooseDevice(options.device));
  QLAYER_LOG(INFO) << "device " << device.device.ToString() << " (" << device.why << ")";
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(options.dir));
  QLAYER_ASSIGN_OR_RETURN(QuantConfig config, QuantConfig::Parse(ckpt->config()));
  // Modules inside MoE blocks are served by their block, not as linears.
  QLAYER_ASSIGN_OR_RETURN(auto members, MoEMemberModules(*ckpt));
  auto not_member = [&](std::vector<LinearLayerEntry> all) {
    std::vector<LinearLayerEntry> out;
    for (LinearLayerEntry& e : all) {
      if (!IsMoEMember(members, e.name)) out.push_back(std::move(e));
    }
    return out;
  };
  QLAYER_ASSIGN_OR_RETURN(std::vector<LinearLayerEntry> entries,
                          ListLinearLayers(*ckpt, config, options.layers));
  entries = not_member(std::move(entries));
  QLAYER_ASSIGN_OR_RETURN(std::vector<MoEBlockEntry> moe_entries,
                          ListMoEBlocks(*ckpt, config, options.layers));
  if (entries.empty() && moe_entries.empty()) {
    QLAYER_ASSIGN_OR_RETURN(std::vector<LinearLayerEntry> all, ListLinearLayers(*ckpt, config));
    std::vector<std::string> names;
    for (const LinearLayerEntry& e : not_member(std::move(all))) names.push_back(e.name);
    QLAYER_ASSIGN_OR_RETURN(std::vector<MoEBlockEntry> all_moe, ListMoEBlocks(*ckpt, config));
    for (const MoEBlockEntry& e : all_moe) names.push_back(absl::StrCat(e.name, " (MoE)"));
    return absl::NotFoundError(absl::StrCat("no layer in ", options.dir, " matches --layers '",
                                            options.layers, "'; the checkpoint has ", names.size(),
                                            ": ", absl::StrJoin(names, ", ")));
  }
  // --kernel names one kernel: an MoE kernel forces the experts kernels only,
  // a linear kernel every linear layer and the projections inside MoE blocks.
  const bool forced_moe =
      !options.forced_kernel.empty() && FindMoEKernel(options.forced_kernel) != nullptr;
  SelectOptions select;
  select.forced_kernel = forced_moe ? "" : options.forced_kernel;
  select.disabled_kernels = options.disabled_kernels;
  select.measure_crossover = options.measure_crossover;
  SelectOptions moe_select = select;
  moe_select.forced_kernel = options.forced_kernel;
  if (!options.forced_kernel.empty()) {
    QLAYER_LOG(INFO) << "--kernel " << options.forced_kernel
                     << (forced_moe ? ": every MoE block uses it or load fails"
                                    : ": every layer uses it or load fails");
  }
  int64_t prepared = 0;  // bytes held by the layers loaded so far
  std::vector<std::unique_ptr<LoadedLinear>> layers;
  for (const LinearLayerEntry& entry : entries) {
    QLAYER_ASSIGN_OR_RETURN(
        std::unique_ptr<LoadedLinear> layer,
        CatchOutOfMemory(
            absl::StrCat("layer ", entry.name), prepared,
            [&]() -> absl::StatusOr<std::unique_ptr<LoadedLinear>> {
              QLAYER_ASSIGN_OR_RETURN(QuantizedLinear w, LoadLinearLayer(*ckpt, entry));
              return LoadedLinear::Create(entry.name, w, entry.scheme, device.device, select);
            }));
    LogLayer(*layer);
    prepared += layer->prepared_bytes();
    layers.push_back(std::move(layer));
  }
  std::vector<std::unique_ptr<LoadedMoE>> moes;
  for (const MoEBlockEntry& entry : moe_entries) {
    QLAYER_ASSIGN_OR_RETURN(
        std::unique_ptr<LoadedMoE> moe,
        CatchOutOfMemory(absl::StrCat("MoE block ", entry.name), prepared,
                         [&]() -> absl::StatusOr<std::unique_ptr<LoadedMoE>> {
                           QLAYER_ASSIGN_OR_RETURN(MoEBlock block,
                                                   LoadMoEBlock(*ckpt, config, entry));
                           return LoadedMoE::Create(block, entry.scheme, device.device,
                                                    MoEOptionsFrom(moe_select));
                         }));
    LogMoE(*moe);
    prepared += moe->prepared_bytes();
    moes.push_back(std::move(moe));
  }
  return FromLayers(std::move(layers), std::move(device), options.dir, std::move(moes));
}

std::unique_ptr<Model> Model::FromLayers(std::vector<std::unique_ptr<LoadedLinear>> layers,
                                         DeviceChoice device, std::string dir,
                                         std::vector<std::unique_ptr<LoadedMoE>> moes) {
  auto model = std::unique_ptr<Model>(new Model);
  model->dir_ = std::move(dir);
  model->device_ = std::move(device);
  model->linears_ = std::move(layers);
  std::sort(model->linears_.begin(), model->linears_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  for (const auto& l : model->linears_) model->by_name_[l->name()] = l.get();
  model->moes_ = std::move(moes);
  std::sort(model->moes_.begin(), model->moes_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  for (const auto& m : model->moes_) model->moe_by_name_[m->name()] = m.get();
  return model;
}

const LoadedMoE* Model::FindMoE(absl::string_view name) const {
  auto it = moe_by_name_.find(name);
  return it == moe_by_name_.end() ? nullptr : it->second;
}

const LoadedLinear* Model::FindLinear(absl::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace qlayer
