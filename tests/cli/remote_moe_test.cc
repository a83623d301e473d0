// qlayer::RemoteMoE (and Client::MoEForward under it) against a real
// qlayer-server hosting a Qwen2-MoE block (shared expert with its sigmoid
// gate): any leading dims, each activation dtype and each routing source vs
// the float64 family forward of the same checkpoint (client/cli/
// moe_reference.h), the routing returned vs the family's router, checks
// before the wire, the server's own verdicts passed through, overlapped calls,
// and re-sending across a SIGKILL and restart of the server (giving up at the
// retry budget or deadline; CANCELLED when destroyed while waiting).
#include "client/remote_moe.h"

#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <future>
#include <iostream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli/moe_reference.h"
#include "client/cli/random_input.h"
#include "client/cli/reference.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/cli/cli_process_util.h"

namespace qlayer {
namespace {

constexpr char kBlock[] = "model.layers.1.mlp";
constexpr char kLinear[] = "model.layers.0.self_attn.o_proj";
constexpr int64_t kH = 64, kE = 8;
constexpr int kTopK = 2;

class RemoteMoETest : public cli_testing::ServedCheckpointTest<> {
 protected:
  void SetUp() override {
    Serve("qlayer_remote_moe_",
          {"--format=gptq", "--group_size=32", "--moe=qwen2_moe", "--layers_moe=1",
           absl::StrCat("--hidden=", kH), "--intermediate=32", absl::StrCat("--experts=", kE),
           absl::StrCat("--topk=", kTopK), "--shared_intermediate=64",
           absl::StrCat("--shape=", kLinear, "=64x64")});
    if (HasFatalFailure() || IsSkipped()) return;
    auto client = Client::Connect(server_->address());
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    auto ref = MoEReferenceBlock::Load(dir_ + "/model", kBlock);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
  }
  void TearDown() override {
    client_.reset();
    ServedCheckpointTest::TearDown();
  }

