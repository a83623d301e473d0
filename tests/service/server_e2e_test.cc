// End to end against one real qlayer-server (started once for the suite on
// a fresh qlayer-quantize GPTQ checkpoint, on free loopback ports): the
// service's behaviour over the real wire. Pipelining on one stream and
// across streams (answers matched by id, batches formed, visible in
// /metrics), bad requests answered with the right code while the stream
// lives on, oversized messages, clients that vanish, per-request deadlines,
// MoEForward, health, reflection, and /metrics over HTTP.
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/unknown_field_set.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::testing;  // NOLINT(build/namespaces)

constexpr char kSmall[] = "model.layers.0.self_attn.q_proj";  // K=128 N=64
constexpr char kBig[] = "model.layers.0.mlp.up_proj";         // K=1024 N=1024
constexpr int kMaxRows = 64;                                  // --max-rows-per-request
constexpr int kMaxReceive = 1 << 20;                          // --max-receive-bytes

class ServerE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    ASSERT_TRUE(
        RunQuantize({"--format", "gptq", "--bits", "4", "--group-size", "64", "--sym", "--seed",
                     absl::StrCat(TestSeed()), "--shape", absl::StrCat(kSmall, "=64x128"),
                     "--shape", absl::StrCat(kBig, "=1024x1024")},
                    dir_->path()));
    auto layers = LoadLayers(dir_->path());
    ASSERT_EQ(layers.size(), 2u);
    refs_ = new std::map<std::string, Reference>;
    for (const auto& [name, w] : layers) refs_->emplace(name, Reference(w));
    server_ =
        new ServerProcess(dir_->path(), {"--workers", "2", "--max-rows-per-request",
                                         absl::StrCat(kMaxRows), "--max-receive-bytes",
                                         absl::StrCat(kMaxReceive), "--max-batch-rows", "256"});
    ASSERT_TRUE(server_->ok());
  }
  static void TearDownTestSuite() {
    if (server_ != nullptr) {
      EXPECT_EQ(server_->Terminate(20), 0);
    }
    delete server_;
    delete refs_;
    delete dir_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->ok());
    rng_.seed(TestSeed() +
              static_cast<uint64_t>(::testing::UnitTest::GetInstance()->random_seed()));
  }
  void TearDown() override { EXPECT_TRUE(server_->Alive()) << "qlayer-server died"; }

  // Checks a successful answer against the reference for its input.
  static void ExpectCorrect(const v1::ForwardResponse& r, const std::string& layer,
                            const Tensor& x) {
    SCOPED_TRACE(absl::StrCat("id ", r.request_id(), " ", layer, " M=", x.dim(0)));
    ASSERT_EQ(r.error().code(), 0) << r.error().message();
    ConstTensorView y = OutputView(r);
    ASSERT_FALSE(y.empty());
    const Reference& ref = refs_->at(layer);
    ASSERT_EQ(y.shape, (Shape{x.dim(0), ref.N()}));
    EXPECT_LT(RelativeError(y, ref.Forward(x.view())), x.dtype() == DType::kBF16 ? 6e-3 : 4e-3)
        << r.kernel();
  }

  std::string Scrape() { return HttpGet(server_->metrics_port(), "/metrics"); }

  static TempDir* dir_;
  static std::map<std::string, Reference>* refs_;
  static ServerProcess* server_;
  std::mt19937_64 rng_;
};
TempDir* ServerE2E::dir_ = nullptr;
std::map<std::string, Reference>* ServerE2E::refs_ = nullptr;
ServerProcess* ServerE2E::server_ = nullptr;

// Writes `requests` on one Forward stream from a second thread while this
// one reads; returns the answers by id and the stream's final status.
struct StreamResult {
  std::map<uint64_t, v1::ForwardResponse> answers;
  int duplicates = 0;
  grpc::Status status;
};
StreamResult RunStream(v1::LayerService::Stub& stub,
                       const std::vector<v1::ForwardRequest>& requests) {
  StreamResult out;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub.Forward(&ctx);
  std::thread writer([&] {
    for (const auto& r : requests) {
      if (!stream->Write(r)) break;
    }
    stream->WritesDone();
  });
  v1::ForwardResponse r;
  while (stream->Read(&r)) {
    if (!out.answers.emplace(r.request_id(), r).second) ++out.duplicates;
  }
  writer.join();
  out.status = stream->Finish();
  return out;
}

