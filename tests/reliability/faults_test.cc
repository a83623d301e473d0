// Faults injected into a running qlayer-server, each with the behaviour it
// must show: clients that cancel or vanish mid-stream (the others keep being
// served, nothing is left behind), deadlines that expire in the queue (never
// computed), SIGTERM under load (health NOT_SERVING first, every accepted
// request answered, exit 0 within the grace period) and with clients still
// writing through the drain (every request written answered or refused, none
// lost), SIGKILL and a restart on the same port while RemoteLinear callers
// keep calling (all answered, correct, by re-sending).
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/remote_linear.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/common/sanitizers.h"
#include "tests/reliability/reliability_util.h"

namespace qlayer::reliability {
namespace {

using Clock = std::chrono::steady_clock;
using grpc::health::v1::HealthCheckResponse;
using testing::MakeRequest;
using testing::MetricValue;
using testing::OutputView;
using testing::RandomInput;
using testing::Reference;
using testing::RelativeError;
using testing::ServerProcess;

constexpr char kLayer[] = "model.layers.0.mlp.down_proj";
constexpr int64_t kK = 1024;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class Faults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const bool ok = testing::RunQuantize(
        {"--format", "awq", "--bits", "4", "--group-size", "128", "--seed",
         absl::StrCat(testing::TestSeed()), "--shape", absl::StrCat(kLayer, "=1024x1024")},
        dir_->path());
    if (!ok) return;
    auto layers = testing::LoadLayers(dir_->path());
    if (layers.size() == 1) ref_ = new Reference(layers.begin()->second);
  }
  static void TearDownTestSuite() {
    delete ref_;
    ref_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (ref_ == nullptr) GTEST_SKIP() << "no checkpoint (qlayer-quantize failed)";
    rng_.seed(
        testing::TestSeed() +
        static_cast<uint64_t>(::testing::UnitTest::GetInstance()->current_test_info()->line()));
  }
  // True when `a` is a correct answer to x.
  bool Correct(const v1::ForwardResponse& a, const Tensor& x) const {
    if (a.error().code() != 0) return false;
    const ConstTensorView y = OutputView(a);
    return !y.empty() && y.dim(0) == x.dim(0) &&
           RelativeError(y, ref_->Forward(x.view())) < Tolerance(x.dtype());
  }

  static testing::TempDir* dir_;
  static Reference* ref_;
  std::mt19937_64 rng_;
};
testing::TempDir* Faults::dir_ = nullptr;
Reference* Faults::ref_ = nullptr;

// Sequential checked requests on one stream until `stop`; counts what
// happened. Used as the "other clients" that must not notice a fault.
struct Bystander {
  int64_t sent = 0, correct = 0;
  std::string problem;
};
void RunBystander(const ServerProcess& server, const Reference& ref, uint64_t seed,
                  const std::atomic<bool>& stop, Bystander& b) {
  std::mt19937_64 rng(seed);
  auto stub = v1::LayerService::NewStub(server.Channel());
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  while (!stop.load()) {
    const CheckedRequest r = RandomLinearRequest(ref, 1 + static_cast<int64_t>(rng() % 4), rng);
    ++b.sent;
    v1::ForwardResponse a;
    if (!stream->Write(MakeRequest(static_cast<uint64_t>(b.sent), kLayer, r.x.view())) ||
        !stream->Read(&a)) {
      b.problem = "stream ended";
      break;
    }
    const ConstTensorView y = OutputView(a);
    if (a.error().code() == 0 && !y.empty() && RelativeError(y, r.expected) < 5e-3) {
      ++b.correct;
    } else if (b.problem.empty()) {
      b.problem = absl::StrCat("bad answer: ", a.error().code(), " ", a.error().message());
    }
  }
  stream->WritesDone();
  const grpc::Status end = stream->Finish();
  if (!end.ok() && b.problem.empty()) b.problem = end.error_message();
}