  std::unique_ptr<RemoteMoE> Make(RemoteMoEOptions o = {}) {
    auto r = RemoteMoE::Create(client_.get(), kBlock, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *std::move(r) : nullptr;
  }

  // The answer for x [T, H] routed by (ids, weights) vs the float64 forward.
  double Error(const MoEResult& y, const Tensor& x, const std::vector<int32_t>& ids,
               const std::vector<double>& weights) {
    const Tensor ref = ref_->Forward(x.view(), ids, weights);
    return RelativeError(y.output.view(), ref.view());
  }
  // The family's routing of `logits` [T, E], near ties taken as the server
  // chose them (f32 vs f64 may differ there; the family's weights for them).
  void Route(const std::vector<double>& logits, int64_t T, const MoEResult& y,
             std::vector<int32_t>& ids, std::vector<double>& weights) {
    ASSERT_EQ(y.topk_ids.shape(), (Shape{T, kTopK}));
    int64_t mismatches = 0;
    const ReferenceRouting want = ref_->RouteLike(logits, T, y.topk_ids.as<int32_t>(), &mismatches);
    EXPECT_EQ(mismatches, 0) << "tokens routed unlike the family's router (no near tie)";
    ids = want.ids;
    weights = want.weights;
  }

  std::unique_ptr<Client> client_;
  std::unique_ptr<MoEReferenceBlock> ref_;
};

// Concurrent calls are batched by the server, past the GEMV kernels' max_m
// into onednn_dense (bf16 weights whatever the activation dtype): a single
// f16 token reached 8.7e-3 there (tests/service/moe_matrix_e2e_test.cc), so
// every dtype gets bf16's bound; a wrong expert or weight is off by 0.1+.
double Tolerance(DType /*dt*/) { return 1e-2; }

TEST_F(RemoteMoETest, AnyLeadingDimsEachDtypeEachRouting) {
  auto moe = Make();
  ASSERT_NE(moe, nullptr);
  EXPECT_EQ(moe->hidden_size(), kH);
  EXPECT_EQ(moe->num_experts(), kE);
  EXPECT_EQ(moe->top_k(), kTopK);
  EXPECT_EQ(moe->OutputShape({2, 3, kH}), (Shape{2, 3, kH}));
  std::mt19937_64 rng(seed_);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_real_distribution<double> uw(0.1, 1.0);
  const Shape shapes[] = {{kH}, {7, kH}, {2, 3, kH}, {2, 32, kH}};
  int n = 0;
  for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
    for (const Shape& shape : shapes) {
      const int64_t T = NumElements(shape) / kH;
      Shape lead(shape.begin(), shape.end() - 1);
      for (int mode = 0; mode < 3; ++mode, ++n) {
        SCOPED_TRACE(absl::StrCat(DTypeName(dt), " ", ShapeToString(shape), " routing ",
                                  mode == 0   ? "server"
                                  : mode == 1 ? "logits"
                                              : "top-k"));
        const Tensor x = RandomActivations(dt, T, kH, seed_ + n);
        const ConstTensorView xv{dt, shape, x.data()};
        MoERoutingInput routing;
        routing.return_routing = true;
        std::vector<double> logits;
        Tensor logits_t, ids_t, w_t;
        std::vector<int32_t> ids;
        std::vector<double> weights;
        Shape rshape = lead;
        if (mode == 1) {
          // bf16 logits for bf16 inputs, f32 otherwise (both are accepted).
          const DType ldt = dt == DType::kBF16 ? DType::kBF16 : DType::kF32;
          rshape.push_back(kE);
          logits_t = Tensor::Zeros(ldt, {T, kE});
          for (int64_t i = 0; i < T * kE; ++i) {
            StoreFromDouble(logits_t.data(), ldt, i, normal(rng));
            logits.push_back(LoadAsDouble(logits_t.data(), ldt, i));
          }
          routing.router_logits = {ldt, rshape, logits_t.data()};
        } else if (mode == 2) {
          // i64 ids for even cases; the first token's experts all tokens'
          // for the largest shape (one expert pair busy, the rest idle).
          const DType idt = n % 2 == 0 ? DType::kI64 : DType::kI32;
          rshape.push_back(kTopK);
          ids_t = Tensor::Zeros(idt, {T, kTopK});
          w_t = Tensor::Zeros(dt, {T, kTopK});
          std::vector<int32_t> perm(kE);
          for (int64_t t = 0; t < T; ++t) {
            std::iota(perm.begin(), perm.end(), 0);
            if (T < 64 || t == 0) std::shuffle(perm.begin(), perm.end(), rng);
            for (int j = 0; j < kTopK; ++j) {
              const int64_t i = t * kTopK + j;
              const int32_t e = T == 64 && t > 0 ? ids[j] : perm[j];
              ids.push_back(e);
              if (idt == DType::kI64) {
                ids_t.as<int64_t>()[i] = e;
              } else {
                ids_t.as<int32_t>()[i] = e;
              }
              StoreFromDouble(w_t.data(), dt, i, uw(rng));
              weights.push_back(LoadAsDouble(w_t.data(), dt, i));
            }
          }
          routing.topk_ids = {idt, rshape, ids_t.data()};
          routing.topk_weights = {dt, rshape, w_t.data()};
        } else {
          logits = ref_->Logits(x.view());
        }
        absl::StatusOr<MoEResult> y = moe->Forward(xv, routing);
        ASSERT_TRUE(y.ok()) << y.status();
        EXPECT_EQ(y->attempts, 1);
        EXPECT_EQ(y->output.dtype(), dt);
        ASSERT_EQ(y->output.shape(), (Shape{T, kH}));
        ASSERT_FALSE(y->kernels.empty());
        EXPECT_EQ(y->kernels[0], "cpu_moe_grouped");
        ASSERT_EQ(y->topk_ids.shape(), (Shape{T, kTopK}));
        if (mode == 2) {
          for (int64_t i = 0; i < T * kTopK; ++i) {
            ASSERT_EQ(y->topk_ids.as<int32_t>()[i], ids[i]) << i;
          }
        } else {
          Route(logits, T, *y, ids, weights);
        }
        EXPECT_LT(Error(*y, x, ids, weights), Tolerance(dt));
      }
    }
  }
}

TEST_F(RemoteMoETest, InputsAreCheckedBeforeTheWire) {
  auto moe = Make();
  ASSERT_NE(moe, nullptr);
  const Tensor x = RandomActivations(DType::kF16, 6, kH, seed_);
  const ConstTensorView x3{DType::kF16, {2, 3, kH}, x.data()};
  std::vector<float> f(6 * kE, 0.5f);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3};
  std::vector<int32_t> bad_ids = {0, 1, 2, 3, 4, 8, 6, 7, 0, 1, 2, 3};
  struct Case {
    const char* what;
    ConstTensorView x;
    MoERoutingInput routing;
    const char* expect;  // in the message
  };
  const ConstTensorView ids23{DType::kI32, {2, 3, kTopK}, ids.data()};
  const ConstTensorView w23{DType::kF32, {2, 3, kTopK}, f.data()};
  const std::vector<Case> cases = {
      {"wide hidden states", {DType::kF16, {2, 48}, x.data()}, {}, "[2, 48]"},
      {"integer hidden states", {DType::kI32, {2, kH}, x.data()}, {}, "i32"},
      {"logits of 6 experts",
       x3,
       {.router_logits = {DType::kF32, {2, 3, 6}, f.data()}},
       "[2, 3, 6]"},
      {"logits of other leading dims",
       x3,
       {.router_logits = {DType::kF32, {6, kE}, f.data()}},
       "[2, 3, 8]"},
      {"int logits", x3, {.router_logits = {DType::kI32, {2, 3, kE}, ids.data()}}, "router_logits"},
      {"k = 3",
       x3,
       {.topk_ids = {DType::kI32, {2, 3, 3}, ids.data()},
        .topk_weights = {DType::kF32, {2, 3, 3}, f.data()}},
       "top-k = 2"},
      {"expert 8 of 0..7",
       x3,
       {.topk_ids = {DType::kI32, {2, 3, kTopK}, bad_ids.data()}, .topk_weights = w23},
       "= 8"},
      {"float ids", x3, {.topk_ids = w23, .topk_weights = w23}, "topk_ids dtype"},
      {"ids without weights", x3, {.topk_ids = ids23}, "together"},
      {"weights without ids", x3, {.topk_weights = w23}, "together"},
      {"two sources",
       x3,
       {.router_logits = {DType::kF32, {2, 3, kE}, f.data()},
        .topk_ids = ids23,
        .topk_weights = w23},
       "at most one"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<MoEResult> y = moe->Forward(c.x, c.routing);
    EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument)
        << c.what << ": " << y.status();
    EXPECT_TRUE(absl::StrContains(y.status().message(), kBlock)) << c.what << ": " << y.status();
    EXPECT_TRUE(absl::StrContains(y.status().message(), c.expect)) << c.what << ": " << y.status();
  }
  // The block's stream is fine after all of them.
  ASSERT_TRUE(moe->Forward(x3).ok());

