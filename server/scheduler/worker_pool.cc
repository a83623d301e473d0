#include "server/scheduler/worker_pool.h"

#include <sched.h>

#include <chrono>
#include <utility>

namespace qlayer {

WorkerPool::WorkerPool(int num_threads, int spin_us) : spin_us_(spin_us > 0 ? spin_us : 0) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  if (num_threads <= 0) num_threads = 1;
  threads_.reserve(static_cast<size_t>(num_threads));
  for (int i = 0; i < num_threads; ++i) threads_.emplace_back([this] { Loop(); });
}

WorkerPool::~WorkerPool() { Shutdown(); }

void WorkerPool::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
  queued_.fetch_add(1, std::memory_order_release);
}

void WorkerPool::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void WorkerPool::Loop() {
  for (;;) {
    if (spin_us_ > 0 && queued_.load(std::memory_order_acquire) == 0) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
      while (queued_.load(std::memory_order_acquire) == 0 &&
             std::chrono::steady_clock::now() < until) {
        sched_yield();
      }
    }
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      // A worker leaves only when nothing is queued and no task is running
      // that could still post a follow-up (a batch queue posts its next batch
      // when one finishes).
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !tasks_.empty() || (stopping_ && running_ == 0);
      };
      mu_.Await(absl::Condition(&ready));
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      ++running_;
    }
    task();
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

}  // namespace qlayer
