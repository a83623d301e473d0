// MoE experts-kernel registry and selection, the MoE twin of
// kernels/core/registry.cc: candidates in priority order per backend, every
// rejection kept with its reason.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {

MoEKernelFactory CpuMoeGroupedKernelFactory();  // kernels/moe/cpu_moe_grouped.cc

namespace {

// The MoE kernels compiled into qlayer_kernels, listed explicitly so that
// static linking never drops one.
std::vector<MoEKernelFactory> BuiltinMoEKernels() {
  std::vector<MoEKernelFactory> v;
  v.push_back(CpuMoeGroupedKernelFactory());
  return v;
}

struct MoERegistry {
  absl::Mutex mu;
  std::vector<std::unique_ptr<MoEKernelFactory>> factories ABSL_GUARDED_BY(mu);
};

MoERegistry& GetMoERegistry() {
  static MoERegistry* r = [] {
    auto* reg = new MoERegistry;
    absl::MutexLock lock(&reg->mu);
    for (MoEKernelFactory& f : BuiltinMoEKernels()) {
      reg->factories.push_back(std::make_unique<MoEKernelFactory>(std::move(f)));
    }
    return reg;
  }();
  return *r;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

void RegisterMoEKernel(MoEKernelFactory factory) {
  MoERegistry& r = GetMoERegistry();
  absl::MutexLock lock(&r.mu);
  r.factories.push_back(std::make_unique<MoEKernelFactory>(std::move(factory)));
}

std::vector<const MoEKernelFactory*> RegisteredMoEKernels() {
  MoERegistry& r = GetMoERegistry();
  std::vector<const MoEKernelFactory*> out;
  {
    absl::MutexLock lock(&r.mu);
    for (const auto& f : r.factories) out.push_back(f.get());
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const MoEKernelFactory* a, const MoEKernelFactory* b) {
                     if (a->backend != b->backend) return a->backend < b->backend;
                     if (a->priority != b->priority) return a->priority < b->priority;
                     return a->name < b->name;
                   });
  return out;
}

const MoEKernelFactory* FindMoEKernel(absl::string_view name) {
  for (const MoEKernelFactory* f : RegisteredMoEKernels()) {
    if (f->name == name) return f;
  }
  return nullptr;
}

absl::StatusOr<MoESelection> SelectMoEKernel(const MoESpec& spec, const Device& device,
                                             const MoESelectOptions& options) {
  MoESelection sel;
  if (!options.forced_kernel.empty()) {
    const MoEKernelFactory* f = FindMoEKernel(options.forced_kernel);
    if (f == nullptr) {
      std::vector<std::string> names;
      for (const MoEKernelFactory* k : RegisteredMoEKernels()) names.push_back(k->name);
      return absl::NotFoundError(
          absl::StrCat("MoE kernel '", options.forced_kernel,
                       "' is not registered; known MoE kernels: ", absl::StrJoin(names, ", ")));
    }
    if (f->backend != device.backend) {
      return absl::FailedPreconditionError(
          absl::StrCat("MoE kernel '", f->name, "' runs on ", BackendName(f->backend),
                       ", but the block is placed on ", device.ToString()));
    }
    absl::Status why = f->can_implement(spec, device, options.linear);
    if (!why.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("MoE kernel '", f->name, "' cannot implement this block: ", why.message()));
    }
    sel.chosen = f;
    return sel;
  }
  for (const MoEKernelFactory* f : RegisteredMoEKernels()) {
    if (f->backend != device.backend) continue;
    if (Contains(options.disabled_kernels, f->name)) {
      sel.rejected.push_back({f->name, absl::CancelledError("disabled by --disabled_kernels")});
      continue;
    }
    absl::Status why = f->can_implement(spec, device, options.linear);
    if (!why.ok()) {
      sel.rejected.push_back({f->name, std::move(why)});
      continue;
    }
    sel.chosen = f;
    return sel;
  }
  std::vector<std::string> reasons;
  for (const Rejection& r : sel.rejected) {
    reasons.push_back(absl::StrCat(r.kernel, ": ", r.why.message()));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no ", BackendName(device.backend), " MoE kernel can implement E=", spec.num_experts, " top-",
      spec.top_k, " H=", spec.hidden, " I=", spec.intermediate, " (",
      reasons.empty() ? "none registered" : absl::StrJoin(reasons, "; "), ")"));
}

absl::StatusOr<std::unique_ptr<MoEExpertsKernel>> CreateMoEKernel(const MoEBlock& block,
                                                                  const Device& device, DType act,
                                                                  const MoESelectOptions& options,
                                                                  MoESelection* selection) {
  QLAYER_RETURN_IF_ERROR(block.Validate());
  QLAYER_ASSIGN_OR_RETURN(MoESelection sel,
                          SelectMoEKernel(MoESpec::Of(block, act), device, options));
  std::unique_ptr<MoEExpertsKernel> kernel = sel.chosen->create({act, options.linear});
  absl::Status s = kernel->Prepare(block, device);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("MoE block ", block.name, ": kernel ",
                                               sel.chosen->name, " Prepare: ", s.message()));
  }
  if (selection != nullptr) *selection = std::move(sel);
  return kernel;
}

}  // namespace qlayer