  // The server's verdict (an expert twice for one token) passes through,
  // final, sent once.
  std::vector<int32_t> twice = {3, 3, 0, 1, 2, 4, 5, 6, 7, 0, 1, 2};
  absl::StatusOr<MoEResult> y = moe->Forward(
      x3, {.topk_ids = {DType::kI32, {2, 3, kTopK}, twice.data()}, .topk_weights = w23});
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument) << y.status();
  EXPECT_TRUE(absl::StrContains(y.status().message(), "3")) << y.status();

  auto linear = RemoteMoE::Create(client_.get(), kLinear);
  EXPECT_EQ(linear.status().code(), absl::StatusCode::kFailedPrecondition) << linear.status();
  auto missing = RemoteMoE::Create(client_.get(), "model.layers.9.mlp");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
}

TEST_F(RemoteMoETest, OverlappedCallsAndClientMoEForward) {
  auto moe = Make();
  ASSERT_NE(moe, nullptr);
  std::vector<Tensor> xs;
  std::vector<std::future<absl::StatusOr<MoEResult>>> futures;
  for (int i = 0; i < 16; ++i) {
    xs.push_back(RandomActivations(DType::kF16, 1 + i % 5, kH, seed_ + 200 + i));
    futures.push_back(moe->ForwardAsync(xs.back().view(), {.return_routing = true}));
  }
  for (int i = 0; i < 16; ++i) {
    absl::StatusOr<MoEResult> y = futures[i].get();
    ASSERT_TRUE(y.ok()) << y.status();
    std::vector<int32_t> ids;
    std::vector<double> weights;
    Route(ref_->Logits(xs[i].view()), xs[i].dim(0), *y, ids, weights);
    EXPECT_LT(Error(*y, xs[i], ids, weights), Tolerance(DType::kF16)) << i;
  }
  // The Client call underneath: [T, H] only, a per-call deadline, the
  // server's error answers as statuses.
  const Tensor x = RandomActivations(DType::kF32, 4, kH, seed_ + 300);
  CallOptions o;
  o.timeout = absl::Seconds(20);
  absl::StatusOr<MoEResult> y = client_->MoEForward(kBlock, x.view(), {}, o).get();
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->output.shape(), (Shape{4, kH}));
  EXPECT_TRUE(y->topk_ids.empty());  // not asked for
  absl::StatusOr<MoEResult> nf = client_->MoEForward("model.layers.5.mlp", x.view()).get();
  EXPECT_EQ(nf.status().code(), absl::StatusCode::kNotFound) << nf.status();
  absl::StatusOr<MoEResult> lin = client_->MoEForward(kLinear, x.view()).get();
  EXPECT_EQ(lin.status().code(), absl::StatusCode::kInvalidArgument) << lin.status();
}

