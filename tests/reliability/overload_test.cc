// Overload: 16 streams each pipelining 64 requests at one layer whose queue
// holds 4 (--max-queue 4, one worker, 16-row batches). What does not fit is
// answered RESOURCE_EXHAUSTED at once -- not left to time out -- the server's
// memory stays flat over three such bursts, and once the burst is over the
// server answers normally again. Under ASan the server runs with a small
// quarantine (FlatRssServerEnv) and three more bursts come first, unmeasured:
// its RSS settles later (below, kWarmupBursts).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/common/sanitizers.h"
#include "tests/reliability/reliability_util.h"

namespace qlayer::reliability {
namespace {

using Clock = std::chrono::steady_clock;
using testing::MakeRequest;
using testing::OutputView;
using testing::RelativeError;

constexpr char kLayer[] = "model.layers.0.mlp.up_proj";
constexpr int kStreams = 16;
constexpr int kPerStream = 64;
constexpr int64_t kRows = 16;
// Bursts before the three whose RSS is compared. In both builds the server's
// RSS steps up once early on: +3.5-3.9 MiB at the third burst in a plain
// build, inside the bound. Under ASan (FlatRssServerEnv) the step is +12-27
// MiB (larger blocks with redzones, per-thread allocator caches and
// quarantines; the server went from 19 to 21 threads) and came at the third
// or the fourth burst; after it RSS moved 0-3 MiB a burst (RELIABILITY.md).
// So a sanitized server gets three bursts of warm-up and the same 16 MiB
// bound over the next three.
constexpr int kWarmupBursts = test_common::kAddressSanitizer ? 3 : 0;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Burst {
  int answered = 0, correct = 0, exhausted = 0, other = 0, missing = 0;
  std::vector<double> exhausted_client_ms;  // write -> answer, client side
  std::vector<double> exhausted_server_ms;  // arrival -> answer, server side
  std::vector<double> ok_client_ms;
  std::string problem;
};

// One burst: every stream writes all its requests at once, then reads.
Burst RunBurst(const testing::ServerProcess& server, const std::vector<CheckedRequest>& inputs) {
  std::vector<Burst> per(kStreams);
  std::vector<std::thread> threads;
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      Burst& b = per[static_cast<size_t>(s)];
      auto stub = v1::LayerService::NewStub(server.Channel());
      grpc::ClientContext ctx;
      auto stream = stub->Forward(&ctx);
      std::vector<Clock::time_point> sent(kPerStream);
      std::thread writer([&] {
        for (int i = 0; i < kPerStream; ++i) {
          sent[static_cast<size_t>(i)] = Clock::now();
          const CheckedRequest& in = inputs[static_cast<size_t>(i)];
          if (!stream->Write(MakeRequest(static_cast<uint64_t>(i), kLayer, in.x.view()))) break;
        }
        stream->WritesDone();
      });
      std::vector<bool> seen(kPerStream, false);
      v1::ForwardResponse a;
      while (stream->Read(&a)) {
        const auto now = Clock::now();
        const uint64_t id = a.request_id();
        if (id >= static_cast<uint64_t>(kPerStream) || seen[id]) {
          b.problem = absl::StrCat("unexpected answer id ", id);
          continue;
        }
        seen[id] = true;
        ++b.answered;
        const double client_ms = Ms(now - sent[id]);
        if (a.error().code() == 0) {
          const ConstTensorView y = OutputView(a);
          if (!y.empty() && RelativeError(y, inputs[id].expected) < Tolerance(y.dtype)) {
            ++b.correct;
          } else {
            b.problem = absl::StrCat("wrong answer to ", id);
          }
          b.ok_client_ms.push_back(client_ms);
        } else if (a.error().code() == static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED)) {
          ++b.exhausted;
          b.exhausted_client_ms.push_back(client_ms);
          b.exhausted_server_ms.push_back(static_cast<double>(a.timing().total_us()) / 1e3);
        } else {
          ++b.other;
          b.problem = absl::StrCat("answer ", a.error().code(), " ", a.error().message());
        }
      }
      writer.join();
      const grpc::Status end = stream->Finish();
      if (!end.ok()) b.problem = absl::StrCat("stream ended ", end.error_message());
      b.missing = kPerStream - b.answered;
    });
  }
  for (std::thread& t : threads) t.join();
  Burst all;
  for (Burst& b : per) {
    all.answered += b.answered;
    all.correct += b.correct;
    all.exhausted += b.exhausted;
    all.other += b.other;
    all.missing += b.missing;
    all.exhausted_client_ms.insert(all.exhausted_client_ms.end(), b.exhausted_client_ms.begin(),
                                   b.exhausted_client_ms.end());
    all.exhausted_server_ms.insert(all.exhausted_server_ms.end(), b.exhausted_server_ms.begin(),
                                   b.exhausted_server_ms.end());
    all.ok_client_ms.insert(all.ok_client_ms.end(), b.ok_client_ms.begin(), b.ok_client_ms.end());
    if (all.problem.empty()) all.problem = b.problem;
  }
  return all;
}

