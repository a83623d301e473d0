#include "qlayer/kernels/registry.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace qlayer {

// Defined in builtin_kernels.cc: every kernel compiled into qlayer_kernels.
std::vector<KernelFactory> BuiltinLinearKernels();

namespace {

struct Registry {
  absl::Mutex mu;
  // unique_ptr keeps factory addresses stable for Selection.
  std::vector<std::unique_ptr<KernelFactory>> factories ABSL_GUARDED_BY(mu);
};

Registry& GetRegistry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    absl::MutexLock lock(&reg->mu);
    for (KernelFactory& f : BuiltinLinearKernels()) {
      reg->factories.push_back(std::make_unique<KernelFactory>(std::move(f)));
    }
    return reg;
  }();
  return *r;
}

}  // namespace

void RegisterLinearKernel(KernelFactory factory) {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  r.factories.push_back(std::make_unique<KernelFactory>(std::move(factory)));
}

std::vector<const KernelFactory*> RegisteredLinearKernels() {
  Registry& r = GetRegistry();
  std::vector<const KernelFactory*> out;
  {
    absl::MutexLock lock(&r.mu);
    for (const auto& f : r.factories) out.push_back(f.get());
  }
  std::stable_sort(out.begin(), out.end(), [](const KernelFactory* a, const KernelFactory* b) {
    if (a->backend != b->backend) return a->backend < b->backend;
    if (a->priority != b->priority) return a->priority < b->priority;
    return a->name < b->name;
  });
  return out;
}

const KernelFactory* FindLinearKernel(absl::string_view name) {
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    if (f->name == name) return f;
  }
  return nullptr;
}

absl::StatusOr<Selection> SelectLinearKernel(const LinearSpec& spec, const Device& device,
                                             const SelectOptions& options) {
  Selection sel;
  if (!options.forced_kernel.empty()) {
    const KernelFactory* f = FindLinearKernel(options.forced_kernel);
    if (f == nullptr) {
      std::vector<std::string> names;
      for (const KernelFactory* k : RegisteredLinearKernels()) names.push_back(k->name);
      return absl::NotFoundError(absl::StrCat("kernel '", options.forced_kernel,
                                              "' is not registered; known kernels: ",
                                              absl::StrJoin(names, ", ")));
    }
    if (f->backend != device.backend) {
      return absl::FailedPreconditionError(
          absl::StrCat("kernel '", f->name, "' runs on ", BackendName(f->backend),
                       ", but the layer is placed on ", device.ToString()));
    }
    absl::Status why = f->can_implement(spec, device);
    if (!why.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("kernel '", f->name, "' cannot implement this layer: ", why.message()));
    }
    sel.chosen.push_back({f, kUnboundedM});
    return sel;
  }

  int64_t covered = 0;
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    if (f->backend != device.backend) continue;
    if (std::find(options.disabled_kernels.begin(), options.disabled_kernels.end(), f->name) !=
        options.disabled_kernels.end()) {
      sel.rejected.push_back({f->name, absl::CancelledError("disabled by --disabled_kernels")});
      continue;
    }
    if (covered == kUnboundedM) break;
    absl::Status why = f->can_implement(spec, device);
    if (!why.ok()) {
      sel.rejected.push_back({f->name, std::move(why)});
      continue;
    }
    if (f->max_m <= covered) continue;  // serves only rows already covered
    sel.chosen.push_back({f, f->max_m});
    covered = f->max_m;
  }
  if (covered != kUnboundedM) {
    std::vector<std::string> reasons;
    for (const Rejection& r : sel.rejected) {
      reasons.push_back(absl::StrCat(r.kernel, ": ", r.why.message()));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("no ", BackendName(device.backend), " kernel can implement K=", spec.K,
                     " N=", spec.N, " ", WeightTypeName(spec.wtype), " group ", spec.group_size,
                     " (", absl::StrJoin(reasons, "; "), ")"));
  }
  return sel;
}

}  // namespace qlayer
