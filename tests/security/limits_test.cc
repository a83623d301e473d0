// Explicit limits of qlayer-server, observed from outside: HTTP/2 streams
// per connection (--max-streams-per-connection) and requests in flight per
// stream (--max-inflight-per-stream).
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/security/security_test_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::security_testing;  // NOLINT(build/namespaces)
using ::qlayer::testing::BuildDir;
using ::qlayer::testing::MakeRequest;
using ::qlayer::testing::MetricValue;
using ::qlayer::testing::RandomInput;
using ::qlayer::testing::RunQuantize;
using ::qlayer::testing::ServerProcess;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::TestSeed;
using Stream = grpc::ClientReaderWriter<v1::ForwardRequest, v1::ForwardResponse>;

// A channel that is its own connection (no subchannel shared with others).
std::shared_ptr<grpc::Channel> OwnConnection(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

struct OpenStream {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream;
};

// Opens a Forward stream with `deadline_s` and sends one request; true when
// its answer came back.
bool OpenAndAsk(v1::LayerService::Stub& stub, OpenStream& s, double deadline_s, const Tensor& x) {
  s.ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(deadline_s * 1000)));
  s.stream = stub.Forward(&s.ctx);
  if (!s.stream->Write(MakeRequest(1, kLayer, x.view()))) return false;
  v1::ForwardResponse answer;
  return s.stream->Read(&answer) && answer.request_id() == 1 && answer.has_output();
}

TEST(LimitsTest, StreamsPerConnectionAreCappedPerConnection) {
  ServerProcess server(ModelDir(), {"--max-streams-per-connection", "2"});
  ASSERT_TRUE(server.ok());
  std::mt19937_64 rng(TestSeed());
  const Tensor x = RandomInput(DType::kF16, 1, kK, rng);
  auto channel = OwnConnection(server.address());
  auto stub = v1::LayerService::NewStub(channel);
  OpenStream first, second;
  ASSERT_TRUE(OpenAndAsk(*stub, first, 10, x));
  ASSERT_TRUE(OpenAndAsk(*stub, second, 10, x));
  // A third stream on the same connection waits for a free slot: unanswered
  // until its deadline.
  {
    OpenStream third;
    EXPECT_FALSE(OpenAndAsk(*stub, third, 1.0, x));
    EXPECT_EQ(third.stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  // Another connection has its own streams.
  {
    auto other = v1::LayerService::NewStub(OwnConnection(server.address()));
    OpenStream s;
    EXPECT_TRUE(OpenAndAsk(*other, s, 10, x));
    s.stream->WritesDone();
    EXPECT_TRUE(s.stream->Finish().ok());
  }
  // Ending one frees its slot.
  first.stream->WritesDone();
  ASSERT_TRUE(first.stream->Finish().ok());
  OpenStream again;
  EXPECT_TRUE(OpenAndAsk(*stub, again, 10, x));
  for (OpenStream* s : {&second, &again}) {
    s->stream->WritesDone();
    EXPECT_TRUE(s->stream->Finish().ok());
  }
}

// 64 one-row requests written back to back on one stream to a server with
// one worker; returns the batches the layer ran (qlayer_batch_rows_count).
// Batches of several requests form only when the server has read requests
// ahead of their answers.
double BatchesForAFlood(const std::string& model, int64_t max_inflight, int64_t k) {
  ServerProcess server(model, {"--workers", "1", "--kernel-threads", "1",
                               "--max-inflight-per-stream", absl::StrCat(max_inflight)});
  EXPECT_TRUE(server.ok());
  if (!server.ok()) return -1;
  std::mt19937_64 rng(TestSeed());
  constexpr int kRequests = 64;
  std::vector<Tensor> inputs;
  for (int i = 0; i < kRequests; ++i) inputs.push_back(RandomInput(DType::kF16, 1, k, rng));
  auto stub = v1::LayerService::NewStub(OwnConnection(server.address()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  std::unique_ptr<Stream> stream = stub->Forward(&ctx);
  // Written from another thread: with few requests in flight the server
  // stops reading, and this thread must keep reading answers meanwhile.
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      if (!stream->Write(MakeRequest(i + 1, kLayer, inputs[i].view()))) break;
    }
    stream->WritesDone();
  });
  int answered = 0;
  v1::ForwardResponse answer;
  while (stream->Read(&answer)) answered += answer.has_output() ? 1 : 0;
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(answered, kRequests);
  const std::string metrics = ::qlayer::testing::HttpGet(server.metrics_port(), "/metrics");
  EXPECT_EQ(MetricValue(metrics, "qlayer_batch_rows_sum", {{"layer", kLayer}}), kRequests);
  return MetricValue(metrics, "qlayer_batch_rows_count", {{"layer", kLayer}});
}

TEST(LimitsTest, InflightPerStreamBoundsWhatTheServerReadsAhead) {
  // A layer slow enough (about a millisecond per call on one thread) that
  // requests pile up behind the first one when the server reads ahead.
  constexpr int64_t kBigK = 4096;
  TempDir model;
  ASSERT_TRUE(
      RunQuantize({"--format", "awq", "--bits", "4", "--group-size", "128", "--seed",
                   absl::StrCat(TestSeed()), "--shape", absl::StrCat(kLayer, "=4096x", kBigK)},
                  model.path()));
  // One request in flight: the next is read only after the answer, so every
  // batch is one request.
  EXPECT_EQ(BatchesForAFlood(model.path(), 1, kBigK), 64);
  // The default reads ahead: requests queue and are batched together.
  EXPECT_LT(BatchesForAFlood(model.path(), 1024, kBigK), 64);
}

}  // namespace
}  // namespace qlayer
