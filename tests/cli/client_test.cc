// qlayer::Client against an in-process fake LayerService whose behaviour is
// chosen per request by layer name, so that pipelining, out-of-order
// answers, per-request errors, deadlines, a stream ended by the server and a
// server restart are each exercised exactly (the real server cannot be made
// to hold or reorder answers on demand).
#include "client/client.h"

#include <atomic>
#include <deque>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "tests/cli/cli_process_util.h"

namespace qlayer {
namespace {

// Layers of the fake:
//   "double"  answers y = 2x at once (kernel "fake_double")
//   "hold4"   holds answers until 4 requests are in, then answers newest first
//   "silent"  never answers
//   "error"   answers with error INVALID_ARGUMENT for that request
//   "drop"    ends the whole stream with UNAVAILABLE
//   "drain"   refuses the request as a draining qlayer-server does
//             (UNAVAILABLE "qlayer-server is draining ...", so the client
//             retires the stream); the stream ends once the client half-closes
//   "drainend" the same, and ends the stream (OK) right after the refusal,
//             as the real server does once a drained stream goes quiet
class FakeReactor final : public grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse> {
 public:
  FakeReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    if (!ok) {
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    const std::string& layer = request_.layer();
    if (layer == "drop") {
      drop_ = true;
      MaybeFinishLocked();
      return;  // no more reads: the stream is ending
    }
    if (layer == "double") {
      ready_.push_back(Double(request_));
    } else if (layer == "hold4") {
      held_.push_back(Double(request_));
      if (held_.size() == 4) {
        while (!held_.empty()) {
          ready_.push_back(std::move(held_.back()));
          held_.pop_back();
        }
      }
    } else if (layer == "drain" || layer == "drainend") {
      v1::ForwardResponse r;
      r.set_request_id(request_.request_id());
      r.mutable_error()->set_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
      r.mutable_error()->set_message(
          "qlayer-server is draining (fake): request not computed; send it again");
      ready_.push_back(std::move(r));
      if (layer == "drainend") {
        end_ok_ = true;
        MaybeWriteLocked();
        MaybeFinishLocked();
        return;  // no more reads: the stream ends once the refusal is written
      }
    } else if (layer == "error") {
      v1::ForwardResponse r;
      r.set_request_id(request_.request_id());
      r.mutable_error()->set_code(static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      r.mutable_error()->set_message("bad input for the fake");
      ready_.push_back(std::move(r));
    }  // "silent": nothing
    MaybeWriteLocked();
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    ready_.pop_front();
    if (!ok) ready_.clear();
    MaybeWriteLocked();
    MaybeFinishLocked();
  }

  void OnDone() override { delete this; }

 private:
  static v1::ForwardResponse Double(const v1::ForwardRequest& q) {
    v1::ForwardResponse r;
    r.set_request_id(q.request_id());
    *r.mutable_output() = q.input();
    auto* f = reinterpret_cast<float*>(r.mutable_output()->mutable_data()->data());
    for (size_t i = 0; i < q.input().data().size() / 4; ++i) f[i] *= 2;
    r.set_kernel("fake_double");
    r.mutable_timing()->set_compute_us(7);
    r.mutable_timing()->set_total_us(9);
    r.set_batch_rows(q.input().shape(0));
    return r;
  }
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || ready_.empty() || finished_) return;
    writing_ = true;
    StartWrite(&ready_.front());
  }
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || writing_) return;
    if (drop_) {
      finished_ = true;
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake server drops the stream"));
    } else if ((reads_done_ || end_ok_) && ready_.empty()) {
      finished_ = true;
      Finish(grpc::Status::OK);
    }
  }

  v1::ForwardRequest request_;
  absl::Mutex mu_;
  std::deque<v1::ForwardResponse> ready_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::ForwardResponse> held_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool drop_ ABSL_GUARDED_BY(mu_) = false;
  bool end_ok_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

class FakeService final : public v1::LayerService::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* Forward(
      grpc::CallbackServerContext*) override {
    return new FakeReactor();
  }
  grpc::ServerUnaryReactor* DescribeLayer(grpc::CallbackServerContext* ctx,
                                          const v1::DescribeLayerRequest* req,
                                          v1::LayerInfo* info) override {
    auto* reactor = ctx->DefaultReactor();
    if (req->name() != "double") {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "no layer " + req->name()));
    } else {
      info->set_name("double");
      info->set_in_features(8);
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }
};

class FakeServer {
 public:
  // port 0: pick one.
  explicit FakeServer(int port = 0) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(absl::StrCat("127.0.0.1:", port), grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() { Stop(); }
  void Stop() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
    server_.reset();
  }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

