// Every CUDA linear kernel against the float64 CPU reference, on random
// weights of every weight type, f16 and bf16 activations, group sizes 32 / 64
// / 128 / channel, act-order (even and uneven groups), K off the 64-wide
// chunk, N off the 16-row tile, bias, and odd M (1, 3, 17, 67, 118, 256).
// Outputs are poisoned (NaN) before each call, so an unwritten element fails.
//
// Bounds (||y - ref|| / ||ref||): 2e-3 for f16 outputs (seen: ~2.2e-4 for
// the mma kernels, ~3.8e-4 for dequantize + cuBLAS). bf16 outputs: rounding y
// to bf16 (8 significant bits) alone costs ~1.7e-3 RMS and fluctuates above
// 2e-3 when few outputs form the norm (2.1e-3 seen at M = 1, N = 136), so
// the bound is 3e-3 for the mma kernels (scales applied in fp32, only the
// output rounded) and 4e-3 for cuda_dequant_cublas, which also rounds each
// dequantized weight to bf16 before the GEMM (~3.1e-3 seen).
#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cuda/cuda_linear.h"
#include "cuda/forward_graphs.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/crossover.h"
#include "qlayer/kernels/registry.h"
#include "qlayer/kernels/status_macros.h"
#include "tests/gpu/gpu_test_util.h"

