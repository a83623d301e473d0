// One hosted linear layer after load: its canonical description, where it
// lives, and its prepared kernels. Holds no reference to the checkpoint (the
// kernels repacked what they need), so the mapping can be closed after load.
#ifndef QLAYER_SERVER_MODEL_LOADED_LINEAR_H_
#define QLAYER_SERVER_MODEL_LOADED_LINEAR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {

// A prepared kernel and the rows it serves: (previous max_m, max_m].
struct PreparedKernel {
  std::string name;
  int64_t max_m = kUnboundedM;
  // max_m was timed on the device at load (crossover.h), not the factory's.
  bool measured = false;
  std::string crossover_timings;  // the timings behind it, for DescribeLayer
  std::unique_ptr<LinearKernel> kernel;
};

class LoadedLinear {
 public:
  // Selects kernels for `w` on `device` (honouring options: forced kernel,
  // disabled kernels) and prepares each. Errors name the layer.
  static absl::StatusOr<std::unique_ptr<LoadedLinear>> Create(std::string name,
                                                              const QuantizedLinear& w,
                                                              const LayerScheme& scheme,
                                                              const Device& device,
                                                              const SelectOptions& options);

  const std::string& name() const { return name_; }
  // "linear"; MoE blocks are LoadedMoE (kind "moe").
  const std::string& kind() const { return kind_; }
  int64_t K() const { return spec_.K; }
  int64_t N() const { return spec_.N; }
  const LinearSpec& spec() const { return spec_; }
  const LayerScheme& scheme() const { return scheme_; }
  const Device& device() const { return device_; }
  // Canonical (decoded) weight bytes, and what the prepared kernels hold.
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t prepared_bytes() const;
  const std::vector<PreparedKernel>& kernels() const { return kernels_; }
  const std::vector<Rejection>& rejected() const { return rejected_; }

  // Index into kernels() of the kernel serving a batch of `rows` rows: the
  // first whose max_m >= rows (the last is unbounded).
  int KernelIndexFor(int64_t rows) const;

 private:
  LoadedLinear() = default;
  // Replaces each bounded kernel's max_m by the crossover with the next
  // kernel timed on the device, where both offer timing.
  absl::Status MeasureCrossovers();

  std::string name_;
  std::string kind_ = "linear";
  LinearSpec spec_;
  LayerScheme scheme_;
  Device device_;
  int64_t weight_bytes_ = 0;
  std::vector<PreparedKernel> kernels_;
  std::vector<Rejection> rejected_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_MODEL_LOADED_LINEAR_H_
