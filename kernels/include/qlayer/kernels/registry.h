// Kernel registry and selection (vLLM's choose_mp_linear_kernel with the
// reasons kept): candidates in priority order per backend; each says
// CanImplement(spec, device) -> OK or the reason. A layer may hold several
// kernels, each serving rows up to its max_m (a bandwidth-bound decode kernel
// for small M, a dense GEMM path for large M).
#ifndef QLAYER_KERNELS_REGISTRY_H_
#define QLAYER_KERNELS_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/linear_kernel.h"

namespace qlayer {

inline constexpr int64_t kUnboundedM = std::numeric_limits<int64_t>::max();

struct KernelFactory {
  std::string name;
  Backend backend = Backend::kCpu;
  int priority = 0;  // lower runs first
  // Largest M this kernel should serve when a later candidate can take
  // larger M (measured crossover); kUnboundedM for a GEMM path.
  int64_t max_m = kUnboundedM;
  std::function<absl::Status(const LinearSpec&, const Device&)> can_implement;
  std::function<std::unique_ptr<LinearKernel>()> create;
};

struct Rejection {
  std::string kernel;
  absl::Status why;
};

// One chosen kernel and the rows it serves: (previous max_m, max_m].
struct ChosenKernel {
  const KernelFactory* factory = nullptr;
  int64_t max_m = kUnboundedM;
};

struct Selection {
  std::vector<ChosenKernel> chosen;  // ascending max_m, last is unbounded
  std::vector<Rejection> rejected;   // every candidate that could not
};

struct SelectOptions {
  std::string forced_kernel;                  // --kernel NAME: only this one
  std::vector<std::string> disabled_kernels;  // --disabled_kernels
  // Time the hand-over between a layer's kernels on its device at load
  // (crossover.h) where the kernels offer timing; else keep the factories'
  // max_m. --measure_crossover.
  bool measure_crossover = true;
};

// Adds a factory to the process-wide registry. The built-in kernels are
// listed once in kernels/core/builtin_kernels.cc (explicitly, so a static
// library never drops one); tests may register more.
void RegisterLinearKernel(KernelFactory factory);
// All registered factories, sorted by (backend, priority, name).
std::vector<const KernelFactory*> RegisteredLinearKernels();
const KernelFactory* FindLinearKernel(absl::string_view name);

// Walks candidates of the device's backend in priority order. A candidate is
// chosen when it can implement the spec and serves rows beyond those already
// covered; selection stops once M is covered without bound. Fails, listing
// every rejection, when nothing covers all M, or when a forced kernel cannot
// implement the layer.
absl::StatusOr<Selection> SelectLinearKernel(const LinearSpec& spec, const Device& device,
                                             const SelectOptions& options = {});

}  // namespace qlayer

#endif  // QLAYER_KERNELS_REGISTRY_H_