namespace qlayer {
namespace {

using gputest::MakeRandomWeight;
using gputest::RandomWeightOptions;

const Device kGpu{Backend::kCuda, 0};

bool HaveGpu() {
  const KernelFactory* f = FindLinearKernel("cuda_dequant_cublas");
  if (f == nullptr) return false;
  LinearSpec spec;
  spec.K = 128;
  spec.N = 16;
  spec.wtype = WeightType::kUint4b8;
  spec.group_size = 128;
  return f->can_implement(spec, kGpu).ok();
}

uint64_t Seed() {
  static const uint64_t seed = [] {
    const uint64_t s = gputest::TestSeed();
    std::printf("GPU test seed: %llu (set QLAYER_TEST_SEED to repeat)\n",
                static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

// One Forward of `k` on `x` into an output poisoned with NaN (0xFF bytes in
// f16 and bf16), so rows it leaves unwritten fail: the relative error
// against `ref`, or why the call failed.
absl::StatusOr<double> PoisonedForwardError(const LinearKernel& k, const Tensor& x, int64_t N,
                                            const std::vector<double>& ref) {
  Tensor y = Tensor::Zeros(x.dtype(), {x.dim(0), N});
  std::memset(y.data(), 0xFF, y.nbytes());
  ExecContext ctx;
  QLAYER_RETURN_IF_ERROR(k.Forward(x.view(), y.mutable_view(), ctx));
  return gputest::RelativeError(y, ref);
}

struct Shape {
  int64_t K, N, G;
  bool act_order = false, irregular = false, bias = false;
  DType scale_dtype = DType::kF16;
};

std::string ShapeName(const Shape& s) {
  return absl::StrCat("K=", s.K, " N=", s.N, " G=", s.G, s.act_order ? " act-order" : "",
                      s.irregular ? "(uneven)" : "", s.bias ? " bias" : "", " scales ",
                      DTypeName(s.scale_dtype));
}

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {1024, 520, 32},
      {1024, 520, 64},
      {1024, 520, 128, false, false, true},
      {1000, 200, 1000, false, false, false, DType::kF32},  // channel-wise, K % 64 != 0
      {1056, 136, 32},                                      // K % 64 == 32
      // f32 scales with zero points: 96-byte records, more 16-byte pieces
      // than a warp has lanes, and two groups per 64-row chunk.
      {1024, 136, 32, false, false, false, DType::kF32},
      {1024, 520, 128, true},                           // act-order
      {1024, 264, 64, true, true, true, DType::kBF16},  // uneven act-order groups
      {4096, 256, 128},                                 // deep split-K
  };
  return shapes;
}

const int64_t kMs[] = {1, 2, 3, 17, 67, 118, 256};

double Bound(absl::string_view kernel, DType act) {
  if (act != DType::kBF16) return 2e-3;
  return kernel == "cuda_dequant_cublas" ? 4e-3 : 3e-3;
}

class CudaLinearTest : public ::testing::TestWithParam<std::tuple<WeightType, DType>> {};

TEST_P(CudaLinearTest, MatchesFloat64Reference) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  const auto [wtype, act] = GetParam();
  const std::string mma = WeightBits(wtype) == 4 ? "cuda_mma_w4a16" : "cuda_mma_w8a16";
  const std::string gemv = WeightBits(wtype) == 4 ? "cuda_gemv_w4a16" : "cuda_gemv_w8a16";
  uint64_t seed = Seed() + static_cast<uint64_t>(wtype) * 1000 + static_cast<uint64_t>(act) * 100;
  std::map<std::string, double> worst;
  for (const Shape& s : Shapes()) {
    RandomWeightOptions o;
    o.K = s.K;
    o.N = s.N;
    o.wtype = wtype;
    o.group_size = s.G;
    o.scale_dtype = s.scale_dtype;
    o.act_order = s.act_order;
    o.irregular_groups = s.irregular;
    o.bias = s.bias;
    o.seed = ++seed;
    const QuantizedLinear w = MakeRandomWeight(o);
    const std::vector<double> w_kn = gputest::DequantizeToDouble(w);
    const LinearSpec spec = LinearSpec::Of(w, act);
    std::vector<Tensor> xs;
    std::vector<std::vector<double>> refs;
    for (int64_t M : kMs) {
      xs.push_back(gputest::RandomActivations(M, s.K, act, seed * 31 + M));
      refs.push_back(gputest::ReferenceForward(xs.back(), w_kn, w));
    }
    for (const std::string& name : {gemv, mma, std::string("cuda_dequant_cublas")}) {
      SCOPED_TRACE(absl::StrCat(name, " ", WeightTypeName(wtype), " act ", DTypeName(act), " ",
                                ShapeName(s)));
      const KernelFactory* f = FindLinearKernel(name);
      ASSERT_NE(f, nullptr);
      ASSERT_TRUE(f->can_implement(spec, kGpu).ok()) << f->can_implement(spec, kGpu);
      std::unique_ptr<LinearKernel> k = f->create();
      ASSERT_TRUE(k->Prepare(w, kGpu).ok());
      for (size_t i = 0; i < xs.size(); ++i) {
        const Tensor& x = xs[i];
        const int64_t M = x.dim(0);
        const absl::StatusOr<double> err = PoisonedForwardError(*k, x, s.N, refs[i]);
        ASSERT_TRUE(err.ok()) << err.status();
        EXPECT_LE(*err, Bound(name, act)) << "M=" << M;
        worst[name] = std::max(worst[name], *err);
      }
    }
  }
  for (const auto& [name, err] : worst) {
    std::printf("%s %s act %s: max rel err %.3g (bound %.0e)\n", name.c_str(),
                std::string(WeightTypeName(wtype)).c_str(), std::string(DTypeName(act)).c_str(),
                err, Bound(name, act));
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllTypes, CudaLinearTest,
    ::testing::Combine(::testing::Values(WeightType::kUint4, WeightType::kUint4b8,
                                         WeightType::kUint8, WeightType::kUint8b128),
                       ::testing::Values(DType::kF16, DType::kBF16)),
    [](const auto& info) {
      return absl::StrCat(WeightTypeName(std::get<0>(info.param)), "_",
                          DTypeName(std::get<1>(info.param)));
    });

TEST(CudaLinearSelection, DecodeKernelUpToMaxMThenCublas) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  LinearSpec spec;
  spec.K = 4096;
  spec.N = 4096;
  spec.wtype = WeightType::kUint4b8;
  spec.group_size = 128;
  spec.act = DType::kF16;
  absl::StatusOr<Selection> sel = SelectLinearKernel(spec, kGpu);
  ASSERT_TRUE(sel.ok()) << sel.status();
  // The GEMV kernel measured slower than mma at M <= 2 and ranks after it.
  ASSERT_EQ(sel->chosen.size(), 2u);
  EXPECT_EQ(sel->chosen[0].factory->name, "cuda_mma_w4a16");
  EXPECT_EQ(sel->chosen[0].max_m, 32);
  EXPECT_EQ(sel->chosen[1].factory->name, "cuda_dequant_cublas");
  EXPECT_EQ(sel->chosen[1].max_m, kUnboundedM);

  spec.wtype = WeightType::kUint8;
  spec.zero_points = true;
  sel = SelectLinearKernel(spec, kGpu);
  ASSERT_TRUE(sel.ok()) << sel.status();
  EXPECT_EQ(sel->chosen[0].factory->name, "cuda_mma_w8a16");
  EXPECT_EQ(sel->chosen[1].factory->name, "cuda_dequant_cublas");
}

TEST(CudaLinearSelection, RejectionsNameTheValue) {
  LinearSpec spec;
  spec.K = 4096;
  spec.N = 4096;
  spec.wtype = WeightType::kUint4b8;
  spec.group_size = 128;
  spec.act = DType::kF16;
  const KernelFactory* f = FindLinearKernel("cuda_mma_w4a16");
  ASSERT_NE(f, nullptr);
  // Off the GPU the platform check comes first, on any machine.
  absl::Status st = f->can_implement(spec, Device{Backend::kCpu, 0});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("cpu"), std::string::npos) << st;
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  spec.group_size = 16;
  st = f->can_implement(spec, kGpu);
  EXPECT_NE(std::string(st.message()).find("group size 16"), std::string::npos) << st;
  spec.group_size = 128;
  spec.act = DType::kF32;
  st = f->can_implement(spec, kGpu);
  EXPECT_NE(std::string(st.message()).find("f32"), std::string::npos) << st;
  spec.act = DType::kF16;
  spec.wtype = WeightType::kUint8b128;
  st = f->can_implement(spec, kGpu);
  EXPECT_NE(std::string(st.message()).find("uint8b128"), std::string::npos) << st;
}

TEST(CudaLinearForward, RejectsF32Input) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  RandomWeightOptions o;
  o.K = 256;
  o.N = 64;
  o.seed = Seed();
  const QuantizedLinear w = MakeRandomWeight(o);
  auto k = FindLinearKernel("cuda_mma_w4a16")->create();
  ASSERT_TRUE(k->Prepare(w, kGpu).ok());
  Tensor xf = Tensor::Zeros(DType::kF32, {2, 256});
  Tensor yf = Tensor::Zeros(DType::kF32, {2, 64});
  ExecContext ctx;
  const absl::Status st = k->Forward(xf.view(), yf.mutable_view(), ctx);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(st.message()).find("f32"), std::string::npos) << st;
}

