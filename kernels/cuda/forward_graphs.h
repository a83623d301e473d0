// CUDA graphs of a kernel's host-tensor Forward: the input copy, the kernel
// launches of ForwardDevice and the output copy of one call, captured once
// and replayed as one cudaGraphLaunch. At decode sizes a call's GPU work is
// a few microseconds, and each of the three to five separate enqueues costs
// about as much on the host and leaves a gap on the GPU; a replay pays one.
//
// A graph bakes in every address it touches, so it is keyed by the worker
// (a unique id, not its address: a thread's worker dies with the thread),
// the stream, M, the dtype and the addresses of all the worker's buffers.
// Those buffers only grow, so a buffer at a key's address is at least as
// large as it was at capture. A key is captured on its second call (the
// first allocates whatever it needs, which a capture must not do) and only
// for M <= kMaxGraphRows, so a stream of prefill lengths never captures.
#ifndef QLAYER_KERNELS_CUDA_FORWARD_GRAPHS_H_
#define QLAYER_KERNELS_CUDA_FORWARD_GRAPHS_H_

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cuda/cuda_common.h"
#include "qlayer/kernels/dtype.h"

namespace qlayer::cuda {

inline constexpr int64_t kMaxGraphRows = 64;

// Process-wide switch (default on; QLAYER_CUDA_GRAPHS=0 turns it off at
// start): the benchmark measures Forward both ways in one run.
bool ForwardGraphsEnabled();
void SetForwardGraphsEnabled(bool on);

class ForwardGraphCache {
 public:
  struct Key {
    uint64_t worker = 0;
    cudaStream_t stream = nullptr;
    int64_t M = 0;
    DType dtype = DType::kF16;
    Worker::BufferAddresses buffers{};
    bool operator==(const Key& o) const {
      return worker == o.worker && stream == o.stream && M == o.M && dtype == o.dtype &&
             buffers == o.buffers;
    }
  };
  // Counts of what Run did, for tests and DescribeLayer-style reports.
  struct Stats {
    int64_t replays = 0, captures = 0, direct = 0, failed_captures = 0;
  };

  explicit ForwardGraphCache(size_t capacity = 64) : capacity_(capacity) {}
  ~ForwardGraphCache();
  ForwardGraphCache(const ForwardGraphCache&) = delete;
  ForwardGraphCache& operator=(const ForwardGraphCache&) = delete;

  // Enqueues the work of `enqueue` on `stream` for `key`: replays its graph,
  // or captures one (second sighting) and launches it, or calls `enqueue`
  // directly. A capture that fails (an operation that cannot be captured)
  // runs `enqueue` directly and the key is never captured again. Errors are
  // those of the enqueue or of the launch.
  absl::Status Run(const Key& key, const std::function<absl::Status()>& enqueue);
  Stats stats() const;
  // Drops every graph (after an error that may have left the worker's
  // scratch in an unknown state; they are captured again as used).
  void Clear();

 private:
  struct Exec;  // owns a cudaGraphExec_t
  struct Entry {
    Key key;
    std::shared_ptr<Exec> exec;  // null: seen once, or capture failed
    bool failed = false;
    uint64_t last_use = 0;
  };
  absl::Status Capture(const Key& key, const std::function<absl::Status()>& enqueue);

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::vector<Entry> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t clock_ ABSL_GUARDED_BY(mu_) = 0;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_FORWARD_GRAPHS_H_
