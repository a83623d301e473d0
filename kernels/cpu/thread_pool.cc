#include "cpu/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace qlayer {
namespace {

// How long a worker spins for the next job before sleeping, and how long
// the caller spins for workers before sleeping. Measured: a futex wake-up
// costs 20-60 us on this VM; a decode step's next layer follows within that.
constexpr auto kSpinFor = std::chrono::microseconds(200);

inline void CpuRelax() { __builtin_ia32_pause(); }

int DefaultThreads() {
  if (const char* env = std::getenv("QLAYER_CPU_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// Spins until pred() holds or kSpinFor has passed; returns pred(). `yield`:
// give the CPU to any other runnable thread between checks. An idle worker
// waiting for the next job yields: on a machine with as many busy threads as
// cores (gRPC's, a co-located client's), a pure spin holds a core that a
// just-woken thread needs, and the scheduler does not preempt a spinner that
// has run less than its slice, so that thread waits out the spin (measured:
// +200 us of transport per request on 2 cores). A caller waiting for the
// other parts of its own job does not: those finish within microseconds.
template <typename Pred>
bool SpinUntil(Pred pred, bool yield) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinFor;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    CpuRelax();
    if (yield && (i & 15) == 15) sched_yield();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

}  // namespace

CpuThreadPool& CpuThreadPool::Global() {
  static CpuThreadPool* pool = new CpuThreadPool(DefaultThreads());
  return *pool;
}

CpuThreadPool::CpuThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(static_cast<size_t>(num_threads_ - 1));
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

CpuThreadPool::~CpuThreadPool() {
  stop_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void CpuThreadPool::RunImpl(int n, void (*fn)(void*, int), void* arg) {
  n = std::clamp(n, 1, num_threads_);
  std::unique_lock<std::mutex> lock(run_mu_, std::try_to_lock);
  if (n == 1 || !lock.owns_lock()) {
    for (int t = 0; t < n; ++t) fn(arg, t);  // busy (or nothing to share): inline
    return;
  }
  fn_ = fn;
  arg_ = arg;
  n_ = n;
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  fn(arg, 0);
  if (!SpinUntil([&] { return pending_.load(std::memory_order_acquire) == 0; }, false)) {
    for (int p = pending_.load(std::memory_order_acquire); p != 0;
         p = pending_.load(std::memory_order_acquire)) {
      pending_.wait(p, std::memory_order_acquire);
    }
  }
}

void CpuThreadPool::WorkerLoop(int index) {
  uint32_t seen = 0;
  for (;;) {
    if (!SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; }, true)) {
      generation_.wait(seen, std::memory_order_acquire);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    if (index < n_) fn_(arg_, index);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

}  // namespace qlayer
