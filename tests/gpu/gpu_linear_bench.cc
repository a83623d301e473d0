// Benchmark of the CUDA linear kernels against same-run peers (issue 8).
// Measures, in one process on one GPU:
//   - copy bandwidth (device-to-device copy of 1 GiB, bytes read + written);
//   - cuBLAS fp16 dense rate (8192^3 GEMM, fp32 accumulation);
//   - per shape (K x N, uint4b8, group 128, f16 scales and activations) and M:
//     cuda_mma_w4a16, cuda_dequant_cublas and cuBLAS fp16 on a dense weight;
//   - at M = 1 and 16, the whole host-tensor Forward of cuda_mma_w4a16 (wall
//     time per call, median of 200), with and without its CUDA graphs.
// Every timing is a CUDA graph of back-to-back calls (host launch cost out,
// inter-kernel gaps in) whose calls rotate over enough weight copies to
// exceed the L2 twice, so weights come from HBM. Median of 5 replays.
// Output: CSV (`--out FILE`), one row per (shape, M, path), "# key=value"
// lines for the device facts. tests/gpu/bench_table.py turns it into a table.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_linear.h"
#include "cuda/forward_graphs.h"
#include "qlayer/kernels/crossover.h"
#include "qlayer/kernels/registry.h"
#include "tests/gpu/gpu_bench_fill.h"
#include "tests/gpu/gpu_test_util.h"