// Forward from several threads at once on one prepared layer: each thread
// has its own stream and buffers, so answers must not mix.
TEST(CudaLinearForward, ConcurrentCallersGetTheirOwnAnswers) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  RandomWeightOptions o;
  o.K = 2048;
  o.N = 1024;
  o.wtype = WeightType::kUint4;
  o.seed = Seed() + 77;
  const QuantizedLinear w = MakeRandomWeight(o);
  const std::vector<double> w_kn = gputest::DequantizeToDouble(w);
  for (const char* name : {"cuda_gemv_w4a16", "cuda_mma_w4a16", "cuda_dequant_cublas"}) {
    SCOPED_TRACE(name);
    auto k = FindLinearKernel(name)->create();
    ASSERT_TRUE(k->Prepare(w, kGpu).ok());
    constexpr int kThreads = 4;
    std::vector<double> errs(kThreads, -1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const int64_t M = 1 + 7 * t;
        const Tensor x = gputest::RandomActivations(M, o.K, DType::kF16, o.seed + t);
        const std::vector<double> ref = gputest::ReferenceForward(x, w_kn, w);
        double worst = 0;
        for (int rep = 0; rep < 20; ++rep) {
          const absl::StatusOr<double> err = PoisonedForwardError(*k, x, o.N, ref);
          if (!err.ok()) {
            worst = 1e9;
            break;
          }
          worst = std::max(worst, *err);
        }
        errs[static_cast<size_t>(t)] = worst;
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t)
      EXPECT_LE(errs[static_cast<size_t>(t)], 2e-3) << "thread " << t;  // f16
  }
}

// Forward replays CUDA graphs at decode sizes (forward_graphs.h). One thread
// alternates between two layers on its one worker: the second is act-order,
// so its growing M also regrows the worker's gather buffer under the first
// layer's graphs, and M changes regrow the staging buffers. Every answer is
// checked, with graphs on (and replays must have happened) and off.
TEST(CudaLinearForward, GraphReplaysMatchTheReferenceWhileBuffersGrow) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  RandomWeightOptions oa;
  oa.K = 2048;
  oa.N = 1024;
  oa.wtype = WeightType::kUint4;
  oa.seed = Seed() + 91;
  RandomWeightOptions ob;
  ob.K = 1024;
  ob.N = 520;
  ob.wtype = WeightType::kUint4b8;
  ob.act_order = true;
  ob.bias = true;
  ob.seed = Seed() + 92;
  const QuantizedLinear wa = MakeRandomWeight(oa), wb = MakeRandomWeight(ob);
  const std::vector<double> wa_kn = gputest::DequantizeToDouble(wa);
  const std::vector<double> wb_kn = gputest::DequantizeToDouble(wb);
  const int64_t kMa[] = {1, 1, 1, 3, 3, 1, 17, 17, 3, 64, 64, 1, 1, 3, 17};
  const int64_t kMb[] = {1, 1, 2, 2, 5, 5, 9, 9, 33, 33, 64, 64, 1, 1, 2};
  for (bool graphs : {true, false}) {
    cuda::SetForwardGraphsEnabled(graphs);
    for (const char* name : {"cuda_mma_w4a16", "cuda_gemv_w4a16", "cuda_dequant_cublas"}) {
      SCOPED_TRACE(absl::StrCat(name, graphs ? " graphs on" : " graphs off"));
      auto ka = FindLinearKernel(name)->create();
      auto kb = FindLinearKernel(name)->create();
      ASSERT_TRUE(ka->Prepare(wa, kGpu).ok());
      ASSERT_TRUE(kb->Prepare(wb, kGpu).ok());
      for (size_t i = 0; i < std::size(kMa); ++i) {
        for (int which = 0; which < 2; ++which) {
          const QuantizedLinear& w = which == 0 ? wa : wb;
          const int64_t M = which == 0 ? kMa[i] : kMb[i];
          const Tensor x =
              gputest::RandomActivations(M, w.K, DType::kF16, Seed() + 1000 * i + which);
          const std::vector<double> ref =
              gputest::ReferenceForward(x, which == 0 ? wa_kn : wb_kn, w);
          const absl::StatusOr<double> err =
              PoisonedForwardError(which == 0 ? *ka : *kb, x, w.N, ref);
          ASSERT_TRUE(err.ok()) << err.status();
          EXPECT_LE(*err, 2e-3) << "call " << i << " layer " << which << " M=" << M;
        }
      }
      for (const auto* k : {ka.get(), kb.get()}) {
        const cuda::ForwardGraphCache::Stats st =
            static_cast<const cuda::CudaLinearKernel*>(k)->graph_stats();
        std::printf("%s graphs %s: %lld replays, %lld captures, %lld direct, %lld failed\n", name,
                    graphs ? "on" : "off", static_cast<long long>(st.replays),
                    static_cast<long long>(st.captures), static_cast<long long>(st.direct),
                    static_cast<long long>(st.failed_captures));
        EXPECT_EQ(st.failed_captures, 0);
        if (graphs) {
          EXPECT_GT(st.captures, 0);
          EXPECT_GT(st.replays, 0);
        } else {
          EXPECT_EQ(st.captures + st.replays, 0);
        }
      }
    }
  }
  cuda::SetForwardGraphsEnabled(true);
}