 private:
  FakeService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

Tensor RandomRows(int64_t rows, std::mt19937_64& rng) {
  Tensor x = Tensor::Zeros(DType::kF32, {rows, 8});
  std::uniform_real_distribution<float> dist(-1, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.as<float>()[i] = dist(rng);
  return x;
}

void ExpectDoubled(const absl::StatusOr<ForwardResult>& r, const Tensor& x) {
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->output.shape(), x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(r->output.as<float>()[i], 2 * x.as<float>()[i]);
  EXPECT_EQ(r->kernel, "fake_double");
  EXPECT_EQ(r->total_us, 9);
  EXPECT_GE(r->latency_us, 0);
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t seed = cli_testing::TestSeed();
    std::cout << "QLAYER_TEST_SEED=" << seed << "\n";
    rng_.seed(seed);
    ASSERT_NE(server_.port(), 0);
    client_ = *Client::Connect(server_.address());
    ASSERT_TRUE(client_->WaitForReady(absl::Seconds(10)).ok());
  }
  std::mt19937_64 rng_;
  FakeServer server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, PipelinesManyCallsOnOneStream) {
  std::vector<Tensor> xs;
  std::vector<std::future<absl::StatusOr<ForwardResult>>> futures;
  for (int i = 0; i < 64; ++i) {
    xs.push_back(RandomRows(1 + i % 5, rng_));
    futures.push_back(client_->Forward("double", xs.back().view()));
  }
  for (int i = 0; i < 64; ++i) ExpectDoubled(futures[i].get(), xs[i]);
  EXPECT_EQ(client_->streams_opened(), 1);
}

TEST_F(ClientTest, MatchesOutOfOrderAnswersById) {
  std::vector<Tensor> xs;
  std::vector<std::future<absl::StatusOr<ForwardResult>>> futures;
  for (int i = 0; i < 8; ++i) {  // two groups of four, each answered newest first
    xs.push_back(RandomRows(2, rng_));
    futures.push_back(client_->Forward("hold4", xs.back().view()));
  }
  std::vector<uint64_t> ids;
  for (int i = 0; i < 8; ++i) {
    auto r = futures[i].get();
    ExpectDoubled(r, xs[i]);
    ids.push_back(r->request_id);
  }
  for (int i = 1; i < 8; ++i) EXPECT_GT(ids[i], ids[i - 1]);
}

TEST_F(ClientTest, SeparateLanesAreSeparateStreams) {
  const Tensor x = RandomRows(1, rng_);
  CallOptions a, b;
  b.lane = 1;
  ExpectDoubled(client_->Forward("double", x.view(), a).get(), x);
  ExpectDoubled(client_->Forward("double", x.view(), b).get(), x);
  EXPECT_EQ(client_->streams_opened(), 2);
}

TEST_F(ClientTest, PerRequestErrorLeavesTheStreamOpen) {
  const Tensor x = RandomRows(1, rng_);
  auto bad = client_->Forward("error", x.view()).get();
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("bad input"), absl::string_view::npos);
  // Different layer, different stream; the "error" stream itself also lives on.
  EXPECT_EQ(client_->Forward("error", x.view()).get().status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->streams_opened(), 1);
}

TEST_F(ClientTest, DeadlineEndsACallTheServerNeverAnswers) {
  const Tensor x = RandomRows(1, rng_);
  CallOptions options;
  options.timeout = absl::Milliseconds(150);
  const absl::Time start = absl::Now();
  auto r = client_->Forward("silent", x.view(), options).get();
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_GE(took, absl::Milliseconds(140));
  EXPECT_LT(took, absl::Seconds(2));
  // A call with no deadline on a held stream does not end by itself; a later
  // call with a deadline still ends on time.
  options.timeout = absl::Milliseconds(50);
  EXPECT_EQ(client_->Forward("silent", x.view(), options).get().status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ClientTest, CallbackFormRunsOnce) {
  const Tensor x = RandomRows(3, rng_);
  absl::Mutex mu;
  int calls = 0;
  absl::StatusOr<ForwardResult> got = absl::UnknownError("unset");
  client_->Forward("double", x.view(), {}, [&](absl::StatusOr<ForwardResult> r) {
    absl::MutexLock lock(&mu);
    ++calls;
    got = std::move(r);
  });
  absl::MutexLock lock(&mu);
  mu.AwaitWithTimeout(absl::Condition(
                          +[](int* c) { return *c > 0; }, &calls),
                      absl::Seconds(10));
  EXPECT_EQ(calls, 1);
  ExpectDoubled(got, x);
}

TEST_F(ClientTest, StreamEndedByServerFailsPendingCallsThenReconnects) {
  const Tensor x = RandomRows(1, rng_);
  // Pending on the "drop" stream: a silent call ... then the drop.
  CallOptions options;
  options.timeout = absl::Seconds(20);
  auto silent_then_drop = client_->Forward("drop", x.view(), options);
  auto r = silent_then_drop.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("fake server drops"), absl::string_view::npos) << r.status();
  // The next call on that layer opens a new stream; "drop" drops again, so
  // use the stream count to see the reconnect.
  const int64_t before = client_->streams_opened();
  EXPECT_EQ(client_->Forward("drop", x.view(), options).get().status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->streams_opened(), before + 1);
}

