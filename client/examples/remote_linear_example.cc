// Calls layers of a running qlayer-server through qlayer::RemoteLinear, the
// way a C++ inference frontend would: the demo server's attention and MLP
// projections (scripts/demo) on a [batch, tokens, K] f16 input, one after
// another and then overlapped (q/o and gate/up sent before any answer is
// awaited), and checks the overlapped answers equal the sequential ones.
//
//   scripts/demo &            # serves model.layers.0.{self_attn.q_proj,o_proj,mlp.*}
//   build/client/examples/qlayer-remote-linear-example --server 127.0.0.1:50051
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/remote_linear.h"
#include "qlayer/kernels/dtype.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "qlayer-server address");
ABSL_FLAG(std::string, layers,
          "model.layers.0.self_attn.q_proj,model.layers.0.mlp.gate_proj,"
          "model.layers.0.mlp.up_proj",
          "comma-separated layers of the same in_features");
ABSL_FLAG(int64_t, batch, 2, "sequences");
ABSL_FLAG(int64_t, tokens, 3, "tokens per sequence");
ABSL_FLAG(double, timeout, 30, "per-call deadline, seconds (re-sends included)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string address = absl::GetFlag(FLAGS_server);
  auto client = qlayer::Client::Connect(address);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().ToString().c_str());
    return 1;
  }
  if (absl::Status s = (*client)->WaitForReady(absl::Seconds(10)); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  qlayer::RemoteLinearOptions options;
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout));
  std::vector<std::unique_ptr<qlayer::RemoteLinear>> layers;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_layers), ',')) {
    auto layer = qlayer::RemoteLinear::Create(client->get(), name, options);
    if (!layer.ok()) {
      std::fprintf(stderr, "%s\n", layer.status().ToString().c_str());
      return 1;
    }
    layers.push_back(*std::move(layer));
  }
  const int64_t K = layers[0]->in_features();
  for (const auto& l : layers) {
    if (l->in_features() != K) {
      std::fprintf(stderr, "%s has K=%lld, %s has K=%lld: give layers of one input width\n",
                   layers[0]->layer().c_str(), static_cast<long long>(K), l->layer().c_str(),
                   static_cast<long long>(l->in_features()));
      return 1;
    }
  }

  // x: [batch, tokens, K] f16, uniform in [-1, 1).
  const qlayer::Shape shape = {absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_tokens), K};
  qlayer::Tensor x = qlayer::Tensor::Zeros(qlayer::DType::kF16, shape);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) x.as<uint16_t>()[i] = qlayer::FloatToHalf(uniform(rng));

  std::printf("qlayer-server %s, x %s f16\n", address.c_str(),
              qlayer::ShapeToString(shape).c_str());
  std::vector<qlayer::ForwardResult> sequential;
  absl::Time t0 = absl::Now();
  for (const auto& l : layers) {
    absl::StatusOr<qlayer::ForwardResult> y = l->Forward(x.view());
    if (!y.ok()) {
      std::fprintf(stderr, "%s\n", y.status().ToString().c_str());
      return 1;
    }
    std::printf("  %-36s -> %s  kernel %-22s queue %4lld us  compute %5lld us  latency %5lld us\n",
                l->layer().c_str(), qlayer::ShapeToString(l->OutputShape(shape)).c_str(),
                y->kernel.c_str(), static_cast<long long>(y->queue_us),
                static_cast<long long>(y->compute_us), static_cast<long long>(y->latency_us));
    sequential.push_back(*std::move(y));
  }
  const double seq_us = absl::ToDoubleMicroseconds(absl::Now() - t0);

  t0 = absl::Now();
  std::vector<std::future<absl::StatusOr<qlayer::ForwardResult>>> futures;
  for (const auto& l : layers) futures.push_back(l->ForwardAsync(x.view()));
  bool same = true;
  for (size_t i = 0; i < futures.size(); ++i) {
    absl::StatusOr<qlayer::ForwardResult> y = futures[i].get();
    if (!y.ok()) {
      std::fprintf(stderr, "%s\n", y.status().ToString().c_str());
      return 1;
    }
    same = same && y->output.nbytes() == sequential[i].output.nbytes() &&
           std::memcmp(y->output.data(), sequential[i].output.data(), y->output.nbytes()) == 0;
  }
  const double par_us = absl::ToDoubleMicroseconds(absl::Now() - t0);
  std::printf("%zu layers one after another: %.0f us; overlapped (ForwardAsync): %.0f us\n",
              layers.size(), seq_us, par_us);
  std::printf("first outputs of %s: %.4f %.4f %.4f %.4f\n", layers[0]->layer().c_str(),
              qlayer::HalfToFloat(sequential[0].output.as<uint16_t>()[0]),
              qlayer::HalfToFloat(sequential[0].output.as<uint16_t>()[1]),
              qlayer::HalfToFloat(sequential[0].output.as<uint16_t>()[2]),
              qlayer::HalfToFloat(sequential[0].output.as<uint16_t>()[3]));
  std::printf("overlapped answers %s the sequential ones\n", same ? "equal" : "DIFFER from");
  return same ? 0 : 2;
}
