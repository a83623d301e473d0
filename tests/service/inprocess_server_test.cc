// The assembled server in-process (ServerApp), so that the sanitizers see
// its insides: streams whose clients vanish with work in flight, a health
// Watch left open, and a drain must leave no reactor, request or batch
// behind (LeakSanitizer checks at exit under scripts/test --sanitize).
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/app/server_app.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::testing;  // NOLINT(build/namespaces)

TEST(InProcessServer, VanishingClientsAndDrainLeaveNothingBehind) {
  constexpr char kLayer[] = "model.layers.0.mlp.gate_proj";
  TempDir dir;
  ASSERT_TRUE(
      RunQuantize({"--format", "compressed-tensors", "--bits", "4", "--group-size", "64", "--seed",
                   absl::StrCat(TestSeed()), "--shape", absl::StrCat(kLayer, "=512x512")},
                  dir.path()));
  ServerOptions options;
  options.model.dir = dir.path();
  options.model.device = "cpu";
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";  // the scrape is read in-process
  options.scheduler.workers = 2;
  auto app = ServerApp::Start(options);
  ASSERT_TRUE(app.ok()) << app.status();
  ASSERT_GT((*app)->port(), 0);

  std::mt19937_64 rng(TestSeed());
  Tensor x = RandomInput(DType::kF16, 8, 512, rng);
  auto channel_args = [] {
    grpc::ChannelArguments a;
    a.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
    return a;
  };
  for (int round = 0; round < 4; ++round) {
    auto channel = grpc::CreateCustomChannel((*app)->address(), grpc::InsecureChannelCredentials(),
                                             channel_args());
    auto stub = v1::LayerService::NewStub(channel);
    auto ctx = std::make_unique<grpc::ClientContext>();
    auto stream = stub->Forward(ctx.get());
    for (uint64_t id = 0; id < 30; ++id) stream->Write(MakeRequest(id, kLayer, x.view()));
    if (round % 2 == 1) {
      v1::ForwardResponse r;
      ASSERT_TRUE(stream->Read(&r));
      EXPECT_EQ(r.error().code(), 0) << r.error().message();
    }
    ctx->TryCancel();
  }

  // A well-behaved stream still works, and a watcher stays open into the drain.
  auto channel = grpc::CreateCustomChannel((*app)->address(), grpc::InsecureChannelCredentials(),
                                           channel_args());
  auto stub = v1::LayerService::NewStub(channel);
  {
    grpc::ClientContext ctx;
    auto stream = stub->Forward(&ctx);
    ASSERT_TRUE(stream->Write(MakeRequest(77, kLayer, x.view())));
    stream->WritesDone();
    v1::ForwardResponse r;
    ASSERT_TRUE(stream->Read(&r));
    EXPECT_EQ(r.request_id(), 77u);
    EXPECT_EQ(r.error().code(), 0) << r.error().message();
    EXPECT_TRUE(stream->Finish().ok());
  }
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext watch_ctx;
  auto watch = health->Watch(&watch_ctx, {});
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(watch->Read(&status));
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // Every stream of a vanished client is finished (OnDone ran).
  double open = -1;
  for (int i = 0; i < 300 && open != 0; ++i) {
    open = MetricValue((*app)->metrics_registry().Scrape(), "qlayer_open_streams", {});
    if (open != 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(open, 0);

  const absl::Time t0 = absl::Now();
  (*app)->Drain(absl::Seconds(10));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  while (watch->Read(&status)) {
  }
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  app->reset();
}

}  // namespace
}  // namespace qlayer
