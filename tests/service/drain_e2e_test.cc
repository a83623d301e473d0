// SIGTERM on a busy qlayer-server: health turns NOT_SERVING, the open
// stream gets an answer for every request the server accepted (computed, or
// UNAVAILABLE once draining began), the stream ends, and the process exits 0
// well within its grace period.
#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::testing;  // NOLINT(build/namespaces)
using grpc::health::v1::HealthCheckResponse;

TEST(DrainE2E, SigtermFinishesAcceptedWorkThenExitsZero) {
  constexpr char kLayer[] = "model.layers.3.mlp.down_proj";
  TempDir dir;
  ASSERT_TRUE(RunQuantize({"--format", "awq", "--bits", "4", "--group-size", "128", "--seed",
                           absl::StrCat(TestSeed()), "--shape", absl::StrCat(kLayer, "=1024x1024")},
                          dir.path()));
  auto layers = LoadLayers(dir.path());
  ASSERT_EQ(layers.size(), 1u);
  const Reference ref(layers.begin()->second);
  ServerProcess server(dir.path(),
                       {"--workers", "1", "--max-batch-rows", "16", "--grace-seconds", "15"});
  ASSERT_TRUE(server.ok());

  // Health watcher: SERVING now, NOT_SERVING once draining.
  auto health = grpc::health::v1::Health::NewStub(server.Channel());
  grpc::ClientContext watch_ctx;
  auto watch = health->Watch(&watch_ctx, {});
  std::vector<int> statuses;
  std::thread watcher([&] {
    HealthCheckResponse r;
    while (watch->Read(&r)) statuses.push_back(r.status());
    (void)watch->Finish();
  });

  // A busy stream: 16-row requests, one batch each (--max-batch-rows 16).
  std::mt19937_64 rng(TestSeed());
  std::vector<Tensor> inputs;
  for (int i = 0; i < 64; ++i) inputs.push_back(RandomInput(DType::kF16, 16, 1024, rng));
  auto stub = server.Stub();
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  std::thread writer([&] {
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!stream->Write(MakeRequest(i, kLayer, inputs[i].view()))) break;
    }
    stream->WritesDone();
  });

  std::map<uint64_t, v1::ForwardResponse> answers;
  v1::ForwardResponse r;
  ASSERT_TRUE(stream->Read(&r));  // work is flowing: now terminate
  answers[r.request_id()] = r;
  int exit_status = -2;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread killer([&] { exit_status = server.Terminate(20); });
  while (stream->Read(&r)) {
    EXPECT_TRUE(answers.emplace(r.request_id(), r).second) << "two answers for " << r.request_id();
  }
  writer.join();
  const grpc::Status end = stream->Finish();
  killer.join();
  watcher.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Exit 0, well inside the 15 s grace.
  ASSERT_TRUE(WIFEXITED(exit_status)) << exit_status;
  EXPECT_EQ(WEXITSTATUS(exit_status), 0);
  EXPECT_LT(seconds, 10);
  // The stream ended because the server drained (or the client had already
  // finished), never with an error from lost work.
  EXPECT_TRUE(end.ok() || end.error_code() == grpc::StatusCode::UNAVAILABLE)
      << end.error_code() << " " << end.error_message();
  int computed = 0;
  for (const auto& [id, a] : answers) {
    ASSERT_LT(id, inputs.size());
    if (a.error().code() == 0) {
      ++computed;
      ConstTensorView y = OutputView(a);
      ASSERT_FALSE(y.empty());
      EXPECT_LT(RelativeError(y, ref.Forward(inputs[id].view())), 4e-3) << id;
    } else {
      EXPECT_EQ(a.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
          << a.error().message();
    }
  }
  EXPECT_GE(computed, 1);
  std::printf("[ drain ] %zu of %zu requests answered (%d computed) in %.2f s\n", answers.size(),
              inputs.size(), computed, seconds);
  ASSERT_FALSE(statuses.empty());
  EXPECT_EQ(statuses.front(), HealthCheckResponse::SERVING);
  EXPECT_EQ(statuses.back(), HealthCheckResponse::NOT_SERVING);
}

}  // namespace
}  // namespace qlayer
