// Forward is thread-safe after Prepare: several threads calling one kernel
// at once (the server's batcher threads, independent layers sharing the CPU
// pool) each get their own correct answer.
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/registry.h"
#include "tests/kernels/random_linear_util.h"

namespace qlayer::testing {
namespace {

TEST(ConcurrentForward, EveryCpuKernelFromFourThreads) {
  std::mt19937_64 rng(TestSeed() + 7);
  RandomLinear rl =
      MakeRandomLinear({512, 200, WeightType::kUint4, 128, DType::kF16, true, true}, rng);
  const Device cpu{Backend::kCpu, 0};
  for (const KernelFactory* f : RegisteredLinearKernels()) {
    if (f->backend != Backend::kCpu || absl::StartsWith(f->name, "test_")) continue;
    if (!f->can_implement(LinearSpec::Of(rl.w, DType::kBF16), cpu).ok()) continue;
    SCOPED_TRACE(f->name);
    std::unique_ptr<LinearKernel> kernel = f->create();
    ASSERT_TRUE(kernel->Prepare(rl.w, cpu).ok());

    constexpr int kThreads = 4;
    std::vector<Tensor> xs, ys;
    std::vector<std::vector<double>> want;
    for (int t = 0; t < kThreads; ++t) {
      const int64_t M = 1 + 5 * t;  // different M per thread: different scratch sizes
      xs.push_back(RandomActivations(M, 512, DType::kBF16, rng));
      ys.push_back(Tensor::Zeros(DType::kBF16, {M, 200}));
      want.push_back(ReferenceForward(rl, xs.back().view()));
    }
    std::vector<absl::Status> status(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ExecContext ctx;
        for (int rep = 0; rep < 20 && status[t].ok(); ++rep) {
          status[t] = kernel->Forward(xs[t].view(), ys[t].mutable_view(), ctx);
        }
      });
    }
    for (std::thread& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
      ASSERT_TRUE(status[t].ok()) << status[t];
      const double err = ErrorNorm(ys[t].view(), RoundTo(want[t], DType::kBF16)) / Norm(want[t]);
      EXPECT_LE(err, f->name == "onednn_dense" ? 1e-2 : 2e-3) << "thread " << t;
    }
  }
}

}  // namespace
}  // namespace qlayer::testing
