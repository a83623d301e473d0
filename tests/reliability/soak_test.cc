// Soak: N concurrent streams against one qlayer-server hosting the mixed
// checkpoint (GPTQ 4-bit g128, 8-bit g64 act-order, 4-bit symmetric
// channel-wise with bf16 scales, dense f16, a Mixtral MoE block), for a given
// time. Every answer is checked against its float64 reference; answers
// missing, wrong or failed are counted; the server's RSS is sampled once a
// second and must stay flat after the warm-up; latency p50/p99 are reported.
// Under ASan the server runs with a small quarantine (FlatRssServerEnv), so
// the same RSS bound applies.
//
// Runs only when QLAYER_SOAK_SECONDS is set (scripts/soak sets it; ctest's
// qlayer_reliability_soak_short runs 8 streams x 20 s):
//   QLAYER_SOAK_SECONDS   run time (required)
//   QLAYER_SOAK_STREAMS   concurrent streams (default 8); every 4th is MoE
//   QLAYER_SOAK_REPORT    also write the figures to this JSON file
//   QLAYER_SOAK_SERVER_ARGS  extra qlayer-server flags, space-separated
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/reliability/reliability_util.h"

namespace qlayer::reliability {
namespace {

using Clock = std::chrono::steady_clock;
using testing::OutputView;
using testing::RelativeError;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct StreamTally {
  int64_t sent = 0;
  int64_t ok = 0;               // answered and within tolerance of the reference
  int64_t mismatched = 0;       // answered, but wrong (value, id or shape)
  int64_t errors = 0;           // answered with an error status
  int64_t lost = 0;             // sent, never answered (the stream ended first)
  int64_t streams = 0;          // streams opened
  int64_t stream_failures = 0;  // streams that did not end OK
  std::vector<double> latency_ms;
  std::string first_problem;
};

void Note(StreamTally& t, const std::string& what) {
  if (t.first_problem.empty()) t.first_problem = what;
}

// One client stream at a time, one request in flight: write, wait for the
// answer, check it; a new stream every 20..200 requests.
void RunLinearStreams(const testing::ServerProcess& server, const MixedModel& model,
                      const MixedReference& ref, uint64_t seed, const std::atomic<bool>& stop,
                      StreamTally& t) {
  std::mt19937_64 rng(seed);
  static constexpr int64_t kRows[] = {1, 1, 1, 2, 3, 4, 8, 16};
  auto stub = v1::LayerService::NewStub(server.Channel());
  uint64_t id = 0;
  while (!stop.load()) {
    grpc::ClientContext ctx;
    auto stream = stub->Forward(&ctx);
    ++t.streams;
    const int session = std::uniform_int_distribution<int>(20, 200)(rng);
    for (int i = 0; i < session && !stop.load(); ++i) {
      const std::string& layer =
          model.linears[std::uniform_int_distribution<size_t>(0, model.linears.size() - 1)(rng)];
      const int64_t M = kRows[std::uniform_int_distribution<int>(0, 7)(rng)];
      const CheckedRequest req = RandomLinearRequest(ref.linear(layer), M, rng);
      ++id;
      const auto t0 = Clock::now();
      ++t.sent;
      v1::ForwardResponse answer;
      if (!stream->Write(testing::MakeRequest(id, layer, req.x.view())) || !stream->Read(&answer)) {
        ++t.lost;
        Note(t, absl::StrCat("request ", id, " on ", layer, " got no answer"));
        break;
      }
      t.latency_ms.push_back(Seconds(Clock::now() - t0) * 1e3);
      if (answer.error().code() != 0) {
        ++t.errors;
        Note(t,
             absl::StrCat(layer, ": error ", answer.error().code(), " ", answer.error().message()));
        continue;
      }
      const ConstTensorView y = OutputView(answer);
      const double err = y.empty() || answer.request_id() != id || y.dim(0) != M
                             ? 1e9
                             : RelativeError(y, req.expected);
      if (err < Tolerance(req.x.dtype())) {
        ++t.ok;
      } else {
        ++t.mismatched;
        Note(t, absl::StrCat(layer, " M=", M, " ", DTypeName(req.x.dtype()), ": relative error ",
                             err));
      }
    }
    stream->WritesDone();
    const grpc::Status end = stream->Finish();
    if (!end.ok()) {
      ++t.stream_failures;
      Note(t, absl::StrCat("stream ended ", end.error_code(), " ", end.error_message()));
    }
  }
}

void RunMoEStreams(const testing::ServerProcess& server, const MixedModel& model,
                   const MixedReference& ref, uint64_t seed, const std::atomic<bool>& stop,
                   StreamTally& t) {
  std::mt19937_64 rng(seed);
  static constexpr int64_t kTokens[] = {1, 1, 2, 4, 8};
  auto stub = v1::LayerService::NewStub(server.Channel());
  uint64_t id = 0;
  while (!stop.load()) {
    grpc::ClientContext ctx;
    auto stream = stub->MoEForward(&ctx);
    ++t.streams;
    const int session = std::uniform_int_distribution<int>(20, 200)(rng);
    for (int i = 0; i < session && !stop.load(); ++i) {
      const int64_t T = kTokens[std::uniform_int_distribution<int>(0, 4)(rng)];
      const CheckedMoERequest req = RandomMoERequest(ref.moe(), T, rng);
      ++id;
      const auto t0 = Clock::now();
      ++t.sent;
      v1::MoEForwardResponse answer;
      if (!stream->Write(MakeMoERequest(id, model.moe, req)) || !stream->Read(&answer)) {
        ++t.lost;
        Note(t, absl::StrCat("MoE request ", id, " got no answer"));
        break;
      }
      t.latency_ms.push_back(Seconds(Clock::now() - t0) * 1e3);
      if (answer.error().code() != 0) {
        ++t.errors;
        Note(t, absl::StrCat("MoE: error ", answer.error().code(), " ", answer.error().message()));
        continue;
      }
      const ConstTensorView y = MoEOutputView(answer);
      const double err = y.empty() || answer.request_id() != id || y.dim(0) != T
                             ? 1e9
                             : RelativeError(y, req.expected);
      if (err < Tolerance(req.x.dtype())) {
        ++t.ok;
      } else {
        ++t.mismatched;
        Note(t, absl::StrCat("MoE T=", T, " ", DTypeName(req.x.dtype()), ": relative error ", err));
      }
    }
    stream->WritesDone();
    const grpc::Status end = stream->Finish();
    if (!end.ok()) {
      ++t.stream_failures;
      Note(t, absl::StrCat("MoE stream ended ", end.error_code(), " ", end.error_message()));
    }
  }
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

TEST(Soak, ManyStreamsOnMixedLayersEveryAnswerCheckedRssFlat) {
  const int seconds = EnvInt("QLAYER_SOAK_SECONDS", 0);
  if (seconds <= 0) GTEST_SKIP() << "set QLAYER_SOAK_SECONDS (scripts/soak) to run the soak";
  const int streams = std::max(1, EnvInt("QLAYER_SOAK_STREAMS", 8));
  const uint64_t seed = testing::TestSeed();

  testing::TempDir dir;
  MixedModel model;
  ASSERT_TRUE(WriteMixedCheckpoint(dir.path(), seed, &model));
  const MixedReference ref(model);
  ASSERT_TRUE(ref.ok());
  std::vector<std::string> server_args = {"--grace-seconds", "10"};
  if (const char* extra = std::getenv("QLAYER_SOAK_SERVER_ARGS")) {
    for (absl::string_view a : absl::StrSplit(extra, ' ', absl::SkipEmpty())) {
      server_args.emplace_back(a);
    }
  }
  // Under ASan, a small quarantine (FlatRssServerEnv) so that the same RSS
  // bound holds.
  const std::vector<std::string> server_env = FlatRssServerEnv();
  testing::ServerProcess server(dir.path(), server_args, server_env);
  ASSERT_TRUE(server.ok());

  std::atomic<bool> stop{false};
  std::vector<StreamTally> tallies(static_cast<size_t>(streams));
  std::vector<std::thread> threads;
  const auto start = Clock::now();
  for (int i = 0; i < streams; ++i) {
    threads.emplace_back([&, i] {
      const uint64_t s = seed * 1000 + static_cast<uint64_t>(i);
      if (i % 4 == 3) {
        RunMoEStreams(server, model, ref, s, stop, tallies[static_cast<size_t>(i)]);
      } else {
        RunLinearStreams(server, model, ref, s, stop, tallies[static_cast<size_t>(i)]);
      }
    });
  }
  // RSS once a second until the time is up (or the server dies).
  std::vector<std::pair<double, int64_t>> rss;  // (seconds since start, KiB)
  bool alive = true;
  while (Seconds(Clock::now() - start) < seconds) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    alive = server.Alive();
    if (!alive) break;
    rss.emplace_back(Seconds(Clock::now() - start), RssKiB(server.pid()));
  }
  stop = true;
  for (std::thread& th : threads) th.join();
  const double elapsed = Seconds(Clock::now() - start);
  ASSERT_TRUE(alive) << "qlayer-server died during the soak";
  const std::string metrics = testing::HttpGet(server.metrics_port(), "/metrics");

  StreamTally all;
  for (StreamTally& t : tallies) {
    all.sent += t.sent;
    all.ok += t.ok;
    all.mismatched += t.mismatched;
    all.errors += t.errors;
    all.lost += t.lost;
    all.streams += t.streams;
    all.stream_failures += t.stream_failures;
    all.latency_ms.insert(all.latency_ms.end(), t.latency_ms.begin(), t.latency_ms.end());
    Note(all, t.first_problem);
  }
  // Flat RSS: after the warm-up (a quarter of the run, at most 60 s) the
  // resident set may move within allocator noise, not climb.
  const double warmup = std::min(60.0, seconds / 4.0);
  int64_t rss_warm = -1, rss_max = 0, rss_end = rss.empty() ? -1 : rss.back().second;
  int64_t rss_first = rss.empty() ? -1 : rss.front().second;
  for (const auto& [t, kib] : rss) {
    if (t < warmup) continue;
    if (rss_warm < 0) rss_warm = kib;
    rss_max = std::max(rss_max, kib);
  }
  const int64_t allowed_growth = std::max<int64_t>(16 * 1024, rss_warm / 10);
  const double p50 = Quantile(all.latency_ms, 0.5), p99 = Quantile(all.latency_ms, 0.99);
  const double server_ok = testing::MetricValue(metrics, "qlayer_requests_total", {{"code", "OK"}});

  std::printf(
      "[ soak ] %d streams x %.0f s: %lld requests sent, %lld correct, %lld mismatched, %lld "
      "errors, %lld lost; %lld streams opened, %lld ended badly; %.0f requests/s; latency p50 "
      "%.2f ms p99 %.2f ms; server counted %.0f OK\n",
      streams, elapsed, static_cast<long long>(all.sent), static_cast<long long>(all.ok),
      static_cast<long long>(all.mismatched), static_cast<long long>(all.errors),
      static_cast<long long>(all.lost), static_cast<long long>(all.streams),
      static_cast<long long>(all.stream_failures), static_cast<double>(all.sent) / elapsed, p50,
      p99, server_ok);
  std::printf(
      "[ soak ] server RSS: %lld KiB at 1 s, %lld KiB after the %.0f s warm-up, max %lld KiB "
      "after it, %lld KiB at the end\n",
      static_cast<long long>(rss_first), static_cast<long long>(rss_warm), warmup,
      static_cast<long long>(rss_max), static_cast<long long>(rss_end));
  if (const char* path = std::getenv("QLAYER_SOAK_REPORT"); path != nullptr && *path != '\0') {
    nlohmann::json report = {
        {"seed", seed},
        {"server_args", server_args},
        {"server_env", server_env},
        {"streams", streams},
        {"seconds", elapsed},
        {"sent", all.sent},
        {"correct", all.ok},
        {"mismatched", all.mismatched},
        {"errors", all.errors},
        {"lost", all.lost},
        {"streams_opened", all.streams},
        {"streams_failed", all.stream_failures},
        {"server_ok_count", server_ok},
        {"latency_ms_p50", p50},
        {"latency_ms_p99", p99},
        {"latency_ms_max", Quantile(all.latency_ms, 1.0)},
        {"rss_kib_first", rss_first},
        {"rss_kib_after_warmup", rss_warm},
        {"rss_kib_max_after_warmup", rss_max},
        {"rss_kib_end", rss_end},
        {"warmup_seconds", warmup},
        {"first_problem", all.first_problem},
    };
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& [t, kib] : rss) samples.push_back({t, kib});
    report["rss_samples"] = samples;
    std::ofstream(path) << report.dump(1) << "\n";
  }

  EXPECT_GT(all.sent, 0);
  EXPECT_EQ(all.ok, all.sent) << all.first_problem;
  EXPECT_EQ(all.mismatched, 0) << all.first_problem;
  EXPECT_EQ(all.errors, 0) << all.first_problem;
  EXPECT_EQ(all.lost, 0) << all.first_problem;
  EXPECT_EQ(all.stream_failures, 0) << all.first_problem;
  EXPECT_EQ(server_ok, static_cast<double>(all.ok)) << "server and client counts differ";
  ASSERT_GT(rss_warm, 0);
  EXPECT_LE(rss_max - rss_warm, allowed_growth)
      << "server RSS grew from " << rss_warm << " KiB to " << rss_max << " KiB after the warm-up";
  // Orderly exit after the soak.
  const int status = server.Terminate(20);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace qlayer::reliability