// The crossover a server measures at load (crossover.h) on the real
// kernels: timings are positive, the hand-over is a candidate, the decode
// kernel wins at M = 1 (it reads a quarter of the bytes), and the timing
// runs leave both kernels computing the reference (scratch clean).
TEST(CudaLinearCrossover, MeasuredOnTheDeviceAndKernelsStillCorrect) {
  if (!HaveGpu()) GTEST_SKIP() << "no usable CUDA device";
  RandomWeightOptions o;
  o.K = 4096;
  o.N = 4096;
  o.seed = Seed() + 93;
  const QuantizedLinear w = MakeRandomWeight(o);
  auto mma = FindLinearKernel("cuda_mma_w4a16")->create();
  auto dq = FindLinearKernel("cuda_dequant_cublas")->create();
  ASSERT_TRUE(mma->Prepare(w, kGpu).ok());
  ASSERT_TRUE(dq->Prepare(w, kGpu).ok());
  for (DType act : {DType::kF16, DType::kBF16}) {
    for (const LinearKernel* k : {mma.get(), dq.get()}) {
      absl::StatusOr<double> us = k->MeasureForwardUs(3, act);
      ASSERT_TRUE(us.ok()) << us.status();
      EXPECT_GT(*us, 0.5);
      EXPECT_LT(*us, 10000.0);
    }
  }
  ClearCrossoverCache();
  LinearSpec spec = LinearSpec::Of(w, DType::kF16);
  absl::StatusOr<Crossover> c =
      MeasureCrossover(CrossoverKey(spec, kGpu, "cuda_mma_w4a16", "cuda_dequant_cublas"), *mma, *dq,
                       DType::kF16, 1, 64);
  ASSERT_TRUE(c.ok()) << c.status();
  std::printf("4096x4096 crossover: mma serves M <= %lld (%s)\n", static_cast<long long>(c->max_m),
              c->detail.c_str());
  const std::vector<int64_t>& cand = CrossoverCandidates();
  EXPECT_NE(std::find(cand.begin(), cand.end(), c->max_m), cand.end());
  // At M = 1 the decode kernel reads 4-bit weights, cuBLAS 16-bit ones.
  absl::StatusOr<double> t_mma = mma->MeasureForwardUs(1, DType::kF16);
  absl::StatusOr<double> t_dq = dq->MeasureForwardUs(1, DType::kF16);
  ASSERT_TRUE(t_mma.ok() && t_dq.ok());
  EXPECT_LT(*t_mma, *t_dq) << c->detail;
  const std::vector<double> w_kn = gputest::DequantizeToDouble(w);
  for (const LinearKernel* k : {mma.get(), dq.get()}) {
    for (int64_t M : {1, 5, 40}) {
      const Tensor x = gputest::RandomActivations(M, o.K, DType::kF16, Seed() + M);
      const absl::StatusOr<double> err =
          PoisonedForwardError(*k, x, o.N, gputest::ReferenceForward(x, w_kn, w));
      ASSERT_TRUE(err.ok()) << err.status();
      EXPECT_LE(*err, 2e-3) << k->name() << " M=" << M;
    }
  }
}

}  // namespace
}  // namespace qlayer
