// Calls an MoE block of a running qlayer-server through qlayer::RemoteMoE,
// the way a C++ inference frontend would: hidden states [batch, tokens, H]
// bf16 routed by the server's own router (the experts it chose come back),
// then the same tokens with the frontend's routing (those ids and weights,
// as a frontend with its own router would send them) -- the two answers
// agree -- and then several sequences overlapped with ForwardAsync.
//
//   build/server/qlayer-quantize --format gptq --group-size 64 --moe mixtral --layers-moe 1 \
//     --hidden 1024 --intermediate 1408 --experts 8 --topk 2 --out /tmp/moe-model
//   build/server/qlayer-server --model /tmp/moe-model &
//   build/client/examples/qlayer-remote-moe-example --server 127.0.0.1:50051 \
//     --block model.layers.1.block_sparse_moe
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/remote_moe.h"
#include "qlayer/kernels/dtype.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "qlayer-server address");
ABSL_FLAG(std::string, block, "model.layers.1.block_sparse_moe", "MoE block (its module path)");
ABSL_FLAG(int64_t, batch, 2, "sequences");
ABSL_FLAG(int64_t, tokens, 3, "tokens per sequence");
ABSL_FLAG(double, timeout, 30, "per-call deadline, seconds (re-sends included)");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  return 1;
}

qlayer::Tensor RandomBF16(const qlayer::Shape& shape, uint32_t seed) {
  qlayer::Tensor x = qlayer::Tensor::Zeros(qlayer::DType::kBF16, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (int64_t i = 0; i < x.numel(); ++i) {
    qlayer::StoreFromDouble(x.data(), x.dtype(), i, uniform(rng));
  }
  return x;
}

// max |a - b| / max |b| over two [T, H] answers of the same dtype.
double RelativeMaxDiff(const qlayer::Tensor& a, const qlayer::Tensor& b) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    const double va = qlayer::LoadAsDouble(a.data(), a.dtype(), i);
    const double vb = qlayer::LoadAsDouble(b.data(), b.dtype(), i);
    diff = std::max(diff, std::fabs(va - vb));
    scale = std::max(scale, std::fabs(vb));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string address = absl::GetFlag(FLAGS_server);
  auto client = qlayer::Client::Connect(address);
  if (!client.ok()) return Fail(client.status());
  if (absl::Status s = (*client)->WaitForReady(absl::Seconds(10)); !s.ok()) return Fail(s);
  qlayer::RemoteMoEOptions options;
  options.timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout));
  auto moe = qlayer::RemoteMoE::Create(client->get(), absl::GetFlag(FLAGS_block), options);
  if (!moe.ok()) return Fail(moe.status());
  const int64_t H = (*moe)->hidden_size();
  const qlayer::Shape shape = {absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_tokens), H};
  std::printf("qlayer-server %s, block %s: %lld experts, top-%d; x %s bf16\n", address.c_str(),
              (*moe)->block().c_str(), static_cast<long long>((*moe)->num_experts()),
              (*moe)->top_k(), qlayer::ShapeToString(shape).c_str());

  // 1. The server routes (with the gate it loaded) and says how.
  const qlayer::Tensor x = RandomBF16(shape, 1);
  qlayer::MoERoutingInput ask;
  ask.return_routing = true;
  absl::StatusOr<qlayer::MoEResult> served = (*moe)->Forward(x.view(), ask);
  if (!served.ok()) return Fail(served.status());
  std::printf("  server's router: -> %s  kernels", qlayer::ShapeToString(shape).c_str());
  for (const std::string& k : served->kernels) std::printf(" %s", k.c_str());
  std::printf("\n  compute %lld us, latency %lld us; token 0 went to experts",
              static_cast<long long>(served->compute_us),
              static_cast<long long>(served->latency_us));
  for (int j = 0; j < (*moe)->top_k(); ++j) {
    std::printf(" %d (%.3f)", served->topk_ids.as<int32_t>()[j],
                served->topk_weights.as<float>()[j]);
  }
  std::printf("\n");

  // 2. The frontend routes: the same ids and weights, shaped [batch, tokens, k].
  const qlayer::Shape routing_shape = {shape[0], shape[1], (*moe)->top_k()};
  qlayer::MoERoutingInput own;
  own.topk_ids = {qlayer::DType::kI32, routing_shape, served->topk_ids.data()};
  own.topk_weights = {qlayer::DType::kF32, routing_shape, served->topk_weights.data()};
  absl::StatusOr<qlayer::MoEResult> routed = (*moe)->Forward(x.view(), own);
  if (!routed.ok()) return Fail(routed.status());
  const double diff = RelativeMaxDiff(routed->output, served->output);
  std::printf("  caller's top-k: max difference to the server-routed answer %.2g\n", diff);

  // 3. Several sequences in flight at once on the block's stream.
  std::vector<qlayer::Tensor> xs;
  std::vector<std::future<absl::StatusOr<qlayer::MoEResult>>> futures;
  const absl::Time t0 = absl::Now();
  for (uint32_t i = 0; i < 8; ++i) {
    xs.push_back(RandomBF16(shape, 100 + i));
    futures.push_back((*moe)->ForwardAsync(xs.back().view()));
  }
  for (auto& f : futures) {
    absl::StatusOr<qlayer::MoEResult> y = f.get();
    if (!y.ok()) return Fail(y.status());
  }
  std::printf("  8 calls overlapped (ForwardAsync): %.0f us\n",
              absl::ToDoubleMicroseconds(absl::Now() - t0));
  // bf16 outputs: a different batch may round differently, never by more.
  return diff < 2e-2 ? 0 : 2;
}
