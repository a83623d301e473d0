#include "cuda/forward_graphs.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace qlayer::cuda {
namespace {

std::atomic<bool>& GraphsSwitch() {
  static std::atomic<bool> on = [] {
    const char* e = std::getenv("QLAYER_CUDA_GRAPHS");
    return !(e != nullptr && std::strcmp(e, "0") == 0);
  }();
  return on;
}

}  // namespace

bool ForwardGraphsEnabled() { return GraphsSwitch().load(std::memory_order_relaxed); }
void SetForwardGraphsEnabled(bool on) { GraphsSwitch().store(on, std::memory_order_relaxed); }

struct ForwardGraphCache::Exec {
  cudaGraphExec_t exec = nullptr;
  ~Exec() {
    // A graph still running is freed when it completes (cudaGraphExecDestroy).
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
};

ForwardGraphCache::~ForwardGraphCache() = default;

absl::Status ForwardGraphCache::Run(const Key& key, const std::function<absl::Status()>& enqueue) {
  std::shared_ptr<Exec> exec;
  bool capture = false;
  {
    absl::MutexLock lock(&mu_);
    ++clock_;
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.key == key; });
    if (it != entries_.end()) {
      it->last_use = clock_;
      exec = it->exec;
      capture = exec == nullptr && !it->failed;
    } else {
      if (entries_.size() >= capacity_) {
        // Evict the least recently used; a graph in flight outlives its entry
        // (shared_ptr here, cudaGraphExecDestroy's deferral on the GPU).
        auto lru = std::min_element(
            entries_.begin(), entries_.end(),
            [](const Entry& a, const Entry& b) { return a.last_use < b.last_use; });
        *lru = std::move(entries_.back());
        entries_.pop_back();
      }
      entries_.push_back(Entry{key, nullptr, false, clock_});
    }
    if (exec != nullptr) {
      ++stats_.replays;
    } else if (!capture) {
      ++stats_.direct;
    }
  }
  if (exec != nullptr) {
    return CudaStatus(cudaGraphLaunch(exec->exec, key.stream), "launching the Forward graph");
  }
  if (capture) return Capture(key, enqueue);
  return enqueue();
}

absl::Status ForwardGraphCache::Capture(const Key& key,
                                        const std::function<absl::Status()>& enqueue) {
  // Thread-local mode: only this thread's unsafe calls (an allocation, a
  // synchronisation) invalidate the capture; other workers run on.
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaStreamBeginCapture(key.stream, cudaStreamCaptureModeThreadLocal);
  absl::Status enqueued = absl::OkStatus();
  if (err == cudaSuccess) {
    enqueued = enqueue();
    err = cudaStreamEndCapture(key.stream, &graph);
    if (err == cudaSuccess && enqueued.ok()) {
      err = cudaGraphInstantiate(&exec, graph, 0);
    }
  }
  if (graph != nullptr) cudaGraphDestroy(graph);
  const bool ok = err == cudaSuccess && enqueued.ok() && exec != nullptr;
  if (!ok) {
    (void)cudaGetLastError();  // the capture's error is not the call's
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
  auto owned = std::make_shared<Exec>();
  owned->exec = ok ? exec : nullptr;
  {
    absl::MutexLock lock(&mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.key == key; });
    if (it != entries_.end()) {
      if (ok) {
        it->exec = owned;
      } else {
        it->failed = true;
      }
    }
    if (ok) {
      ++stats_.captures;
    } else {
      ++stats_.failed_captures;
    }
  }
  // Nothing of a failed capture ran: do the call directly.
  if (!ok) return enqueue();
  return CudaStatus(cudaGraphLaunch(exec, key.stream), "launching the Forward graph");
}

ForwardGraphCache::Stats ForwardGraphCache::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void ForwardGraphCache::Clear() {
  absl::MutexLock lock(&mu_);
  entries_.clear();
}

}  // namespace qlayer::cuda
