#include "server/model/model.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
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
      parts.push_back(absl::StrCat(k.name, " (rows <= ", k.max_m, ")"));
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

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelOptions& options) {
  QLAYER_ASSIGN_OR_RETURN(DeviceChoice device, ChooseDevice(options.device));
  QLAYER_LOG(INFO) << "device " << device.device.ToString() << " (" << device.why << ")";
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(options.dir));
  QLAYER_ASSIGN_OR_RETURN(QuantConfig config, QuantConfig::Parse(ckpt->config()));
  QLAYER_ASSIGN_OR_RETURN(std::vector<LinearLayerEntry> entries,
                          ListLinearLayers(*ckpt, config, options.layers));
  if (entries.empty()) {
    QLAYER_ASSIGN_OR_RETURN(std::vector<LinearLayerEntry> all, ListLinearLayers(*ckpt, config));
    std::vector<std::string> names;
    for (const LinearLayerEntry& e : all) names.push_back(e.name);
    return absl::NotFoundError(
        absl::StrCat("no linear layer in ", options.dir, " matches --layers '", options.layers,
                     "'; the checkpoint has ", names.size(), ": ", absl::StrJoin(names, ", ")));
  }
  SelectOptions select;
  select.forced_kernel = options.forced_kernel;
  select.disabled_kernels = options.disabled_kernels;
  if (!select.forced_kernel.empty()) {
    QLAYER_LOG(INFO) << "--kernel " << select.forced_kernel
                     << ": every layer uses it or load fails";
  }
  std::vector<std::unique_ptr<LoadedLinear>> layers;
  for (const LinearLayerEntry& entry : entries) {
    QLAYER_ASSIGN_OR_RETURN(QuantizedLinear w, LoadLinearLayer(*ckpt, entry));
    QLAYER_ASSIGN_OR_RETURN(
        std::unique_ptr<LoadedLinear> layer,
        LoadedLinear::Create(entry.name, w, entry.scheme, device.device, select));
    LogLayer(*layer);
    layers.push_back(std::move(layer));
  }
  return FromLayers(std::move(layers), std::move(device), options.dir);
}

std::unique_ptr<Model> Model::FromLayers(std::vector<std::unique_ptr<LoadedLinear>> layers,
                                         DeviceChoice device, std::string dir) {
  auto model = std::unique_ptr<Model>(new Model);
  model->dir_ = std::move(dir);
  model->device_ = std::move(device);
  model->linears_ = std::move(layers);
  std::sort(model->linears_.begin(), model->linears_.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  for (const auto& l : model->linears_) model->by_name_[l->name()] = l.get();
  return model;
}

const LoadedLinear* Model::FindLinear(absl::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

}  // namespace qlayer
