// What a batch queue hands to its layer: the requests of one batch, their
// rows concatenated, and what comes back. A BatchRunner is the compute step
// of one hosted layer -- a linear layer's prepared kernels (linear_runner.h)
// or an MoE block's router and experts kernel (moe_runner.h) -- so queueing,
// deadlines, cancellation and splitting live once, in BatchQueue.
#ifndef QLAYER_SERVER_SCHEDULER_BATCH_RUNNER_H_
#define QLAYER_SERVER_SCHEDULER_BATCH_RUNNER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

struct MoERouteInput;  // moe_runner.h

struct BatchResult {
  absl::Status status;
  ConstTensorView output;               // this request's rows [M, N]
  std::shared_ptr<const Tensor> owner;  // keeps `output` alive
  absl::string_view kernel;             // kernel that ran ("" if none ran)
  int64_t queue_us = 0;                 // arrival -> its batch started
  int64_t compute_us = 0;               // the kernel call
  int64_t batch_rows = 0;               // rows in that kernel call
  // MoE: every kernel that ran for the batch (the experts kernel, then the
  // linear kernels inside it), and this request's routing when it asked for
  // it (MoERouteInput::return_routing).
  std::vector<std::string> kernels;
  Routing routing;
};

struct BatchItem {
  ConstTensorView input;                  // [M, K], f16 / bf16 / f32
  std::shared_ptr<const void> keepalive;  // owns input's bytes until done
  absl::Time arrival = absl::Now();
  absl::Time deadline = absl::InfiniteFuture();
  // Set by the stream when its caller goes away; may be null.
  std::shared_ptr<const std::atomic<bool>> cancelled;
  // MoE requests: how to route the rows (owned by keepalive); null otherwise.
  const MoERouteInput* moe = nullptr;
  // Called exactly once, on a worker thread, unless Submit() refused it.
  std::function<void(BatchResult)> done;
};

// What one Run did.
struct BatchRun {
  absl::Status status;                     // the whole batch failed (names layer and kernel)
  std::vector<absl::Status> item_status;   // per item; empty = every item as `status`
  int kernel_index = 0;                    // observer series (LoadedLinear::kernels() index)
  absl::string_view kernel;                // the kernel that ran
  std::vector<std::string> kernels;        // MoE: every kernel that ran
  std::vector<Routing> routing;            // MoE: per item, filled when asked for
  std::vector<int64_t> tokens_per_expert;  // MoE: [E] over the items that were computed
};

class BatchRunner {
 public:
  virtual ~BatchRunner() = default;
  virtual const std::string& name() const = 0;
  // Columns of the inputs (K, or H) and of the output (N, or H).
  virtual int64_t in_features() const = 0;
  virtual int64_t out_features() const = 0;
  // y [rows, out_features] of x's dtype from x [rows, in_features], whose
  // rows are `items`' inputs in order. Thread-safe; may run concurrently.
  virtual void Run(const ConstTensorView& x, const std::vector<BatchItem>& items,
                   const TensorView& y, ExecContext& ctx, BatchRun& run) const = 0;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_BATCH_RUNNER_H_
