// A small persistent thread pool for the CPU kernels: Run(n, f) calls f(t)
// for t in [0, n) on n threads, the caller being t = 0, and returns when all
// are done. Nothing is allocated per call.
//
// Workers spin briefly after each job (a decode step issues one call per
// layer back to back; waking a sleeping thread costs tens of microseconds,
// a noticeable share of a 100-300 us GEMV) and then sleep on a futex.
// One Run at a time: a concurrent caller does its whole job inline on its
// own thread rather than wait, so independent layers never deadlock.
#ifndef QLAYER_KERNELS_CPU_THREAD_POOL_H_
#define QLAYER_KERNELS_CPU_THREAD_POOL_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace qlayer {

class CpuThreadPool {
 public:
  // The process-wide pool: $QLAYER_CPU_THREADS threads if set, else one per
  // CPU this process may run on.
  static CpuThreadPool& Global();

  explicit CpuThreadPool(int num_threads);  // total, including the caller
  ~CpuThreadPool();
  CpuThreadPool(const CpuThreadPool&) = delete;
  CpuThreadPool& operator=(const CpuThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // f(t) for t in [0, n); n is clamped to [1, num_threads()].
  template <typename F>
  void Run(int n, F&& f) {
    using Fn = std::remove_reference_t<F>;
    RunImpl(
        n, [](void* p, int t) { (*static_cast<Fn*>(p))(t); },
        const_cast<void*>(static_cast<const void*>(&f)));
  }

 private:
  void RunImpl(int n, void (*fn)(void*, int), void* arg);
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mu_;
  // The job, published by a release increment of generation_.
  void (*fn_)(void*, int) = nullptr;
  void* arg_ = nullptr;
  int n_ = 0;
  std::atomic<uint32_t> generation_{0};
  std::atomic<int> pending_{0};  // workers that have not finished this job
  std::atomic<bool> stop_{false};
};

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_THREAD_POOL_H_
