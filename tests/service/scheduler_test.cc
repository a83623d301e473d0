// server/scheduler: batching across requests, the queue bound, deadlines and
// cancellation, draining. A test kernel ("test_gate") blocks each call until
// the test opens its gate, so the queue's state at each step is known
// exactly, and computes y[m][n] = x[m][n % K] + n so every answer can be
// traced back to its own input rows.
#include <atomic>
#include <memory>
#include <random>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/registry.h"
#include "server/scheduler/batch_queue.h"
#include "server/scheduler/worker_pool.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RandomInput;
using ::qlayer::testing::TestSeed;

constexpr int64_t kK = 16;
constexpr int64_t kN = 12;

// Shared between the test and the kernel instance it forces.
struct Gate {
  absl::Mutex mu;
  bool open ABSL_GUARDED_BY(mu) = false;
  int entered ABSL_GUARDED_BY(mu) = 0;
  std::vector<int64_t> calls ABSL_GUARDED_BY(mu);  // M of each Forward

  void Open() {
    absl::MutexLock l(&mu);
    open = true;
  }
  // Waits until `n` calls have entered Forward.
  void AwaitEntered(int n) {
    absl::MutexLock l(&mu);
    auto cond = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return entered >= n; };
    mu.Await(absl::Condition(&cond));
  }
  std::vector<int64_t> Calls() {
    absl::MutexLock l(&mu);
    return calls;
  }
};
Gate* g_gate = nullptr;

class GateKernel final : public LinearKernel {
 public:
  absl::string_view name() const override { return "test_gate"; }
  absl::Status Prepare(const QuantizedLinear&, const Device&) override { return absl::OkStatus(); }
  absl::Status Forward(const ConstTensorView& x, const TensorView& y, ExecContext&) const override {
    {
      absl::MutexLock l(&g_gate->mu);
      ++g_gate->entered;
      g_gate->calls.push_back(x.dim(0));
      auto open = []() ABSL_SHARED_LOCKS_REQUIRED(g_gate->mu) { return g_gate->open; };
      g_gate->mu.Await(absl::Condition(&open));
    }
    for (int64_t m = 0; m < x.dim(0); ++m) {
      for (int64_t n = 0; n < kN; ++n) {
        StoreFromDouble(y.data, y.dtype, m * kN + n,
                        LoadAsDouble(x.data, x.dtype, m * kK + n % kK) + static_cast<double>(n));
      }
    }
    return absl::OkStatus();
  }
  int64_t prepared_bytes() const override { return 0; }
};

// Registered once, last in priority: real selection never reaches it (the
// registry stops once a real kernel covers every M); tests force it.
void RegisterGateKernel() {
  static const bool once = [] {
    KernelFactory f;
    f.name = "test_gate";
    f.backend = Backend::kCpu;
    f.priority = 1 << 20;
    f.can_implement = [](const LinearSpec&, const Device&) { return absl::OkStatus(); };
    f.create = [] { return std::make_unique<GateKernel>(); };
    RegisterLinearKernel(std::move(f));
    return true;
  }();
  (void)once;
}

std::unique_ptr<LoadedLinear> GateLayer() {
  RegisterGateKernel();
  QuantizedLinear w;
  w.K = kK;
  w.N = kN;
  w.wtype = WeightType::kDense;
  w.dense = Tensor::Zeros(DType::kF16, {kN, kK});
  SelectOptions options;
  options.forced_kernel = "test_gate";
  auto layer = LoadedLinear::Create("test.layer", w, LayerScheme{}, Device{}, options);
  EXPECT_TRUE(layer.ok()) << layer.status();
  return layer.ok() ? std::move(*layer) : nullptr;
}

// Collects results by item index.
struct Results {
  absl::Mutex mu;
  std::vector<std::unique_ptr<BatchResult>> r ABSL_GUARDED_BY(mu);
  int done ABSL_GUARDED_BY(mu) = 0;