TEST(Overload, ExcessIsRefusedPromptlyMemoryStaysFlatAndTheServerRecovers) {
  const uint64_t seed = testing::TestSeed();
  testing::TempDir dir;
  ASSERT_TRUE(
      testing::RunQuantize({"--format", "gptq", "--bits", "4", "--group-size", "128", "--seed",
                            absl::StrCat(seed), "--shape", absl::StrCat(kLayer, "=2048x1024")},
                           dir.path()));
  auto layers = testing::LoadLayers(dir.path());
  ASSERT_EQ(layers.size(), 1u);
  const testing::Reference ref(layers.begin()->second);
  // Under ASan, a small quarantine (FlatRssServerEnv) so that the same RSS
  // bound holds.
  testing::ServerProcess server(dir.path(),
                                {"--workers", "1", "--max-queue", "4", "--max-batch-rows", "16"},
                                FlatRssServerEnv());
  ASSERT_TRUE(server.ok());
  std::mt19937_64 rng(seed);
  std::vector<CheckedRequest> inputs;
  for (int i = 0; i < kPerStream; ++i) inputs.push_back(RandomLinearRequest(ref, kRows, rng));

  std::vector<int64_t> rss;
  Burst total;
  for (int burst = 0; burst < kWarmupBursts + 3; ++burst) {
    const Burst b = RunBurst(server, inputs);
    if (burst >= kWarmupBursts) rss.push_back(RssKiB(server.pid()));
    EXPECT_EQ(b.missing, 0) << b.problem;
    EXPECT_EQ(b.other, 0) << b.problem;
    EXPECT_EQ(b.correct + b.exhausted, kStreams * kPerStream) << b.problem;
    EXPECT_GT(b.exhausted, kStreams * kPerStream / 2) << "the load was not above capacity";
    EXPECT_GT(b.correct, 0);
    total.correct += b.correct;
    total.exhausted += b.exhausted;
    total.exhausted_client_ms.insert(total.exhausted_client_ms.end(), b.exhausted_client_ms.begin(),
                                     b.exhausted_client_ms.end());
    total.exhausted_server_ms.insert(total.exhausted_server_ms.end(), b.exhausted_server_ms.begin(),
                                     b.exhausted_server_ms.end());
    total.ok_client_ms.insert(total.ok_client_ms.end(), b.ok_client_ms.begin(),
                              b.ok_client_ms.end());
  }
  const double server_p99 = Quantile(total.exhausted_server_ms, 0.99);
  const double server_max = Quantile(total.exhausted_server_ms, 1.0);
  const double client_p50 = Quantile(total.exhausted_client_ms, 0.5);
  const double client_p99 = Quantile(total.exhausted_client_ms, 0.99);
  const double ok_p50 = Quantile(total.ok_client_ms, 0.5);

  // Recovery: with the burst over, a plain stream is served normally.
  auto stub = server.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  std::vector<double> after_ms;
  int recovered = 0;
  for (int i = 0; i < 20; ++i) {
    const CheckedRequest r = RandomLinearRequest(ref, 1 + i % 4, rng);
    const auto t0 = Clock::now();
    v1::ForwardResponse a;
    ASSERT_TRUE(stream->Write(MakeRequest(static_cast<uint64_t>(i), kLayer, r.x.view())));
    ASSERT_TRUE(stream->Read(&a));
    after_ms.push_back(Ms(Clock::now() - t0));
    const ConstTensorView y = OutputView(a);
    ASSERT_EQ(a.error().code(), 0) << a.error().message();
    EXPECT_LT(RelativeError(y, r.expected), Tolerance(r.x.dtype()));
    ++recovered;
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  const double depth = testing::MetricValue(testing::HttpGet(server.metrics_port(), "/metrics"),
                                            "qlayer_queue_depth", {{"layer", kLayer}});

  std::printf(
      "[ overload ] %d bursts of %d streams x %d requests (%lld rows each) at a queue of 4: %d "
      "computed (correct), %d RESOURCE_EXHAUSTED, 0 lost, 0 other. Refusals: server %.2f ms p99 "
      "(max %.2f), client write->answer %.1f ms p50 %.1f ms p99 (computed answers: %.1f ms "
      "p50). RSS after each of the last 3 bursts %lld / %lld / %lld KiB. After: %d of 20 "
      "correct, %.1f ms p50, queue depth %.0f\n",
      kWarmupBursts + 3, kStreams, kPerStream, static_cast<long long>(kRows), total.correct,
      total.exhausted, server_p99, server_max, client_p50, client_p99, ok_p50,
      static_cast<long long>(rss[0]), static_cast<long long>(rss[1]),
      static_cast<long long>(rss[2]), recovered, Quantile(after_ms, 0.5), depth);
  // Refused at arrival, not after waiting for capacity.
  EXPECT_LT(server_max, 50);
  EXPECT_LT(client_p99, 2000);
  EXPECT_LT(rss[2] - rss[0], 16 * 1024) << "memory grew under repeated overload";
  EXPECT_EQ(depth, 0);
  EXPECT_LT(Quantile(after_ms, 0.5), 100);
}

}  // namespace
}  // namespace qlayer::reliability