namespace qlayer {
namespace {

#define CHECK_CUDA(expr)                                                                         \
  do {                                                                                           \
    cudaError_t e_ = (expr);                                                                     \
    if (e_ != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)
#define CHECK_OK(expr)                                                               \
  do {                                                                               \
    absl::Status s_ = (expr);                                                        \
    if (!s_.ok()) {                                                                  \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, s_.ToString().c_str()); \
      std::exit(1);                                                                  \
    }                                                                                \
  } while (0)

// Median per-call microseconds of `call(i)` captured `iters` times in a graph.
double TimeGraphUs(cudaStream_t s, const std::function<void(int)>& call) {
  for (int i = 0; i < 3; ++i) call(i);  // warm-up outside capture: lazy allocations, handles
  CHECK_CUDA(cudaStreamSynchronize(s));
  auto build = [&](int iters) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < iters; ++i) call(i);
    CHECK_CUDA(cudaStreamEndCapture(s, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    CHECK_CUDA(cudaGraphDestroy(graph));
    return exec;
  };
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  auto run = [&](cudaGraphExec_t exec) {
    CHECK_CUDA(cudaEventRecord(a, s));
    CHECK_CUDA(cudaGraphLaunch(exec, s));
    CHECK_CUDA(cudaEventRecord(b, s));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    return ms * 1000.0;
  };
  cudaGraphExec_t probe = build(10);
  run(probe);
  const double est = run(probe) / 10;
  CHECK_CUDA(cudaGraphExecDestroy(probe));
  const int iters = static_cast<int>(std::clamp(3000.0 / std::max(est, 0.5), 10.0, 2000.0));
  cudaGraphExec_t exec = build(iters);
  run(exec);
  std::vector<double> t;
  for (int r = 0; r < 5; ++r) t.push_back(run(exec) / iters);
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct BenchShape {
  int64_t K, N;
};

// Two ForwardDevice calls of cuda_mma_w4a16 per (shape, M), for a profiler
// (ncu flushes the caches before each profiled kernel).
int Profile(const Device& gpu, cuda::Worker& worker, cudaStream_t s) {
  for (const BenchShape sh : {BenchShape{4096, 4096}, BenchShape{8192, 28672}}) {
    gputest::RandomWeightOptions o;
    o.K = sh.K;
    o.N = sh.N;
    o.seed = 5;
    const QuantizedLinear w = gputest::MakeRandomWeight(o);
    auto k = FindLinearKernel("cuda_mma_w4a16")->create();
    CHECK_OK(k->Prepare(w, gpu));
    cuda::DeviceBuffer x, y;
    CHECK_OK(x.Grow(static_cast<size_t>(64 * sh.K * 2)));
    CHECK_OK(y.Grow(static_cast<size_t>(64 * sh.N * 2)));
    CHECK_CUDA(gputest::FillRandom16(x.get(), 64 * sh.K, 7, 1.f, false, s));
    for (int64_t M : {1, 16}) {
      for (int rep = 0; rep < 2; ++rep) {
        CHECK_OK(static_cast<const cuda::CudaLinearKernel*>(k.get())->ForwardDevice(
            x.get(), y.get(), M, DType::kF16, worker, s));
      }
      CHECK_CUDA(cudaStreamSynchronize(s));
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  std::string out_path = "bench_cuda.csv";
  bool quick = false;
  bool profile = false;   // for ncu: two plain calls per (shape, M), no graphs, no peers
  bool mma_only = false;  // the decode kernel alone, M <= 64: for comparing its schedules
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--out=", 6) == 0) out_path = argv[i] + 6;
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--profile") == 0) profile = true;
    if (std::strcmp(argv[i], "--mma-only") == 0) mma_only = true;
  }
  FILE* out = std::fopen(out_path.c_str(), "w");
  if (out == nullptr) {
    std::perror(out_path.c_str());
    return 1;
  }
  const Device gpu{Backend::kCuda, 0};
  absl::StatusOr<cuda::DeviceFacts> facts = cuda::GetDeviceFacts(0);
  CHECK_OK(facts.status());
  absl::StatusOr<cuda::Worker*> worker_or = cuda::ThisThreadWorker(0);
  CHECK_OK(worker_or.status());
  cuda::Worker& worker = **worker_or;
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int l2 = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  if (profile) return Profile(gpu, worker, s);
  std::fprintf(out, "# device=%s\n# sms=%d\n# l2_bytes=%d\n", facts->name.c_str(), facts->sms, l2);

  // Copy bandwidth.
  double copy_gbps = 0;
  {
    const size_t bytes = size_t{1} << 30;
    cuda::DeviceBuffer a, b;
    CHECK_OK(a.Grow(bytes));
    CHECK_OK(b.Grow(bytes));
    CHECK_CUDA(gputest::FillRandom16(a.get(), bytes / 2, 1, 1.f, false, s));
    const double us_ce = TimeGraphUs(s, [&](int) {
      CHECK_CUDA(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, s));
    });
    const double us_sm = TimeGraphUs(
        s, [&](int) { CHECK_CUDA(gputest::CopyWithSms(a.get(), b.get(), bytes, facts->sms, s)); });
    const double ce = 2.0 * bytes / (us_ce * 1e-6) / 1e9, sm = 2.0 * bytes / (us_sm * 1e-6) / 1e9;
    std::fprintf(out, "# copy_memcpy_GBps=%.1f\n# copy_kernel_GBps=%.1f\n", ce, sm);
    std::printf("copy bandwidth (read+write): cudaMemcpy %.1f GB/s, SM copy kernel %.1f GB/s\n", ce,
                sm);
    copy_gbps = std::max(ce, sm);  // the floor uses the faster of the two
  }
  std::fprintf(out, "# copy_GBps=%.1f\n", copy_gbps);

  absl::StatusOr<cublasHandle_t> handle_or = worker.Cublas(s);
  CHECK_OK(handle_or.status());
  cublasHandle_t handle = *handle_or;
  auto dense_gemm = [&](const void* w, const void* x, void* y, int64_t M, int64_t N, int64_t K) {
    const float alpha = 1.f, beta = 0.f;
    CHECK_OK(cuda::CublasStatus(
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                     static_cast<int>(K), &alpha, w, CUDA_R_16F, static_cast<int>(K), x, CUDA_R_16F,
                     static_cast<int>(K), &beta, y, CUDA_R_16F, static_cast<int>(N),
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx"));
  };

  // cuBLAS fp16 dense rate.
  double peak_tflops = 0;
  {
    const int64_t n = 8192;
    cuda::DeviceBuffer a, b, c;
    CHECK_OK(a.Grow(n * n * 2));
    CHECK_OK(b.Grow(n * n * 2));
    CHECK_OK(c.Grow(n * n * 2));
    CHECK_CUDA(gputest::FillRandom16(a.get(), n * n, 2, 1.f, false, s));
    CHECK_CUDA(gputest::FillRandom16(b.get(), n * n, 3, 0.02f, false, s));
    const double us = TimeGraphUs(s, [&](int) { dense_gemm(b.get(), a.get(), c.get(), n, n, n); });
    peak_tflops = 2.0 * n * n * n / (us * 1e-6) / 1e12;
  }
  std::fprintf(out, "# cublas_fp16_tflops=%.1f\n", peak_tflops);
  {
    // What the registry selects for a 4-bit layer: "ours" in the table.
    LinearSpec spec;
    spec.K = spec.N = 4096;
    spec.wtype = WeightType::kUint4b8;
    spec.group_size = 128;
    spec.act = DType::kF16;
    absl::StatusOr<Selection> sel = SelectLinearKernel(spec, Device{Backend::kCuda, 0});
    CHECK_OK(sel.status());
    int64_t gemv_max_m = 0, mma_max_m = 0;
    for (const auto& c : sel->chosen) {
      if (c.factory->name == "cuda_gemv_w4a16") gemv_max_m = c.max_m;
      if (c.factory->name == "cuda_mma_w4a16") mma_max_m = c.max_m;
    }
    std::fprintf(out, "# mma_max_m=%lld\n", static_cast<long long>(mma_max_m));
    std::fprintf(out, "# gemv_max_m=%lld\n", static_cast<long long>(gemv_max_m));
  }
  std::printf("cuBLAS fp16 dense 8192^3: %.1f TFLOP/s\n", peak_tflops);
  std::fprintf(out, "K,N,M,path,us,copies\n");

  std::vector<BenchShape> shapes = {{4096, 4096}, {4096, 14336}, {14336, 4096}, {8192, 28672}};
  std::vector<int64_t> ms = {1, 2, 4, 16, 32, 64, 128, 256, 1024, 4096};
  if (quick) {
    shapes = {{4096, 4096}, {8192, 28672}};
    ms = {1, 2, 16, 64, 256};
  }
  if (mma_only) ms = {1, 2, 4, 8, 16, 32, 64};
  const int64_t max_m = *std::max_element(ms.begin(), ms.end());
  const double cold_bytes = 2.0 * l2 + (16 << 20);
  for (const BenchShape& sh : shapes) {
    const int64_t K = sh.K, N = sh.N;
    gputest::RandomWeightOptions o;
    o.K = K;
    o.N = N;
    o.wtype = WeightType::kUint4b8;
    o.group_size = 128;
    o.seed = static_cast<uint64_t>(K * 131 + N);
    const QuantizedLinear w = gputest::MakeRandomWeight(o);
    const double q_bytes = K * N / 2.0 + (K / 128.0) * N * 2.0;
    const int copies = static_cast<int>(std::clamp(cold_bytes / q_bytes + 1, 1.0, 32.0));
    const int dense_copies = static_cast<int>(std::clamp(cold_bytes / (2.0 * K * N) + 1, 1.0, 8.0));

    auto prepare = [&](const char* name, int n, double* first_ms) {
      std::vector<std::unique_ptr<LinearKernel>> ks;
      for (int i = 0; i < n; ++i) {
        auto k = FindLinearKernel(name)->create();
        const auto t0 = std::chrono::steady_clock::now();
        CHECK_OK(k->Prepare(w, gpu));
        const auto t1 = std::chrono::steady_clock::now();
        if (i == 0) *first_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
        ks.push_back(std::move(k));
      }
      return ks;
    };
    double mma_prep_ms = 0, dq_prep_ms = 0, gemv_prep_ms = 0;
    auto gemv = prepare("cuda_gemv_w4a16", mma_only ? 0 : copies, &gemv_prep_ms);
    auto mma = prepare("cuda_mma_w4a16", copies, &mma_prep_ms);
    auto dq = prepare("cuda_dequant_cublas", mma_only ? 0 : dense_copies, &dq_prep_ms);
    std::fprintf(out, "%lld,%lld,0,prepare_mma,%.1f,1\n", static_cast<long long>(K),
                 static_cast<long long>(N), mma_prep_ms * 1000);
    std::fprintf(out, "%lld,%lld,0,prepare_gemv,%.1f,1\n", static_cast<long long>(K),
                 static_cast<long long>(N), gemv_prep_ms * 1000);
    std::fprintf(out, "%lld,%lld,0,prepare_dequant_cublas,%.1f,1\n", static_cast<long long>(K),
                 static_cast<long long>(N), dq_prep_ms * 1000);

    if (!mma_only) {
      // The hand-over a server would measure at load for this shape.
      LinearSpec spec = LinearSpec::Of(w, DType::kF16);
      const auto t0 = std::chrono::steady_clock::now();
      absl::StatusOr<Crossover> c =
          MeasureCrossover(CrossoverKey(spec, gpu, "cuda_mma_w4a16", "cuda_dequant_cublas"),
                           *mma[0], *dq[0], DType::kF16, 1, CrossoverCandidates().back());
      const auto t1 = std::chrono::steady_clock::now();
      CHECK_OK(c.status());
      std::fprintf(out, "%lld,%lld,0,crossover_max_m,%lld,1\n", static_cast<long long>(K),
                   static_cast<long long>(N), static_cast<long long>(c->max_m));
      std::fprintf(out, "%lld,%lld,0,crossover_time,%.1f,1\n", static_cast<long long>(K),
                   static_cast<long long>(N),
                   std::chrono::duration<double, std::micro>(t1 - t0).count());
      std::printf("K=%lld N=%lld measured crossover: mma serves M <= %lld (%s)\n",
                  static_cast<long long>(K), static_cast<long long>(N),
                  static_cast<long long>(c->max_m), c->detail.c_str());
    }
    std::vector<cuda::DeviceBuffer> dense(static_cast<size_t>(dense_copies));
    for (int i = 0; i < (mma_only ? 0 : dense_copies); ++i) {
      CHECK_OK(dense[static_cast<size_t>(i)].Grow(static_cast<size_t>(K * N * 2)));
      CHECK_CUDA(gputest::FillRandom16(dense[static_cast<size_t>(i)].get(), K * N, 100 + i, 0.02f,
                                       false, s));
    }
    cuda::DeviceBuffer x, y;
    CHECK_OK(x.Grow(static_cast<size_t>(max_m * K * 2)));
    CHECK_OK(y.Grow(static_cast<size_t>(max_m * N * 2)));
    CHECK_CUDA(gputest::FillRandom16(x.get(), max_m * K, 7, 1.f, false, s));
    CHECK_CUDA(cudaStreamSynchronize(s));

    for (int64_t M : ms) {
      auto row = [&](const char* path, double us, int n) {
        std::fprintf(out, "%lld,%lld,%lld,%s,%.3f,%d\n", static_cast<long long>(K),
                     static_cast<long long>(N), static_cast<long long>(M), path, us, n);
        std::fflush(out);
        std::printf("K=%-6lld N=%-6lld M=%-5lld %-16s %10.2f us\n", static_cast<long long>(K),
                    static_cast<long long>(N), static_cast<long long>(M), path, us);
      };
      if (M <= 4 && !mma_only) {
        const double us = TimeGraphUs(s, [&](int i) {
          auto* k = static_cast<const cuda::CudaLinearKernel*>(
              gemv[static_cast<size_t>(i % copies)].get());
          CHECK_OK(k->ForwardDevice(x.get(), y.get(), M, DType::kF16, worker, s));
        });
        row("gemv", us, copies);
      }
      if (M <= 256) {
        const double us = TimeGraphUs(s, [&](int i) {
          auto* k = static_cast<const cuda::CudaLinearKernel*>(
              mma[static_cast<size_t>(i % copies)].get());
          CHECK_OK(k->ForwardDevice(x.get(), y.get(), M, DType::kF16, worker, s));
        });
        row("mma", us, copies);
      }
      if (M >= 32 && !mma_only) {
        const double us = TimeGraphUs(s, [&](int i) {
          auto* k = static_cast<const cuda::CudaLinearKernel*>(
              dq[static_cast<size_t>(i % dense_copies)].get());
          CHECK_OK(k->ForwardDevice(x.get(), y.get(), M, DType::kF16, worker, s));
        });
        row("dequant_cublas", us, dense_copies);
      }
      if (mma_only) continue;
      const double us = TimeGraphUs(s, [&](int i) {
        dense_gemm(dense[static_cast<size_t>(i % dense_copies)].get(), x.get(), y.get(), M, N, K);
      });
      row("cublas_fp16", us, dense_copies);
      if (M == 1 || M == 16) {
        // What a server call pays: Forward on host tensors (staging copies,
        // launches, the one synchronisation), wall time per call, with the
        // per-call CUDA graphs and without, over the same cold copies.
        const Tensor hx = gputest::RandomActivations(M, K, DType::kF16, 11);
        Tensor hy = Tensor::Zeros(DType::kF16, {M, N});
        for (bool graphs : {false, true}) {
          cuda::SetForwardGraphsEnabled(graphs);
          std::vector<double> t;
          for (int i = 0; i < 2 * copies + 2 + 200; ++i) {
            ExecContext ctx;
            const auto t0 = std::chrono::steady_clock::now();
            CHECK_OK(
                mma[static_cast<size_t>(i % copies)]->Forward(hx.view(), hy.mutable_view(), ctx));
            const auto t1 = std::chrono::steady_clock::now();
            if (i >= 2 * copies + 2) {
              t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
            }
          }
          std::sort(t.begin(), t.end());
          row(graphs ? "host_forward_graph" : "host_forward_direct", t[t.size() / 2], copies);
        }
        cuda::SetForwardGraphsEnabled(true);
      }
    }
  }
  std::fclose(out);
  return 0;
}

}  // namespace
}  // namespace qlayer

int main(int argc, char** argv) { return qlayer::Main(argc, argv); }
