#include "server/scheduler/batch_queue.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/scheduler/linear_runner.h"

namespace qlayer {
namespace {

// Kernels may use aligned vector loads on their input; a request's own bytes
// are used in place only when they are as aligned as a Tensor's storage.
constexpr uintptr_t kInputAlignment = 64;

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

}  // namespace

BatchQueue::BatchQueue(const BatchRunner& runner, WorkerPool& pool, BatchQueueOptions options,
                       BatchObserver* observer)
    : runner_(runner), pool_(pool), options_(options), observer_(observer) {}

BatchQueue::BatchQueue(const LoadedLinear& layer, WorkerPool& pool, BatchQueueOptions options,
                       BatchObserver* observer)
    : owned_runner_(std::make_unique<LinearRunner>(layer)),
      runner_(*owned_runner_),
      pool_(pool),
      options_(options),
      observer_(observer) {}

absl::Status BatchQueue::Submit(BatchItem item) {
  {
    absl::MutexLock lock(&mu_);
    if (closed_) {
      return absl::UnavailableError(
          absl::StrCat("layer ", runner_.name(), ": the server is shutting down"));
    }
    if (static_cast<int64_t>(queue_.size()) >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat("layer ", runner_.name(), ": queue full (",
                                                       queue_.size(), " requests waiting, limit ",
                                                       options_.max_queue, " = --max-queue)"));
    }
    queue_.push_back(std::move(item));
    // Under the lock: reported after the lock, a depth could overtake a newer
    // one (a Submit's 1 after the batch's 0) and stay on the gauge while idle.
    if (observer_ != nullptr) observer_->OnQueueDepth(static_cast<int64_t>(queue_.size()));
    MaybeScheduleLocked();
  }
  return absl::OkStatus();
}

void BatchQueue::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

int64_t BatchQueue::depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(queue_.size());
}

void BatchQueue::MaybeScheduleLocked() {
  if (queue_.empty() || inflight_ >= options_.max_inflight_batches) return;
  ++inflight_;
  pool_.Post([this] { RunBatch(); });
}

void BatchQueue::RunBatch() {
  std::vector<BatchItem> batch;
  std::vector<std::pair<BatchItem, absl::Status>> dropped;
  int64_t rows = 0;
  const absl::Time start = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    while (!queue_.empty()) {
      BatchItem& head = queue_.front();
      if (head.cancelled != nullptr && head.cancelled->load(std::memory_order_relaxed)) {
        dropped.emplace_back(std::move(head), absl::CancelledError("the stream was cancelled"));
        queue_.pop_front();
        continue;
      }
      if (head.deadline <= start) {
        dropped.emplace_back(std::move(head),
                             absl::DeadlineExceededError(absl::StrCat(
                                 "layer ", runner_.name(), ": deadline passed after ",
                                 Micros(start - head.arrival), " us in the queue; not computed")));
        queue_.pop_front();
        continue;
      }
      const int64_t m = head.input.dim(0);
      // Rows of one dtype go in one call; the first item always fits (a
      // request larger than max_batch_rows runs alone).
      if (!batch.empty() &&
          (rows + m > options_.max_batch_rows || head.input.dtype != batch[0].input.dtype)) {
        break;
      }
      rows += m;
      batch.push_back(std::move(head));
      queue_.pop_front();
    }
    if (observer_ != nullptr) observer_->OnQueueDepth(static_cast<int64_t>(queue_.size()));
    if (batch.empty()) {
      --inflight_;
      MaybeScheduleLocked();
    }
  }
  for (auto& [item, why] : dropped) {
    BatchResult r;
    r.status = std::move(why);
    r.queue_us = Micros(start - item.arrival);
    item.done(std::move(r));
  }
  if (batch.empty()) return;

  const DType dtype = batch[0].input.dtype;
  const int64_t K = runner_.in_features(), N = runner_.out_features();
  Tensor packed;
  ConstTensorView x;
  if (batch.size() == 1 &&
      reinterpret_cast<uintptr_t>(batch[0].input.data) % kInputAlignment == 0) {
    x = batch[0].input;
  } else {
    packed = Tensor::Zeros(dtype, {rows, K});
    char* dst = static_cast<char*>(packed.data());
    for (const BatchItem& item : batch) {
      std::memcpy(dst, item.input.data, item.input.nbytes());
      dst += item.input.nbytes();
    }
    x = packed.view();
  }
  auto y = std::make_shared<Tensor>(Tensor::Zeros(dtype, {rows, N}));
  ExecContext ctx;
  ctx.num_threads = options_.kernel_threads;
  BatchRun run;
  const absl::Time compute_start = absl::Now();
  runner_.Run(x, batch, y->mutable_view(), ctx, run);
  const absl::Duration compute = absl::Now() - compute_start;
  packed = Tensor();
  {
    // The next batch may start computing while this one is split and sent.
    absl::MutexLock lock(&mu_);
    --inflight_;
    MaybeScheduleLocked();
  }
  if (observer_ != nullptr) {
    observer_->OnBatch(run.kernel_index, rows, absl::ToDoubleSeconds(compute));
    if (!run.tokens_per_expert.empty()) observer_->OnExpertTokens(run.tokens_per_expert);
    for (const BatchItem& item : batch) {
      observer_->OnDequeued(absl::ToDoubleSeconds(compute_start - item.arrival));
    }
  }
  int64_t row = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    BatchItem& item = batch[i];
    const int64_t m = item.input.dim(0);
    BatchResult r;
    r.status = run.status.ok() && i < run.item_status.size() ? run.item_status[i] : run.status;
    r.kernel = run.kernel;
    r.queue_us = Micros(compute_start - item.arrival);
    r.compute_us = Micros(compute);
    r.batch_rows = rows;
    if (r.status.ok()) {
      r.output = {dtype, {m, N}, static_cast<const char*>(y->data()) + row * N * DTypeSize(dtype)};
      r.owner = y;
      r.kernels = run.kernels;
      if (i < run.routing.size()) r.routing = std::move(run.routing[i]);
    }
    row += m;
    item.keepalive.reset();
    item.done(std::move(r));
  }
}

}  // namespace qlayer