  explicit Results(int n) : r(static_cast<size_t>(n)) {}
  std::function<void(BatchResult)> Callback(int i) {
    return [this, i](BatchResult res) {
      absl::MutexLock l(&mu);
      r[static_cast<size_t>(i)] = std::make_unique<BatchResult>(std::move(res));
      ++done;
    };
  }
  void AwaitDone(int n) {
    absl::MutexLock l(&mu);
    auto cond = [this, n]() ABSL_SHARED_LOCKS_REQUIRED(mu) { return done >= n; };
    mu.Await(absl::Condition(&cond));
  }
  const BatchResult& operator[](int i) {
    absl::MutexLock l(&mu);
    return *r[static_cast<size_t>(i)];
  }
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gate_ = std::make_unique<Gate>();
    g_gate = gate_.get();
    layer_ = GateLayer();
    ASSERT_NE(layer_, nullptr);
    rng_.seed(TestSeed());
  }
  void TearDown() override { g_gate = nullptr; }

  BatchItem Item(int64_t m, DType dtype, std::function<void(BatchResult)> done) {
    auto x = std::make_shared<Tensor>(RandomInput(dtype, m, kK, rng_));
    inputs_.push_back(x);
    BatchItem item;
    item.input = x->view();
    item.keepalive = x;
    item.done = std::move(done);
    return item;
  }
  // y = x[:, n % K] + n for item i's own rows.
  void ExpectOwnRows(const BatchResult& r, int i) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    const Tensor& x = *inputs_[static_cast<size_t>(i)];
    ASSERT_EQ(r.output.shape, (Shape{x.dim(0), kN}));
    for (int64_t m = 0; m < x.dim(0); ++m) {
      for (int64_t n = 0; n < kN; ++n) {
        const double want = LoadAsDouble(x.data(), x.dtype(), m * kK + n % kK) + n;
        const double got = LoadAsDouble(r.output.data, r.output.dtype, m * kN + n);
        EXPECT_NEAR(got, want, 0.02 * (1 + std::abs(want))) << "item " << i << " m " << m;
      }
    }
  }

  std::unique_ptr<Gate> gate_;
  std::unique_ptr<LoadedLinear> layer_;
  std::mt19937_64 rng_;
  std::vector<std::shared_ptr<Tensor>> inputs_;
};

TEST_F(SchedulerTest, RequestsWaitingTogetherRunAsOneBatchAndSplitBack) {
  WorkerPool pool(2);
  BatchQueue queue(*layer_, pool, {.max_batch_rows = 64, .max_queue = 16}, nullptr);
  Results res(4);
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(0))).ok());
  gate_->AwaitEntered(1);  // item 0 computes alone; the rest queue behind it
  ASSERT_TRUE(queue.Submit(Item(2, DType::kF16, res.Callback(1))).ok());
  ASSERT_TRUE(queue.Submit(Item(3, DType::kF16, res.Callback(2))).ok());
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(3))).ok());
  EXPECT_EQ(queue.depth(), 3);
  absl::SleepFor(absl::Milliseconds(3));
  gate_->Open();
  res.AwaitDone(4);
  EXPECT_EQ(gate_->Calls(), (std::vector<int64_t>{1, 6}));
  EXPECT_EQ(res[0].batch_rows, 1);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(res[i].batch_rows, 6) << i;
  for (int i = 0; i < 4; ++i) {
    ExpectOwnRows(res[i], i);
    EXPECT_EQ(res[i].kernel, "test_gate");
    EXPECT_GE(res[i].queue_us, 0);
    EXPECT_GE(res[i].compute_us, 0);
  }
  // Items 1..3 waited at least while the gate stayed shut after they queued.
  for (int i = 1; i < 4; ++i) EXPECT_GE(res[i].queue_us, 3000) << i;
}