TEST_F(ClientTest, ReconnectsAfterServerRestart) {
  const Tensor x = RandomRows(2, rng_);
  ExpectDoubled(client_->Forward("double", x.view()).get(), x);
  // A call pending when the server goes away ends UNAVAILABLE (or CANCELLED).
  auto pending = client_->Forward("silent", x.view());
  absl::SleepFor(absl::Milliseconds(50));
  const int port = server_.port();
  server_.Stop();
  auto lost = pending.get();
  EXPECT_FALSE(lost.ok());
  EXPECT_TRUE(lost.status().code() == absl::StatusCode::kUnavailable ||
              lost.status().code() == absl::StatusCode::kCancelled)
      << lost.status();
  // While it is down, calls fail fast.
  CallOptions options;
  options.timeout = absl::Seconds(5);
  EXPECT_FALSE(client_->Forward("double", x.view(), options).get().ok());
  // Same port, new server: the client reconnects within its backoff.
  FakeServer again(port);
  ASSERT_EQ(again.port(), port);
  absl::StatusOr<ForwardResult> r = absl::UnknownError("no try");
  for (int i = 0; i < 100 && !r.ok(); ++i) {
    r = client_->Forward("double", x.view(), options).get();
    if (!r.ok()) absl::SleepFor(absl::Milliseconds(50));
  }
  ExpectDoubled(r, x);
}

TEST_F(ClientTest, DescribeLayerReportsServerCodes) {
  auto info = client_->DescribeLayer("double");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->in_features(), 8);
  EXPECT_EQ(client_->DescribeLayer("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(ClientConnectTest, UnreachableServerIsUnavailable) {
  // A port nobody listens on: bind-and-close gives a free one.
  FakeServer probe;
  const std::string address = probe.address();
  probe.Stop();
  auto client = *Client::Connect(address);
  EXPECT_EQ(client->WaitForReady(absl::Milliseconds(300)).code(), absl::StatusCode::kUnavailable);
  Tensor x = Tensor::Zeros(DType::kF32, {1, 8});
  x.as<float>()[0] = 1;
  auto r = client->Forward("double", x.view()).get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

// Many threads calling through one Client while streams are refused as
// draining (retired, half-closed once their written calls are answered),
// ended by the server, or left silent until the calls' deadlines expire on
// the timer thread, and the Client destroyed with calls still in flight:
// every callback runs exactly once, and nothing in gRPC trips over an
// operation started on a finished call (the drain retirement once aborted
// test processes with gRPC's "ref_counted.h: assertion failed: prior > 0").
TEST(ClientStressTest, RetiringEndingAndExpiringStreamsUnderConcurrentCalls) {
  const uint64_t seed = cli_testing::TestSeed();
  std::cout << "QLAYER_TEST_SEED=" << seed << "\n";
  FakeServer server;
  ASSERT_NE(server.port(), 0);
  const char* const kLayers[] = {"double", "drain", "drainend", "drop", "silent", "hold4"};
  int64_t answered = 0, refused = 0, expired = 0;  // over all rounds (each round under its mu)
  for (int round = 0; round < 12; ++round) {
    auto client = *Client::Connect(server.address());
    ASSERT_TRUE(client->WaitForReady(absl::Seconds(10)).ok());
    absl::Mutex mu;
    int64_t started = 0, finished = 0, twice = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937_64 rng(seed + 101 * round + t);
        const Tensor x = RandomRows(1, rng);
        for (int i = 0; i < 150; ++i) {
          const char* layer = kLayers[rng() % 6];
          CallOptions o;
          o.lane = static_cast<int>(rng() % 2);
          // Short deadlines: Expire races the answers and the stream ends.
          o.timeout = absl::Microseconds(200 + rng() % 20000);
          auto once = std::make_shared<std::atomic<int>>(0);
          {
            absl::MutexLock lock(&mu);
            ++started;
          }
          client->Forward(layer, x.view(), o, [&, once](absl::StatusOr<ForwardResult> r) {
            absl::MutexLock lock(&mu);
            if (once->fetch_add(1) > 0) ++twice;
            ++finished;
            if (r.ok()) {
              ++answered;
            } else if (absl::StrContains(r.status().message(), "draining")) {
              ++refused;  // the refusal itself, or a call its retired stream never sent
            } else if (r.status().code() == absl::StatusCode::kDeadlineExceeded) {
              ++expired;
            }
          });
          if (rng() % 8 == 0) absl::SleepFor(absl::Microseconds(rng() % 3000));
        }
      });
    }
    for (std::thread& th : threads) th.join();
    // Odd rounds destroy the Client with calls still in flight.
    if (round % 2 == 0) {
      absl::MutexLock lock(&mu);
      auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return finished == started; };
      mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(30));
    }
    client.reset();  // Shutdown: every callback has run once it returns
    absl::MutexLock lock(&mu);
    EXPECT_EQ(finished, started) << "round " << round;
    EXPECT_EQ(twice, 0) << "round " << round;
  }
  std::cout << answered << " answered, " << refused << " refused as draining, " << expired
            << " expired\n";
  EXPECT_GT(answered, 0);
  EXPECT_GT(refused, 0);
  EXPECT_GT(expired, 0);
}

}  // namespace
}  // namespace qlayer