TEST_F(ServerE2E, ListAndDescribeShowShapesFormatAndKernelChoice) {
  auto stub = server_->Stub();
  v1::ListLayersResponse list;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->ListLayers(&ctx, {}, &list).ok());
  }
  ASSERT_EQ(list.layers_size(), 2);
  EXPECT_EQ(list.layers(0).name(), kBig);  // sorted by name
  EXPECT_EQ(list.layers(1).name(), kSmall);
  {
    v1::ListLayersRequest req;
    req.set_glob("*.self_attn.*");
    grpc::ClientContext ctx;
    v1::ListLayersResponse some;
    ASSERT_TRUE(stub->ListLayers(&ctx, req, &some).ok());
    ASSERT_EQ(some.layers_size(), 1);
    EXPECT_EQ(some.layers(0).name(), kSmall);
  }
  v1::DescribeLayerRequest req;
  req.set_name(kBig);
  v1::LayerInfo info;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->DescribeLayer(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(info.name(), kBig);
  EXPECT_EQ(info.kind(), "linear");
  EXPECT_EQ(info.in_features(), 1024);
  EXPECT_EQ(info.out_features(), 1024);
  EXPECT_EQ(info.format(), "gptq");
  EXPECT_EQ(info.weight_type(), "uint4b8");
  EXPECT_EQ(info.bits(), 4);
  EXPECT_EQ(info.group_size(), 64);
  EXPECT_FALSE(info.zero_points());
  EXPECT_FALSE(info.act_order());
  EXPECT_FALSE(info.has_bias());
  EXPECT_EQ(info.scale_dtype(), "f16");
  // qweight (K*N/2 bytes) + f16 scales (K/G*N*2 bytes).
  EXPECT_EQ(info.weight_bytes(), 1024 * 1024 / 2 + 1024 / 64 * 1024 * 2);
  EXPECT_GT(info.prepared_bytes(), 0);
  EXPECT_EQ(info.device(), "cpu");
  ASSERT_GT(info.kernels_size(), 0);
  for (int i = 0; i + 1 < info.kernels_size(); ++i) {
    EXPECT_GT(info.kernels(i).max_rows(), 0);
    // CPU kernels offer no timing: their hand-over is the factory's.
    EXPECT_EQ(info.kernels(i).max_rows_source(), "default");
    if (i > 0) {
      EXPECT_GT(info.kernels(i).max_rows(), info.kernels(i - 1).max_rows());
    }
  }
  EXPECT_EQ(info.kernels(info.kernels_size() - 1).max_rows(), 0);
  std::set<std::string> seen;
  for (const auto& k : info.kernels()) seen.insert(k.kernel());
  for (const v1::KernelRejection& r : info.rejected()) {
    EXPECT_FALSE(r.reason().empty()) << r.kernel();
    EXPECT_FALSE(seen.count(r.kernel())) << r.kernel() << " both chosen and rejected";
  }
  req.set_name("model.layers.9.nope");
  grpc::ClientContext ctx;
  grpc::Status s = stub->DescribeLayer(&ctx, req, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(s.error_message().find("model.layers.9.nope"), std::string::npos);
}

TEST_F(ServerE2E, ManyRequestsPipelinedOnOneStreamAreAllAnsweredById) {
  auto stub = server_->Stub();
  std::vector<v1::ForwardRequest> requests;
  std::map<uint64_t, Tensor> inputs;
  std::uniform_int_distribution<int> rows(1, 4);
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  for (uint64_t id = 1000; id < 1300; ++id) {
    Tensor x = RandomInput(dtypes[id % 3], rows(rng_), 128, rng_);
    requests.push_back(MakeRequest(id, kSmall, x.view()));
    inputs.emplace(id, std::move(x));
  }
  StreamResult res = RunStream(*stub, requests);
  EXPECT_TRUE(res.status.ok()) << res.status.error_message();
  EXPECT_EQ(res.duplicates, 0);
  ASSERT_EQ(res.answers.size(), requests.size());
  for (const auto& [id, r] : res.answers) {
    ASSERT_TRUE(inputs.count(id)) << id;
    ExpectCorrect(r, kSmall, inputs.at(id));
    EXPECT_EQ(r.output().dtype(), requests[id - 1000].input().dtype());
    EXPECT_GE(r.timing().total_us(), r.timing().queue_us() + r.timing().compute_us());
  }
}

TEST_F(ServerE2E, RequestsFromSeveralStreamsAreBatchedTogether) {
  const std::string before = Scrape();
  ASSERT_FALSE(before.empty());
  const std::map<std::string, std::string> big = {{"layer", kBig}};
  const double batches0 = std::max(0.0, MetricValue(before, "qlayer_batch_rows_count", big));
  const double rows0 = std::max(0.0, MetricValue(before, "qlayer_batch_rows_sum", big));
  const double ok0 =
      std::max(0.0, MetricValue(before, "qlayer_requests_total",
                                {{"layer", kBig}, {"method", "Forward"}, {"code", "OK"}}));

  constexpr int kStreams = 4, kPerStream = 48;
  std::vector<std::vector<v1::ForwardRequest>> requests(kStreams);
  std::map<uint64_t, Tensor> inputs;
  uint64_t id = 1;
  for (int s = 0; s < kStreams; ++s) {
    for (int i = 0; i < kPerStream; ++i, ++id) {
      Tensor x = RandomInput(DType::kF16, 1, 1024, rng_);
      requests[static_cast<size_t>(s)].push_back(MakeRequest(id, kBig, x.view()));
      inputs.emplace(id, std::move(x));
    }
  }
  std::vector<StreamResult> results(kStreams);
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<v1::LayerService::Stub>> stubs;
  for (int s = 0; s < kStreams; ++s) stubs.push_back(server_->Stub());  // own connections
  for (int s = 0; s < kStreams; ++s) {
    threads.emplace_back([&, s] {
      results[static_cast<size_t>(s)] =
          RunStream(*stubs[static_cast<size_t>(s)], requests[static_cast<size_t>(s)]);
    });
  }
  for (std::thread& t : threads) t.join();
  int64_t max_batch = 0;
  for (int s = 0; s < kStreams; ++s) {
    const StreamResult& res = results[static_cast<size_t>(s)];
    EXPECT_TRUE(res.status.ok()) << res.status.error_message();
    ASSERT_EQ(res.answers.size(), static_cast<size_t>(kPerStream));
    for (const auto& req : requests[static_cast<size_t>(s)]) {
      auto it = res.answers.find(req.request_id());
      ASSERT_NE(it, res.answers.end()) << "no answer for id " << req.request_id();
      ExpectCorrect(it->second, kBig, inputs.at(req.request_id()));
      max_batch = std::max(max_batch, it->second.batch_rows());
    }
  }
  // One-row requests: a batch_rows above 1 means rows of several requests
  // (from this or other streams) ran in one kernel call.
  EXPECT_GT(max_batch, 1);

  const std::string after = Scrape();
  const double batches = MetricValue(after, "qlayer_batch_rows_count", big) - batches0;
  const double rows = MetricValue(after, "qlayer_batch_rows_sum", big) - rows0;
  const double ok = MetricValue(after, "qlayer_requests_total",
                                {{"layer", kBig}, {"method", "Forward"}, {"code", "OK"}}) -
                    ok0;
  EXPECT_EQ(rows, kStreams * kPerStream);
  EXPECT_EQ(ok, kStreams * kPerStream);
  EXPECT_LT(batches, kStreams * kPerStream) << "no batch held more than one request";
  std::printf("[ batches ] %d one-row requests ran in %.0f kernel calls (largest %lld rows)\n",
              kStreams * kPerStream, batches, static_cast<long long>(max_batch));
}

TEST_F(ServerE2E, BadRequestsGetErrorAnswersAndTheStreamLivesOn) {
  auto stub = server_->Stub();
  Tensor good = RandomInput(DType::kF16, 2, 128, rng_);
  std::vector<v1::ForwardRequest> requests;
  std::map<uint64_t, grpc::StatusCode> expect;
  auto add = [&](v1::ForwardRequest r, grpc::StatusCode code) {
    r.set_request_id(requests.size() + 1);
    expect[r.request_id()] = code;
    requests.push_back(std::move(r));
  };
  add(MakeRequest(0, kSmall, good.view()), grpc::StatusCode::OK);
  {
    v1::ForwardRequest r = MakeRequest(0, kSmall, good.view());
    r.mutable_input()->set_dtype(v1::DTYPE_I32);
    add(r, grpc::StatusCode::INVALID_ARGUMENT);
  }
  add(MakeRequest(0, kSmall, RandomInput(DType::kF16, 2, 96, rng_).view()),
      grpc::StatusCode::INVALID_ARGUMENT);  // wrong K
  {
    v1::ForwardRequest r = MakeRequest(0, kSmall, good.view());
    r.mutable_input()->mutable_data()->resize(good.nbytes() - 1);  // truncated
    add(r, grpc::StatusCode::INVALID_ARGUMENT);
  }
  add(MakeRequest(0, "model.layers.7.missing", good.view()), grpc::StatusCode::NOT_FOUND);
  add(MakeRequest(0, kSmall, RandomInput(DType::kF16, kMaxRows + 1, 128, rng_).view()),
      grpc::StatusCode::INVALID_ARGUMENT);  // more rows than --max-rows-per-request
  add(MakeRequest(0, kSmall, good.view()), grpc::StatusCode::OK);
  {
    // JSON-style: values, no dtype (f32), no shape (one row) -> answered in values.
    v1::ForwardRequest r;
    r.set_layer(kSmall);
    for (int k = 0; k < 128; ++k)
      r.mutable_input()->add_values(LoadAsDouble(good.data(), DType::kF16, k));
    add(r, grpc::StatusCode::OK);
  }
  const std::string before = Scrape();
  const double invalid0 =
      std::max(0.0, MetricValue(before, "qlayer_requests_total",
                                {{"layer", kSmall}, {"code", "INVALID_ARGUMENT"}}));

  StreamResult res = RunStream(*stub, requests);
  EXPECT_TRUE(res.status.ok()) << res.status.error_message();
  ASSERT_EQ(res.answers.size(), requests.size());
  for (const auto& [id, code] : expect) {
    const v1::ForwardResponse& r = res.answers.at(id);
    SCOPED_TRACE(absl::StrCat("request ", id, ": ", r.error().message()));
    EXPECT_EQ(r.error().code(), static_cast<int>(code));
    if (code != grpc::StatusCode::OK) {
      EXPECT_FALSE(r.error().message().empty());
      EXPECT_FALSE(r.has_output());
    }
  }
  ExpectCorrect(res.answers.at(1), kSmall, good);
  ExpectCorrect(res.answers.at(7), kSmall, good);
  EXPECT_NE(res.answers.at(4).error().message().find("expected 512"), std::string::npos);
  // The values request is answered in values, f32, one row [1, 64].
  const v1::ForwardResponse& v = res.answers.at(8);
  ASSERT_EQ(v.output().values_size(), 64);
  EXPECT_TRUE(v.output().data().empty());
  EXPECT_EQ(v.output().dtype(), v1::DTYPE_F32);
  const std::vector<double> ref = refs_->at(kSmall).Forward(good.view());  // row 0
  double num = 0, den = 0;
  for (int n = 0; n < 64; ++n) {
    num += (v.output().values(n) - ref[n]) * (v.output().values(n) - ref[n]);
    den += ref[n] * ref[n];
  }
  EXPECT_LT(std::sqrt(num / den), 4e-3);

  const double invalid = MetricValue(Scrape(), "qlayer_requests_total",
                                     {{"layer", kSmall}, {"code", "INVALID_ARGUMENT"}});
  EXPECT_EQ(invalid - invalid0, 4);
}

TEST_F(ServerE2E, AnOversizedMessageEndsOnlyItsOwnStream) {
  auto stub = server_->Stub();
  // 8 rows x 1024 x f32 = 32 KiB per row block; 40 rows ~ 160 KiB is fine,
  // but one message above --max-receive-bytes is a transport error.
  Tensor huge = RandomInput(DType::kF32, (kMaxReceive / (1024 * 4)) + 8, 1024, rng_);
  StreamResult res = RunStream(*stub, {MakeRequest(1, kBig, huge.view())});
  EXPECT_EQ(res.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << res.status.error_message();
  EXPECT_TRUE(res.answers.empty());
  // The server and new streams carry on.
  Tensor x = RandomInput(DType::kF16, 3, 1024, rng_);
  res = RunStream(*stub, {MakeRequest(2, kBig, x.view())});
  ASSERT_TRUE(res.status.ok()) << res.status.error_message();
  ExpectCorrect(res.answers.at(2), kBig, x);
}

TEST_F(ServerE2E, ClientsThatVanishMidStreamDoNotHurtTheServer) {
  Tensor x = RandomInput(DType::kF16, 16, 1024, rng_);
  for (int round = 0; round < 3; ++round) {
    auto channel = server_->Channel();
    auto stub = v1::LayerService::NewStub(channel);
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = stub->Forward(ctx.get());
    for (uint64_t id = 0; id < 40; ++id) stream->Write(MakeRequest(id, kBig, x.view()));
    if (round == 1) {
      v1::ForwardResponse r;
      stream->Read(&r);  // one answer in, the rest still computing
    }
    // Gone: cancel without reading or closing, and drop the connection.
    ctx->TryCancel();
    stream.reset();
    ctx.reset();
    stub.reset();
    channel.reset();
  }
  // The server keeps serving, and let go of every vanished stream.
  auto stub = server_->Stub();
  Tensor y = RandomInput(DType::kBF16, 2, 128, rng_);
  StreamResult res = RunStream(*stub, {MakeRequest(9, kSmall, y.view())});
  ASSERT_TRUE(res.status.ok()) << res.status.error_message();
  ExpectCorrect(res.answers.at(9), kSmall, y);
  double open = -1;
  for (int i = 0; i < 200 && open != 0; ++i) {
    open = MetricValue(Scrape(), "qlayer_open_streams", {});
    if (open != 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(open, 0) << "streams of vanished clients were not finished";
}

TEST_F(ServerE2E, ARequestPastItsTimeoutIsAnsweredDeadlineExceededNotComputed) {
  auto stub = server_->Stub();
  // A 64-row request on the big layer occupies the layer for a while; the
  // 1 us request behind it on the same layer expires in the queue.
  Tensor slow = RandomInput(DType::kF32, kMaxRows, 1024, rng_);
  Tensor x = RandomInput(DType::kF16, 1, 1024, rng_);
  std::vector<v1::ForwardRequest> requests = {MakeRequest(1, kBig, slow.view()),
                                              MakeRequest(2, kBig, x.view()),
                                              MakeRequest(3, kBig, x.view())};
  requests[1].set_timeout_us(1);
  requests[2].set_timeout_us(60'000'000);
  StreamResult res = RunStream(*stub, requests);
  ASSERT_TRUE(res.status.ok()) << res.status.error_message();
  ASSERT_EQ(res.answers.size(), 3u);
  ExpectCorrect(res.answers.at(1), kBig, slow);
  const v1::ForwardResponse& late = res.answers.at(2);
  EXPECT_EQ(late.error().code(), static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED))
      << late.error().message();
  EXPECT_TRUE(late.kernel().empty());
  EXPECT_EQ(late.timing().compute_us(), 0);
  ExpectCorrect(res.answers.at(3), kBig, x);
}

// The checkpoint here has no MoE block (moe_e2e_test.cc serves those): a
// linear layer gets INVALID_ARGUMENT naming the right method, an unknown
// name NOT_FOUND, and the stream lives on.
TEST_F(ServerE2E, MoEForwardOnLinearLayersAnswersPerRequestAndTheStreamLives) {
  auto stub = server_->Stub();
  grpc::ClientContext ctx;
  auto stream = stub->MoEForward(&ctx);
  for (uint64_t id = 5; id < 8; ++id) {
    v1::MoEForwardRequest r;
    r.set_request_id(id);
    r.set_layer(id == 6 ? "nope" : kSmall);
    ASSERT_TRUE(stream->Write(r));
  }
  stream->WritesDone();
  std::set<uint64_t> ids;
  v1::MoEForwardResponse r;
  while (stream->Read(&r)) {
    ids.insert(r.request_id());
    EXPECT_EQ(r.error().code(),
              static_cast<int>(r.request_id() == 6 ? grpc::StatusCode::NOT_FOUND
                                                   : grpc::StatusCode::INVALID_ARGUMENT))
        << r.error().message();
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(ids, (std::set<uint64_t>{5, 6, 7}));
}

TEST_F(ServerE2E, HealthIsServedFromTheCompiledProto) {
  auto stub = grpc::health::v1::Health::NewStub(server_->Channel());
  for (const char* service : {"", "qlayer.v1.LayerService"}) {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("no.such.Service");
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Check(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  grpc::ClientContext ctx;
  auto watch = stub->Watch(&ctx, {});
  grpc::health::v1::HealthCheckResponse first;
  ASSERT_TRUE(watch->Read(&first));
  EXPECT_EQ(first.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  ctx.TryCancel();
  (void)watch->Finish();
}

// --- server reflection, spoken by hand (Debian ships no reflection .proto) ---

// A length-delimited field `field` holding `bytes`.
std::string LengthDelimited(int field, const std::string& bytes) {
  std::string out(1, static_cast<char>((field << 3) | 2));
  size_t n = bytes.size();
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    out.push_back(static_cast<char>(n ? (b | 0x80) : b));
  } while (n);
  return out + bytes;
}

// One request/answer over grpc.reflection.v1alpha.ServerReflection.
std::string ReflectionCall(const std::shared_ptr<grpc::Channel>& channel,
                           const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](intptr_t tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(got), tag);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  EXPECT_TRUE(step(1));
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  EXPECT_TRUE(step(2));
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  const bool got = step(3);
  call->WritesDone(reinterpret_cast<void*>(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  std::string bytes;
  if (got) {
    std::vector<grpc::Slice> slices;
    (void)in.Dump(&slices);
    for (const grpc::Slice& s : slices)
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  return bytes;
}

// The length-delimited payloads of `field` in `message`.
std::vector<std::string> Fields(const std::string& message, int field) {
  google::protobuf::UnknownFieldSet set;
  EXPECT_TRUE(set.ParseFromString(message));
  std::vector<std::string> out;
  for (int i = 0; i < set.field_count(); ++i) {
    const auto& f = set.field(i);
    if (f.number() == field && f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      out.push_back(f.length_delimited());
    }
  }
  return out;
}

TEST_F(ServerE2E, ReflectionListsAndResolvesEveryService) {
  auto channel = server_->Channel();
  // ServerReflectionRequest{list_services = 7: "*"} -> list_services_response = 6
  // {service = 1 {name = 1}}.
  const std::string listed = ReflectionCall(channel, LengthDelimited(7, "*"));
  const auto list = Fields(listed, 6);
  ASSERT_EQ(list.size(), 1u) << "no list_services_response";
  std::set<std::string> names;
  for (const std::string& svc : Fields(list[0], 1)) {
    for (const std::string& name : Fields(svc, 1)) names.insert(name);
  }
  EXPECT_TRUE(names.count("qlayer.v1.LayerService"));
  EXPECT_TRUE(names.count("grpc.health.v1.Health"));
  EXPECT_TRUE(names.count("grpc.reflection.v1alpha.ServerReflection"));

  // What grpcurl does next: file_containing_symbol = 4 -> file_descriptor_response = 4
  // {file_descriptor_proto = 1}. The health service must resolve (gRPC's
  // built-in one would answer error_response = 7 here).
  for (const char* symbol : {"grpc.health.v1.Health", "qlayer.v1.LayerService"}) {
    const std::string resolved = ReflectionCall(channel, LengthDelimited(4, symbol));
    EXPECT_TRUE(Fields(resolved, 7).empty()) << symbol << " answered with an error";
    const auto files = Fields(resolved, 4);
    ASSERT_EQ(files.size(), 1u) << symbol;
    bool found = false;
    for (const std::string& file : Fields(files[0], 1)) {
      google::protobuf::FileDescriptorProto fd;
      ASSERT_TRUE(fd.ParseFromString(file));
      for (const auto& s : fd.service()) {
        if (absl::StrCat(fd.package(), ".", s.name()) == symbol) found = true;
      }
    }
    EXPECT_TRUE(found) << symbol;
  }
}

TEST_F(ServerE2E, MetricsAreScrapedOverHttpAndMove) {
  const std::string before = Scrape();
  ASSERT_FALSE(before.empty());
  EXPECT_EQ(MetricValue(before, "qlayer_layer_info",
                        {{"layer", kSmall}, {"format", "gptq"}, {"device", "cpu"}}),
            MetricValue(before, "qlayer_layer_info", {{"layer", kSmall}}));
  EXPECT_GE(MetricValue(before, "qlayer_layer_info", {{"layer", kSmall}}), 1);
  EXPECT_EQ(MetricValue(before, "qlayer_weight_bytes", {{"layer", kBig}, {"device", "cpu"}}),
            1024 * 1024 / 2 + 1024 / 64 * 1024 * 2);
  const std::map<std::string, std::string> ok = {
      {"layer", kSmall}, {"method", "Forward"}, {"code", "OK"}};
  const double ok0 = MetricValue(before, "qlayer_requests_total", ok);
  const double dur0 = MetricValue(before, "qlayer_request_duration_seconds_count",
                                  {{"layer", kSmall}, {"method", "Forward"}});
  const double q0 = MetricValue(before, "qlayer_queue_duration_seconds_count", {{"layer", kSmall}});
  const double c0 =
      MetricValue(before, "qlayer_compute_duration_seconds_count", {{"layer", kSmall}});
  ASSERT_GE(ok0, 0);

  auto stub = server_->Stub();
  std::vector<v1::ForwardRequest> requests;
  for (uint64_t id = 0; id < 5; ++id) {
    requests.push_back(MakeRequest(id, kSmall, RandomInput(DType::kF16, 1, 128, rng_).view()));
  }
  ASSERT_TRUE(RunStream(*stub, requests).status.ok());

  const std::string after = Scrape();
  EXPECT_EQ(MetricValue(after, "qlayer_requests_total", ok) - ok0, 5);
  EXPECT_EQ(MetricValue(after, "qlayer_request_duration_seconds_count",
                        {{"layer", kSmall}, {"method", "Forward"}}) -
                dur0,
            5);
  EXPECT_EQ(MetricValue(after, "qlayer_queue_duration_seconds_count", {{"layer", kSmall}}) - q0, 5);
  const double batches =
      MetricValue(after, "qlayer_compute_duration_seconds_count", {{"layer", kSmall}}) - c0;
  EXPECT_GE(batches, 1);
  EXPECT_LE(batches, 5);
  EXPECT_EQ(HttpGet(server_->metrics_port(), "/nothing-here").find("qlayer_"), std::string::npos);
}

}  // namespace
}  // namespace qlayer