TEST_F(SchedulerTest, BatchesStopAtMaxRowsAndAtADtypeChange) {
  WorkerPool pool(1);
  BatchQueue queue(*layer_, pool, {.max_batch_rows = 4, .max_queue = 16}, nullptr);
  Results res(6);
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(0))).ok());
  gate_->AwaitEntered(1);
  ASSERT_TRUE(queue.Submit(Item(2, DType::kF16, res.Callback(1))).ok());
  ASSERT_TRUE(queue.Submit(Item(3, DType::kF16, res.Callback(2))).ok());  // 2+3 > 4
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(3))).ok());
  ASSERT_TRUE(queue.Submit(Item(2, DType::kF32, res.Callback(4))).ok());  // other dtype
  ASSERT_TRUE(queue.Submit(Item(6, DType::kF32, res.Callback(5))).ok());  // alone: > max
  gate_->Open();
  res.AwaitDone(6);
  EXPECT_EQ(gate_->Calls(), (std::vector<int64_t>{1, 2, 4, 2, 6}));
  for (int i = 0; i < 6; ++i) ExpectOwnRows(res[i], i);
  EXPECT_EQ(res[5].output.dtype, DType::kF32);
}

TEST_F(SchedulerTest, AFullQueueRefusesWithResourceExhausted) {
  WorkerPool pool(1);
  BatchQueue queue(*layer_, pool, {.max_batch_rows = 64, .max_queue = 2}, nullptr);
  Results res(3);
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(0))).ok());
  gate_->AwaitEntered(1);
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(1))).ok());
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(2))).ok());
  bool called = false;
  absl::Status s = queue.Submit(Item(1, DType::kF16, [&](BatchResult) { called = true; }));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("limit 2"), absl::string_view::npos) << s;
  gate_->Open();
  res.AwaitDone(3);
  EXPECT_FALSE(called);
  for (int i = 0; i < 3; ++i) ExpectOwnRows(res[i], i);
}

TEST_F(SchedulerTest, ExpiredAndCancelledRequestsAreAnsweredButNeverComputed) {
  WorkerPool pool(1);
  BatchQueue queue(*layer_, pool, {.max_batch_rows = 64, .max_queue = 16}, nullptr);
  Results res(4);
  ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(0))).ok());
  gate_->AwaitEntered(1);
  BatchItem late = Item(2, DType::kF16, res.Callback(1));
  late.deadline = absl::Now() + absl::Milliseconds(1);
  ASSERT_TRUE(queue.Submit(std::move(late)).ok());
  auto cancelled = std::make_shared<std::atomic<bool>>(false);
  BatchItem gone = Item(3, DType::kF16, res.Callback(2));
  gone.cancelled = cancelled;
  ASSERT_TRUE(queue.Submit(std::move(gone)).ok());
  BatchItem fine = Item(1, DType::kF16, res.Callback(3));
  fine.deadline = absl::Now() + absl::Seconds(60);
  ASSERT_TRUE(queue.Submit(std::move(fine)).ok());
  cancelled->store(true);
  absl::SleepFor(absl::Milliseconds(5));
  gate_->Open();
  res.AwaitDone(4);
  EXPECT_EQ(res[1].status.code(), absl::StatusCode::kDeadlineExceeded) << res[1].status;
  EXPECT_EQ(res[1].kernel, "");
  EXPECT_GE(res[1].queue_us, 1000);
  EXPECT_EQ(res[2].status.code(), absl::StatusCode::kCancelled) << res[2].status;
  ExpectOwnRows(res[3], 3);
  // Only items 0 and 3 reached the kernel.
  EXPECT_EQ(gate_->Calls(), (std::vector<int64_t>{1, 1}));
}

TEST_F(SchedulerTest, CloseRefusesNewWorkAndShutdownFinishesAcceptedWork) {
  auto pool = std::make_unique<WorkerPool>(2);
  BatchQueue queue(*layer_, *pool, {.max_batch_rows = 1, .max_queue = 16}, nullptr);
  Results res(5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(queue.Submit(Item(1, DType::kF16, res.Callback(i))).ok());
  gate_->AwaitEntered(1);
  queue.Close();
  absl::Status s = queue.Submit(Item(1, DType::kF16, [](BatchResult) {}));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  gate_->Open();
  pool->Shutdown();  // returns only after every accepted item ran
  {
    absl::MutexLock l(&res.mu);
    EXPECT_EQ(res.done, 5);
  }
  for (int i = 0; i < 5; ++i) ExpectOwnRows(res[i], i);
}

}  // namespace
}  // namespace qlayer
