// The compute step of an MoE block's batch queue. Requests from any streams
// are batched like Forward's: their hidden states are concatenated along T,
// each request is routed on its own (the loaded gate, the caller's logits, or
// the caller's checked top-k), the routings are concatenated and the experts
// kernel runs once, so an expert chosen by several requests reads its weights
// once for all of them.
//
// Routing runs here, on the worker, not on the gRPC thread: the gate is a
// [T, E] x [E, H] product. A request whose routing fails (non-finite hidden
// states or logits) gets its own INVALID_ARGUMENT; its rows still ride the
// kernel call with zero weights on experts 0..k-1 and are dropped, and the
// rest of the batch is unaffected.
#ifndef QLAYER_SERVER_SCHEDULER_MOE_RUNNER_H_
#define QLAYER_SERVER_SCHEDULER_MOE_RUNNER_H_

#include <string>
#include <vector>

#include "qlayer/kernels/moe.h"
#include "server/model/loaded_moe.h"
#include "server/scheduler/batch_runner.h"

namespace qlayer {

// How one MoEForward request routes its tokens (checked by the service
// before it is queued; owned by the BatchItem's keepalive).
struct MoERouteInput {
  enum class Mode { kGate, kLogits, kTopk };
  Mode mode = Mode::kGate;
  ConstTensorView logits;  // kLogits: [M, E] f32 / f16 / bf16
  Routing topk;            // kTopk: ids and weights from MoERouter::CheckTopk
  bool return_routing = false;
};

class MoERunner final : public BatchRunner {
 public:
  explicit MoERunner(const LoadedMoE& moe) : moe_(moe) {}

  const std::string& name() const override { return moe_.name(); }
  int64_t in_features() const override { return moe_.hidden(); }
  int64_t out_features() const override { return moe_.hidden(); }
  void Run(const ConstTensorView& x, const std::vector<BatchItem>& items, const TensorView& y,
           ExecContext& ctx, BatchRun& run) const override;

 private:
  const LoadedMoE& moe_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SCHEDULER_MOE_RUNNER_H_