TEST_F(RemoteMoETest, ResendsAcrossAServerKillAndRestart) {
  RemoteMoEOptions o;
  o.timeout = absl::Seconds(60);
  auto moe = Make(o);
  ASSERT_NE(moe, nullptr);
  const Tensor x = RandomActivations(DType::kBF16, 3, kH, seed_);
  ASSERT_TRUE(moe->Forward(x.view()).ok());  // the stream is open
  absl::StatusOr<MoEResult> y;
  absl::Time answered;
  const absl::StatusOr<absl::Time> listening =
      cli_testing::RestartServerDuring(server_, dir_ + "/model", [&] {
        y = moe->Forward(x.view(), {.return_routing = true});
        answered = absl::Now();
      });
  ASSERT_TRUE(listening.ok()) << listening.status();
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_GT(y->attempts, 1);
  std::vector<int32_t> ids;
  std::vector<double> weights;
  Route(ref_->Logits(x.view()), 3, *y, ids, weights);
  EXPECT_LT(Error(*y, x, ids, weights), 1e-2);
  std::cout << "answered " << absl::FormatDuration(answered - *listening)
            << " after the new server listened, sent " << y->attempts << " times\n";
  EXPECT_LT(answered - *listening, absl::Seconds(3));
}

TEST_F(RemoteMoETest, RetryBudgetDeadlineAndDestruction) {
  const Tensor x = RandomActivations(DType::kF16, 1, kH, seed_);
  RemoteMoEOptions budget;
  budget.retry_timeout = absl::Milliseconds(300);
  auto a = Make(budget);
  RemoteMoEOptions deadline;
  deadline.timeout = absl::Milliseconds(400);
  auto b = Make(deadline);
  RemoteMoEOptions slow;
  slow.initial_backoff = slow.max_backoff = absl::Seconds(20);  // the re-send waits
  // Same lane as a and b, whose re-sends left a stream waiting for the
  // channel: c's first attempt must still fail fast (it never joins that
  // stream) into the backoff this checks.
  auto c = Make(slow);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_NE(c, nullptr);
  server_->Stop(SIGKILL);
  absl::Time t0 = absl::Now();
  absl::StatusOr<MoEResult> y = a->Forward(x.view());
  EXPECT_EQ(y.status().code(), absl::StatusCode::kUnavailable) << y.status();
  EXPECT_TRUE(absl::StrContains(y.status().message(), "sent")) << y.status();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  t0 = absl::Now();
  y = b->Forward(x.view());
  EXPECT_EQ(y.status().code(), absl::StatusCode::kDeadlineExceeded) << y.status();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  auto future = c->ForwardAsync(x.view());
  absl::SleepFor(absl::Milliseconds(300));  // failed once, now backing off
  t0 = absl::Now();
  c.reset();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  EXPECT_EQ(future.get().status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace qlayer