// Clients that give up in every way a client can, 30 times, while four
// others keep calling: the others get every answer right, the server closes
// every abandoned stream (qlayer_open_streams back to 0) and its memory does
// not grow from round 10 to round 30.
TEST_F(Faults, CancelsAndDisconnectsMidStreamLeaveOthersServedAndNothingBehind) {
  ServerProcess server(dir_->path(), {"--max-batch-rows", "16"});
  ASSERT_TRUE(server.ok());
  std::atomic<bool> stop{false};
  std::vector<Bystander> bystanders(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < bystanders.size(); ++i) {
    threads.emplace_back(
        [&, i] { RunBystander(server, *ref_, testing::TestSeed() + i, stop, bystanders[i]); });
  }
  const Tensor x = RandomInput(DType::kF16, 16, kK, rng_);
  int64_t rss_round10 = 0;
  const std::string cli = testing::BuildDir() + "/client/qlayer-cli";
  int killed_cli = 0;
  for (int round = 0; round < 30; ++round) {
    if (round % 10 == 9 && ::access(cli.c_str(), X_OK) == 0) {
      // Another process, killed mid-stream: its TCP connection just dies.
      std::vector<std::string> argv = {
          cli,  "bench",     "--server", server.address(), "--layer", kLayer,      "--rows",
          "16", "--streams", "4",        "--depth",        "8",       "--seconds", "30"};
      const ProgramResult r = RunProgram(argv, 1.0);  // SIGKILL after 1 s
      EXPECT_TRUE(r.timed_out) << "qlayer-cli bench ended by itself: " << r.output;
      if (r.timed_out) ++killed_cli;
      continue;
    }
    auto channel = server.Channel();
    auto stub = v1::LayerService::NewStub(channel);
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = stub->Forward(ctx.get());
    for (uint64_t id = 0; id < 20; ++id) stream->Write(MakeRequest(id, kLayer, x.view()));
    if (round % 3 == 1) {
      v1::ForwardResponse r;
      stream->Read(&r);  // one answer in, the rest queued or computing
    }
    if (round % 2 == 0) {
      ctx->TryCancel();  // an explicit cancel
    } else {
      // Half-close, then leave without reading: the channel goes away.
      stream->WritesDone();
      ctx->TryCancel();
    }
    stream.reset();
    ctx.reset();
    stub.reset();
    channel.reset();
    if (round == 10) rss_round10 = RssKiB(server.pid());
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(server.Alive());
  int64_t sent = 0;
  for (const Bystander& b : bystanders) {
    EXPECT_GT(b.sent, 0);
    EXPECT_EQ(b.correct, b.sent) << b.problem;
    sent += b.sent;
  }
  double open = -1;
  for (int i = 0; i < 300 && open != 0; ++i) {
    open =
        MetricValue(testing::HttpGet(server.metrics_port(), "/metrics"), "qlayer_open_streams", {});
    if (open != 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(open, 0) << "streams of vanished clients were not finished";
  const int64_t rss_end = RssKiB(server.pid());
  std::printf(
      "[ faults ] 30 vanishing clients (%d qlayer-cli processes SIGKILLed): bystanders %lld "
      "requests all correct; open streams 0; RSS %lld KiB at round 10, %lld KiB at the end\n",
      killed_cli, static_cast<long long>(sent), static_cast<long long>(rss_round10),
      static_cast<long long>(rss_end));
  EXPECT_LT(rss_end - rss_round10, 16 * 1024) << "RSS grew with abandoned streams";
}

// A layer kept busy by 16-row requests (one batch each) while requests with a
// 1 ms timeout wait behind them: those are answered DEADLINE_EXCEEDED and
// never computed -- the rows the server computed (qlayer_batch_rows_sum) are
// exactly the rows of the successful answers.
TEST_F(Faults, DeadlinesExpiringInTheQueueAreNeverComputed) {
  ServerProcess server(dir_->path(), {"--workers", "1", "--max-batch-rows", "16"});
  ASSERT_TRUE(server.ok());
  auto stub = server.Stub();
  const Tensor big = RandomInput(DType::kF32, 16, kK, rng_);
  const Tensor small = RandomInput(DType::kF16, 1, kK, rng_);
  std::vector<v1::ForwardRequest> requests;
  std::map<uint64_t, const Tensor*> inputs;
  for (uint64_t id = 0; id < 96; ++id) {
    // Every third request is short-lived; the rest keep the layer busy.
    const bool short_lived = id % 3 == 2;
    const Tensor& x = short_lived ? small : big;
    requests.push_back(MakeRequest(id, kLayer, x.view()));
    if (short_lived) requests.back().set_timeout_us(1000);
    inputs[id] = &x;
  }
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  for (const auto& r : requests) ASSERT_TRUE(stream->Write(r));
  stream->WritesDone();
  std::map<uint64_t, v1::ForwardResponse> answers;
  v1::ForwardResponse a;
  while (stream->Read(&a)) answers[a.request_id()] = a;
  ASSERT_TRUE(stream->Finish().ok());
  ASSERT_EQ(answers.size(), requests.size());
  int64_t ok_rows = 0, expired = 0, expired_short = 0;
  for (const auto& [id, answer] : answers) {
    if (answer.error().code() == 0) {
      EXPECT_TRUE(Correct(answer, *inputs[id])) << id;
      ok_rows += inputs[id]->dim(0);
      continue;
    }
    ASSERT_EQ(answer.error().code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED))
        << answer.error().message();
    EXPECT_EQ(answer.timing().compute_us(), 0);
    EXPECT_TRUE(answer.kernel().empty());
    ++expired;
    if (id % 3 == 2) ++expired_short;
  }
  EXPECT_EQ(expired, expired_short) << "only the 1 ms requests may expire";
  EXPECT_GT(expired, 16) << "the layer was not busy enough for queued requests to expire";
  const std::string metrics = testing::HttpGet(server.metrics_port(), "/metrics");
  const double computed_rows = MetricValue(metrics, "qlayer_batch_rows_sum", {{"layer", kLayer}});
  const double counted_expired =
      MetricValue(metrics, "qlayer_requests_total", {{"code", "DEADLINE_EXCEEDED"}});
  std::printf(
      "[ faults ] %lld of 32 requests with a 1 ms timeout expired in the queue; rows "
      "computed %.0f = rows answered OK %lld\n",
      static_cast<long long>(expired), computed_rows, static_cast<long long>(ok_rows));
  EXPECT_EQ(computed_rows, static_cast<double>(ok_rows)) << "an expired request was computed";
  EXPECT_EQ(counted_expired, static_cast<double>(expired));
}

// SIGTERM while 8 streams have requests in flight: health turns NOT_SERVING
// before any stream ends, a stream opened afterwards is refused, every
// request each stream sent is answered exactly once -- computed (and
// correct) or UNAVAILABLE -- requests still queued at the signal are
// computed, each stream ends OK or UNAVAILABLE, and the process exits 0
// within the grace period.
// The work is made slow (one worker, one row per batch, the scalar reference
// kernel) rather than large: each stream's 24 one-row requests (48 KiB) fit
// in HTTP/2's initial 64 KiB stream window, so they have all reached the
// server when the signal comes. Clients still writing through the drain:
// the next test. Under ASan the same kernel is several times slower (118 of
// 192 such requests computed in the 20 s grace in the 2026-12-04 run,
// RELIABILITY.md), so each stream sends 6: 48 in flight, all of them still
// computed within the grace, most after the signal.
TEST_F(Faults, SigtermUnderLoadDrainsEverythingInFlightAndExitsWithinGrace) {
  constexpr double kGrace = 20;
  ServerProcess server(dir_->path(), {"--workers", "1", "--max-batch-rows", "1", "--kernel",
                                      "cpu_reference", "--grace-seconds", absl::StrCat(kGrace)});
  ASSERT_TRUE(server.ok());
  auto health = grpc::health::v1::Health::NewStub(server.Channel());
  grpc::ClientContext watch_ctx;
  auto watch = health->Watch(&watch_ctx, {});
  std::mutex mu;
  std::vector<std::pair<int, Clock::time_point>> statuses;
  std::thread watcher([&] {
    HealthCheckResponse r;
    while (watch->Read(&r)) {
      std::lock_guard<std::mutex> lock(mu);
      statuses.emplace_back(r.status(), Clock::now());
    }
    (void)watch->Finish();
  });

  constexpr int kStreams = 8, kPerStream = test_common::kAddressSanitizer ? 6 : 24;
  std::vector<Tensor> inputs;
  for (int i = 0; i < kPerStream; ++i) inputs.push_back(RandomInput(DType::kF16, 1, kK, rng_));
  std::atomic<int> first_answers{0};
  struct Answer {
    v1::ForwardResponse response;
    Clock::time_point at;
  };
  struct Outcome {
    int written = 0;
    std::map<uint64_t, Answer> answers;
    int duplicates = 0;
    grpc::Status end;
    Clock::time_point ended;
  };
  std::vector<Outcome> outcomes(kStreams);
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&, s] {
      Outcome& o = outcomes[static_cast<size_t>(s)];
      auto stub = v1::LayerService::NewStub(server.Channel());
      grpc::ClientContext ctx;
      auto stream = stub->Forward(&ctx);
      for (int i = 0; i < kPerStream; ++i) {
        if (!stream->Write(MakeRequest(static_cast<uint64_t>(i), kLayer,
                                       inputs[static_cast<size_t>(i)].view()))) {
          break;
        }
        ++o.written;
      }
      stream->WritesDone();
      v1::ForwardResponse r;
      while (stream->Read(&r)) {
        if (o.answers.empty()) ++first_answers;
        if (!o.answers.emplace(r.request_id(), Answer{r, Clock::now()}).second) ++o.duplicates;
      }
      o.end = stream->Finish();
      o.ended = Clock::now();
    });
  }
  // Terminate at the first answer: every stream is open, its requests queued.
  while (first_answers.load() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const Clock::time_point sigterm = Clock::now();
  int exit_status = -2;
  std::thread terminator([&] { exit_status = server.Terminate(kGrace + 10); });
  // A new stream once draining began is not served.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  grpc::Status late_end;
  {
    auto stub = v1::LayerService::NewStub(server.Channel());
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    auto stream = stub->Forward(&ctx);
    stream->Write(MakeRequest(999, kLayer, inputs[0].view()));
    stream->WritesDone();
    v1::ForwardResponse r;
    while (stream->Read(&r)) {
      EXPECT_NE(r.error().code(), 0) << "a stream opened after SIGTERM was served";
    }
    late_end = stream->Finish();
  }
  for (std::thread& t : streams) t.join();
  terminator.join();
  const double exit_seconds = Seconds(Clock::now() - sigterm);
  watch_ctx.TryCancel();
  watcher.join();

  ASSERT_TRUE(WIFEXITED(exit_status)) << exit_status;
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
  EXPECT_LT(exit_seconds, kGrace);
  int computed = 0, computed_after = 0, refused = 0;
  Clock::time_point first_end = Clock::time_point::max();
  for (const Outcome& o : outcomes) {
    EXPECT_EQ(o.duplicates, 0);
    EXPECT_EQ(o.written, kPerStream);
    EXPECT_EQ(static_cast<int>(o.answers.size()), o.written)
        << "requests sent before the signal went unanswered; stream ended " << o.end.error_code()
        << " " << o.end.error_message();
    EXPECT_TRUE(o.end.ok() || o.end.error_code() == grpc::StatusCode::UNAVAILABLE)
        << o.end.error_code() << " " << o.end.error_message();
    first_end = std::min(first_end, o.ended);
    for (const auto& [id, a] : o.answers) {
      if (a.response.error().code() == 0) {
        ++computed;
        if (a.at > sigterm) ++computed_after;
        EXPECT_TRUE(Correct(a.response, inputs[id])) << id;
      } else {
        ++refused;
        EXPECT_EQ(a.response.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
            << a.response.error().message();
      }
    }
  }
  EXPECT_GT(computed_after, 0) << "nothing was left in flight at the signal";
  EXPECT_NE(late_end.error_code(), grpc::StatusCode::OK);
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_GE(statuses.size(), 2u);
  EXPECT_EQ(statuses.front().first, HealthCheckResponse::SERVING);
  Clock::time_point not_serving = Clock::time_point::max();
  for (const auto& [status, at] : statuses) {
    if (status == HealthCheckResponse::NOT_SERVING) not_serving = std::min(not_serving, at);
  }
  ASSERT_NE(not_serving, Clock::time_point::max()) << "health never said NOT_SERVING";
  EXPECT_LE(not_serving, first_end) << "a stream ended before health turned NOT_SERVING";
  std::printf(
      "[ faults ] SIGTERM with %d streams x %d requests in flight: all %d answered once (%d "
      "computed and correct, %d of them after the signal; %d UNAVAILABLE); NOT_SERVING %.0f ms "
      "after the signal, first stream ended %.0f ms, exit 0 after %.2f s (grace %.0f s); a new "
      "stream got code %d\n",
      kStreams, kPerStream, computed + refused, computed, computed_after, refused,
      Seconds(not_serving - sigterm) * 1e3, Seconds(first_end - sigterm) * 1e3, exit_seconds,
      kGrace, static_cast<int>(late_end.error_code()));
}

// SIGTERM while 8 streams are still writing 16-row requests (32 KiB each,
// far more than a stream's HTTP/2 window holds): at the signal half of them
// stop and half-close, the other half keep writing kAfter more requests
// through the drain (one every 2 ms), then half-close. Every request id a stream wrote is
// answered exactly once -- computed and correct, or refused with an explicit
// UNAVAILABLE answer from the draining server -- none is missing, no write fails, every
// stream ends with the server's status (OK or UNAVAILABLE from qlayer-server,
// not a transport error such as "Broken pipe" or "Connection reset by
// peer"), and the process exits 0 within the grace period.
TEST_F(Faults, SigtermWhileClientsStillWriteAnswersEveryRequestWritten) {
  constexpr double kGrace = 8;
  ServerProcess server(dir_->path(), {"--max-batch-rows", "16", "--max-inflight-per-stream", "16",
                                      "--grace-seconds", absl::StrCat(kGrace)});
  ASSERT_TRUE(server.ok());
  constexpr int kStreams = 8, kMaxBefore = 2000, kAfter = 64, kInputs = 24;
  std::vector<Tensor> inputs;
  for (int i = 0; i < kInputs; ++i) inputs.push_back(RandomInput(DType::kF16, 16, kK, rng_));
  std::atomic<int> flowing{0};
  std::atomic<bool> signalled{false};
  struct Outcome {
    int written = 0, written_after = 0;
    bool write_failed = false;
    std::map<uint64_t, v1::ForwardResponse> answers;
    int duplicates = 0;
    grpc::Status end;
  };
  std::vector<Outcome> outcomes(kStreams);
  std::vector<std::thread> streams;
  for (int s = 0; s < kStreams; ++s) {
    streams.emplace_back([&, s] {
      Outcome& o = outcomes[static_cast<size_t>(s)];
      const bool keeps_writing = s % 2 == 1;
      auto stub = v1::LayerService::NewStub(server.Channel());
      grpc::ClientContext ctx;
      auto stream = stub->Forward(&ctx);
      std::thread writer([&] {
        for (int i = 0; i < kMaxBefore + kAfter; ++i) {
          if (signalled.load()) {
            if (!keeps_writing || o.written_after == kAfter) break;
            ++o.written_after;
            // Paced, as a client sends work as it comes: the stream has
            // moments with nothing owed while more requests are on the way.
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          if (!stream->Write(MakeRequest(static_cast<uint64_t>(i), kLayer,
                                         inputs[static_cast<size_t>(i % kInputs)].view()))) {
            o.write_failed = true;
            break;
          }
          ++o.written;
        }
        stream->WritesDone();
      });
      v1::ForwardResponse r;
      while (stream->Read(&r)) {
        if (o.answers.empty()) ++flowing;
        if (!o.answers.emplace(r.request_id(), r).second) ++o.duplicates;
      }
      writer.join();
      o.end = stream->Finish();
    });
  }
  // Terminate once every stream has work flowing.
  while (flowing.load() < kStreams) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  signalled = true;
  const Clock::time_point sigterm = Clock::now();
  const int exit_status = server.Terminate(kGrace + 10);
  const double exit_seconds = Seconds(Clock::now() - sigterm);
  for (std::thread& t : streams) t.join();

  ASSERT_TRUE(WIFEXITED(exit_status)) << exit_status;
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
  EXPECT_LT(exit_seconds, kGrace);
  int written = 0, computed = 0, refused = 0, missing = 0, bad_ends = 0;
  for (int s = 0; s < kStreams; ++s) {
    const Outcome& o = outcomes[static_cast<size_t>(s)];
    SCOPED_TRACE(absl::StrCat("stream ", s, (s % 2 == 1 ? " (kept writing)" : " (half-closed)"),
                              ": ", o.written, " written, ", o.answers.size(), " answered, ended ",
                              o.end.error_code(), " ", o.end.error_message()));
    written += o.written;
    EXPECT_EQ(o.duplicates, 0);
    EXPECT_FALSE(o.write_failed) << "a write failed: the server stopped reading the stream";
    if (s % 2 == 1) EXPECT_EQ(o.written_after, kAfter);
    int first_missing = -1, stream_missing = 0;
    for (int id = 0; id < o.written; ++id) {
      if (o.answers.count(static_cast<uint64_t>(id)) == 0) {
        if (first_missing < 0) first_missing = id;
        ++stream_missing;
      }
    }
    missing += stream_missing;
    EXPECT_EQ(stream_missing, 0) << "written but never answered, from id " << first_missing;
    for (const auto& [id, a] : o.answers) {
      EXPECT_LT(id, static_cast<uint64_t>(o.written)) << "an answer for a request never written";
      if (a.error().code() == 0) {
        ++computed;
        EXPECT_TRUE(Correct(a, inputs[id % kInputs])) << id;
      } else {
        ++refused;
        EXPECT_EQ(a.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
            << a.error().message();
        EXPECT_NE(a.error().message().find("qlayer-server"), std::string::npos)
            << "not the server's drain refusal: " << a.error().message();
      }
    }
    // The server's own status, not a transport failure.
    const bool server_status =
        o.end.ok() || (o.end.error_code() == grpc::StatusCode::UNAVAILABLE &&
                       o.end.error_message().find("qlayer-server") != std::string::npos);
    if (!server_status) ++bad_ends;
    EXPECT_TRUE(server_status);
  }
  EXPECT_GT(refused, 0) << "no request arrived during the drain";
  std::printf(
      "[ faults ] SIGTERM with %d streams still writing (4 half-closed at the signal, 4 wrote %d "
      "more): %d requests written, %d answered (%d computed and correct, %d refused "
      "UNAVAILABLE), %d missing, %d streams ended badly; exit %d after %.2f s (grace %.0f s)\n",
      kStreams, kAfter, written, computed + refused, computed, refused, missing, bad_ends,
      WIFEXITED(exit_status) ? WEXITSTATUS(exit_status) : -1, exit_seconds, kGrace);
}

// 8 threads calling through one qlayer::RemoteLinear (its own Client, 30 s
// call timeout) until StopAndCheck(), each answer checked against the float64
// reference (the fault tests below kill or drain the server under them).
class RemoteLinearCallers {
 public:
  struct Totals {
    int calls = 0, correct = 0, resent = 0;
  };
  RemoteLinearCallers(const std::string& address, const Reference& ref, uint64_t seed)
      : callers_(8) {
    absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address);
    if (!client.ok()) {
      status_ = client.status();
      return;
    }
    client_ = *std::move(client);
    RemoteLinearOptions options;
    options.timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<RemoteLinear>> remote =
        RemoteLinear::Create(client_.get(), kLayer, options);
    if (!remote.ok()) {
      status_ = remote.status();
      return;
    }
    remote_ = *std::move(remote);
    for (size_t i = 0; i < callers_.size(); ++i) {
      threads_.emplace_back([this, &ref, seed, i] {
        RemoteLinear* remote = remote_.get();
        Caller& c = callers_[i];
        std::mt19937_64 rng(testing::TestSeed() + seed + i);
        while (!stop_.load()) {
          const CheckedRequest r = RandomLinearRequest(ref, 1 + static_cast<int64_t>(i % 4), rng);
          ++c.calls;
          absl::StatusOr<ForwardResult> y = remote->Forward(r.x.view());
          if (!y.ok()) {
            if (c.problem.empty()) c.problem = y.status().ToString();
            continue;
          }
          if (y->attempts > 1) ++c.resent;
          if (RelativeError(y->output.view(), r.expected) < Tolerance(r.x.dtype())) {
            ++c.correct;
          } else if (c.problem.empty()) {
            c.problem = "wrong answer";
          }
        }
      });
    }
  }
  ~RemoteLinearCallers() { Stop(); }
  const absl::Status& status() const { return status_; }

  // Stops the threads; every call must have been answered right.
  Totals StopAndCheck() {
    Stop();
    Totals t;
    for (const Caller& c : callers_) {
      EXPECT_EQ(c.correct, c.calls) << c.problem;
      t.calls += c.calls;
      t.correct += c.correct;
      t.resent += c.resent;
    }
    return t;
  }

 private:
  struct Caller {
    int calls = 0, correct = 0, resent = 0;
    std::string problem;
  };
  void Stop() {
    stop_ = true;
    for (std::thread& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  absl::Status status_;
  std::unique_ptr<Client> client_;        // destroyed after remote_
  std::unique_ptr<RemoteLinear> remote_;  // and both after the threads (Stop())
  std::atomic<bool> stop_{false};
  std::vector<Caller> callers_;
  std::vector<std::thread> threads_;
};

// SIGKILL while 8 threads call through qlayer::RemoteLinear, and a new
// server on the same port 300 ms later: every call returns the right answer
// (the ones that were in flight are re-sent), none fails.
TEST_F(Faults, SigkillAndRestartWhileRemoteLinearCallersRetry) {
  auto server = std::make_unique<ServerProcess>(dir_->path(), std::vector<std::string>{});
  ASSERT_TRUE(server->ok());
  const std::string address = server->address();
  RemoteLinearCallers callers(address, *ref_, /*seed=*/77);
  ASSERT_TRUE(callers.status().ok()) << callers.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  ::kill(server->pid(), SIGKILL);
  const Clock::time_point killed = Clock::now();
  server.reset();  // reaps it
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  server =
      std::make_unique<ServerProcess>(dir_->path(), std::vector<std::string>{"--listen", address});
  ASSERT_TRUE(server->ok()) << "no restart on " << address;
  const double restarted = Seconds(Clock::now() - killed);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const RemoteLinearCallers::Totals t = callers.StopAndCheck();
  const int calls = t.calls, correct = t.correct, resent = t.resent;
  std::printf(
      "[ faults ] SIGKILL + restart (listening again %.2f s after the kill): %d calls from 8 "
      "threads, %d correct, %d answered after a re-send\n",
      restarted, calls, correct, resent);
  EXPECT_GE(resent, 1) << "no call was in flight across the kill";
}

// SIGTERM (grace 10 s) while 8 threads call through qlayer::RemoteLinear,
// then a new server on the same port once the old one has exited. The
// drained server refuses every request it reads after the signal
// (UNAVAILABLE, marked SERVER_DRAINING) and waits for each stream's client to
// half-close. A RemoteLinear that re-sent on the same stream kept that stream
// busy, so the drain ran until the server gave up on it (grace less 1 s).
// Now the client retires a stream that said "draining": nothing new goes on
// it, it half-closes once its own calls are answered, and re-sends go on a
// new stream after the backoff -- the old server exits as soon as its
// in-flight work is answered, and the re-sends reach the new one.
TEST_F(Faults, SigtermAndRestartWhileRemoteLinearCallersRetryExitsWithoutWaitingForTheGrace) {
  constexpr double kGrace = 10;
  // Measured: 0.02-0.05 s (12 runs); before the client fix 9.03 s (grace less 1 s).
  constexpr double kExitBound = 3;
  auto server = std::make_unique<ServerProcess>(
      dir_->path(), std::vector<std::string>{"--grace-seconds", absl::StrCat(kGrace)});
  ASSERT_TRUE(server->ok());
  const std::string address = server->address();
  RemoteLinearCallers callers(address, *ref_, /*seed=*/91);
  ASSERT_TRUE(callers.status().ok()) << callers.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const Clock::time_point sigterm = Clock::now();
  const int exit_status = server->Terminate(kGrace + 10);
  const double exit_seconds = Seconds(Clock::now() - sigterm);
  server =
      std::make_unique<ServerProcess>(dir_->path(), std::vector<std::string>{"--listen", address});
  ASSERT_TRUE(server->ok()) << "no restart on " << address;
  const double restarted = Seconds(Clock::now() - sigterm);
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const RemoteLinearCallers::Totals t = callers.StopAndCheck();
  const int calls = t.calls, correct = t.correct, resent = t.resent;

  ASSERT_TRUE(WIFEXITED(exit_status)) << exit_status;
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
  EXPECT_LT(exit_seconds, kExitBound)
      << "the drain waited for RemoteLinear's streams (grace " << kGrace << " s)";
  std::printf(
      "[ faults ] SIGTERM (grace %.0f s) + restart: old server exited %.2f s after the signal, "
      "new one listening %.2f s after it; %d calls from 8 threads, %d correct, %d answered after "
      "a re-send\n",
      kGrace, exit_seconds, restarted, calls, correct, resent);
  EXPECT_GE(resent, 1) << "no call was refused by the draining server";
}

}  // namespace
}  // namespace qlayer::reliability
