// Google Benchmark of the CPU linear kernels against their floor and peer
// (DESIGN.md "Performance model"), as BENCHMARKS.md "CPU linear kernels"
// reports them.
//
//   qlayer_cpu_linear_bench [--qlayer_md=FILE] [--qlayer_crossover] [--qlayer_w8]
//       [--qlayer_gemv=KERNEL,...] [--qlayer_repetitions=5]
//       [--benchmark_enable_random_interleaving=true]
//
// --qlayer_gemv names the 4-bit GEMV kernels to run beside oneDNN (default:
// cpu_avx512_w4a16, cpu_avx512fma_w4a16 at M <= 16, cpu_avx2_w4a16 at
// M <= 64; with --qlayer_crossover the first of them this CPU can run).
// --qlayer_w8 adds cpu_avx512_w8a16 (uint8b128) at M <= 16: 1 thread on every
// shape, all threads on 4096 x 14336; with --qlayer_crossover, at every M of
// the crossover (its own max_m).
//
// Each benchmark runs --qlayer_repetitions times and every call is timed;
// the table reports the 10th percentile of the calls (other processes on a
// shared machine only slow a call down) beside the median, and random
// interleaving spreads any load over all kernels alike.
//
// Layers: uint4 with zero points, group 128, f16 scales (AWQ-like), bf16
// activations and outputs; shapes K x N = 4096 x 4096, 4096 x 14336,
// 14336 x 4096; M in {1, 4, 16, 64, 256}; 1 thread and all threads.
//
// Weights are cold: each kernel is prepared several times over, copies
// totalling >= 256 MiB (the LLC holds 32 MiB, a whole 4096 x 4096 int4
// layer), and iteration i runs copy i mod copies, as a server hosting many
// layers would. The floor is the bytes a kernel streams (prepared_bytes)
// over the DRAM read bandwidth measured at start-up in the same process
// over a 1 GiB buffer with the same thread count. The peer is onednn_dense
// (the same layer dequantized to bf16) measured the same cold way in the
// same run; cpu_reference is timed where it is quick enough.
#include <benchmark/benchmark.h>
#include <xmmintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cpu/thread_pool.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int64_t kColdBytes = int64_t{256} << 20;
constexpr int64_t kGroup = 128;

struct Shape {
  int64_t K, N;
};
const Shape kShapes[] = {{4096, 4096}, {4096, 14336}, {14336, 4096}};

// ---- DRAM read bandwidth ------------------------------------------------

// Reads one 8-byte word per 64-byte line (the line is what DRAM delivers)
// of `streams` equal parts of [p, p + n) in step, with (kPrefetch) or
// without software prefetch 2 KiB ahead. Which variant a core streams
// fastest with differs (measured here, one thread: 33 GB/s plain, 28 with
// prefetch, 34 with prefetch over 4 streams), so the floor takes the best.
template <bool kPrefetch, int kStreams>
int64_t ReadBuffer(const uint8_t* p, size_t n) {
  int64_t acc[kStreams] = {};
  const size_t part = n / kStreams;
  for (size_t i = 0; i + 256 <= part; i += 256) {
    for (int s = 0; s < kStreams; ++s) {
      const uint8_t* q = p + s * part + i;
      if (kPrefetch) {
        for (int l = 0; l < 4; ++l) {
          _mm_prefetch(reinterpret_cast<const char*>(q + 2048 + 64 * l), _MM_HINT_T0);
        }
      }
      int64_t w[4];
      for (int l = 0; l < 4; ++l) std::memcpy(&w[l], q + 64 * l, 8);
      acc[s] += w[0] + w[1] + w[2] + w[3];
    }
  }
  int64_t total = 0;
  for (int s = 0; s < kStreams; ++s) total += acc[s];
  return total;
}

// DRAM read bandwidth with `threads` pool threads, bytes/s: 4 passes over
// a 1 GiB buffer (alternating the two ReadBuffer variants) in slices of 64 MiB (each far beyond the
// 32 MiB LLC), the best slice counting, since other processes on a shared machine only ever slow a
// slice down.
double MeasureReadBandwidth(int threads) {
  const size_t n = size_t{1} << 30, slice = size_t{64} << 20;
  auto* buf = static_cast<uint8_t*>(std::aligned_alloc(64, n));
  CpuThreadPool& pool = CpuThreadPool::Global();
  for (size_t off = 0; off < n; off += slice) {  // first touch by the reading thread
    pool.Run(threads,
             [&](int t) { std::memset(buf + off + slice / threads * t, t + 1, slice / threads); });
  }
  double best = 0;
  std::vector<int64_t> sink(static_cast<size_t>(threads));
  for (int pass = 0; pass < 4; ++pass) {
    for (size_t off = 0; off < n; off += slice) {
      const auto t0 = Clock::now();
      pool.Run(threads, [&](int t) {
        const uint8_t* part = buf + off + slice / threads * t;
        sink[t] += pass % 2 ? ReadBuffer<true, 4>(part, slice / threads)
                            : ReadBuffer<false, 1>(part, slice / threads);
      });
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      best = std::max(best, static_cast<double>(slice) / s);
    }
  }
  benchmark::DoNotOptimize(sink.data());
  std::free(buf);
  return best;
}

// ---- layers and prepared copies ------------------------------------------

QuantizedLinear RandomUint4Layer(const Shape& s, std::mt19937_64& rng) {
  QuantizedLinear w;
  w.K = s.K;
  w.N = s.N;
  w.group_size = kGroup;
  w.wtype = WeightType::kUint4;
  const int64_t groups = s.K / kGroup;
  w.qweight = Tensor::Zeros(DType::kI32, {s.K / 8, s.N});
  auto* q = reinterpret_cast<uint32_t*>(w.qweight.data());
  for (int64_t i = 0; i < s.K / 8 * s.N; ++i) q[i] = static_cast<uint32_t>(rng());
  w.scales = Tensor::Zeros(DType::kF16, {groups, s.N});
  w.zeros = Tensor::Zeros(DType::kI32, {groups, s.N});
  std::uniform_real_distribution<float> sd(0.001f, 0.02f);
  for (int64_t i = 0; i < groups * s.N; ++i) {
    w.scales.as<uint16_t>()[i] = FloatToHalf(sd(rng));
    w.zeros.as<int32_t>()[i] = static_cast<int32_t>(rng() % 16);
  }
  return w;
}

QuantizedLinear RandomUint8Layer(const Shape& s, std::mt19937_64& rng) {
  QuantizedLinear w = RandomUint4Layer({s.K, s.N}, rng);
  w.wtype = WeightType::kUint8b128;
  w.qweight = Tensor::Zeros(DType::kI32, {s.K / 4, s.N});
  auto* q = reinterpret_cast<uint32_t*>(w.qweight.data());
  for (int64_t i = 0; i < s.K / 4 * s.N; ++i) q[i] = static_cast<uint32_t>(rng());
  w.zeros = Tensor();
  return w;
}

struct Copies {
  std::vector<std::unique_ptr<LinearKernel>> kernels;
  int64_t bytes = 0;  // prepared bytes of one copy
};

// Prepared copies of (shape, kernel, bits), kept for the whole run so that
// repetitions can be interleaved across benchmarks (about 3 GB in all).
Copies& GetCopies(int shape_index, const std::string& kernel, int bits) {
  static std::map<std::string, Copies>* cache = new std::map<std::string, Copies>;
  const std::string key = absl::StrCat(shape_index, "/", kernel, "/", bits);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  Copies& c = (*cache)[key];
  std::mt19937_64 rng(1234 + shape_index);
  const Shape& s = kShapes[shape_index];
  const QuantizedLinear w = bits == 4 ? RandomUint4Layer(s, rng) : RandomUint8Layer(s, rng);
  const KernelFactory* f = FindLinearKernel(kernel);
  // cpu_reference computes far slower than it reads: one copy is enough.
  int copies = 1;
  do {
    std::unique_ptr<LinearKernel> k = f->create();
    absl::Status st = k->Prepare(w, Device{});
    if (!st.ok()) {
      std::fprintf(stderr, "%s: Prepare failed: %s\n", kernel.c_str(), st.ToString().c_str());
      std::exit(1);
    }
    c.bytes = k->prepared_bytes();
    c.kernels.push_back(std::move(k));
    if (kernel != "cpu_reference")
      copies = std::max<int64_t>(2, (kColdBytes + c.bytes - 1) / c.bytes);
  } while (static_cast<int>(c.kernels.size()) < copies);
  return c;
}

// ---- results -----------------------------------------------------------

double g_bandwidth[2];  // [0]: 1 thread, [1]: all threads; bytes/s
int g_repetitions = 5;
bool g_use_cpu_time = false;  // rank by the calling thread's CPU time

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Every call's time, per benchmark, over all its repetitions.
struct Series {
  int shape = 0;
  int64_t M = 0;
  int threads = 0;
  std::string kernel;
  int bits = 0;
  int64_t bytes = 0;  // prepared bytes of one copy
  int copies = 0;
  std::vector<double> calls;  // seconds

  // The 10th percentile of the calls: this machine is shared, and other
  // processes only ever slow a call down (preempting it, or one of its
  // threads); the fast tail is the kernel's own time. Each call still runs
  // on a cold copy.
  double Seconds() const {
    std::vector<double> v = calls;
    std::sort(v.begin(), v.end());
    return v[v.size() / 10];
  }
  double Median() const {
    std::vector<double> v = calls;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
};
std::vector<Series>* g_series = new std::vector<Series>;

Series* FindSeries(int shape, int64_t M, int threads, const std::string& kernel, int bits) {
  for (Series& r : *g_series) {
    if (r.shape == shape && r.M == M && r.threads == threads && r.kernel == kernel &&
        r.bits == bits) {
      return &r;
    }
  }
  return nullptr;
}

void RunKernel(benchmark::State& state, int shape, int64_t M, int threads,
               const std::string& kernel, int bits) {
  Copies& c = GetCopies(shape, kernel, bits);
  const Shape& s = kShapes[shape];
  std::mt19937_64 rng(99);
  Tensor x = Tensor::Zeros(DType::kBF16, {M, s.K});
  std::uniform_real_distribution<float> xd(-1.0f, 1.0f);
  for (int64_t i = 0; i < M * s.K; ++i) x.as<uint16_t>()[i] = FloatToBf16(xd(rng));
  Tensor y = Tensor::Zeros(DType::kBF16, {M, s.N});
  ExecContext ctx;
  ctx.num_threads = threads == 1 ? 1 : 0;
  Series* series = FindSeries(shape, M, threads, kernel, bits);
  if (series == nullptr) {
    g_series->push_back(
        {shape, M, threads, kernel, bits, c.bytes, static_cast<int>(c.kernels.size()), {}});
    series = &g_series->back();
  }
  std::vector<double> calls;
  calls.reserve(static_cast<size_t>(state.max_iterations));
  const size_t n = c.kernels.size();
  size_t i = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    const double c0 = g_use_cpu_time ? ThreadCpuSeconds() : 0.0;
    absl::Status st = c.kernels[i]->Forward(x.view(), y.mutable_view(), ctx);
    calls.push_back(g_use_cpu_time ? ThreadCpuSeconds() - c0
                                   : std::chrono::duration<double>(Clock::now() - t0).count());
    if (!st.ok()) {
      state.SkipWithError(std::string(st.message()).c_str());
      return;
    }
    i = (i + 1 == n) ? 0 : i + 1;
  }
  series->calls.insert(series->calls.end(), calls.begin(), calls.end());

  const double sec = series->Seconds();
  const double bw = g_bandwidth[threads == 1 ? 0 : 1];
  state.counters["p10_us"] = sec * 1e6;
  state.counters["GB/s"] = static_cast<double>(c.bytes) / sec / 1e9;
  state.counters["floor"] = (static_cast<double>(c.bytes) / bw) / sec;
  if (const Series* peer = FindSeries(shape, M, threads, "onednn_dense", 16)) {
    state.counters["x_onednn"] = peer->Seconds() / sec;
  }
  state.counters["copies"] = static_cast<double>(n);
}

void Register(int shape, int64_t M, int threads, const std::string& kernel, int bits) {
  const Shape& s = kShapes[shape];
  const std::string name =
      absl::StrCat(kernel, bits == 8 ? "_u8" : "", "/K", s.K, "xN", s.N, "/M", M, "/t", threads);
  // onednn_dense's copies are bf16 (dequantized), whatever `bits` says: key 16.
  benchmark::RegisterBenchmark(
      name.c_str(), [=](benchmark::State& st) { RunKernel(st, shape, M, threads, kernel, bits); })
      ->UseRealTime()
      ->MinTime(0.1)
      ->Repetitions(g_repetitions)
      ->Unit(benchmark::kMicrosecond);
}

// Whether this CPU can run `kernel` on the benchmark's layers.
bool Available(const std::string& kernel, int bits) {
  LinearSpec spec;
  spec.K = 4096;
  spec.N = 4096;
  spec.wtype = bits == 4 ? WeightType::kUint4 : WeightType::kUint8b128;
  spec.group_size = kGroup;
  spec.zero_points = bits == 4;
  spec.scale_dtype = DType::kF16;
  spec.act = DType::kBF16;
  const KernelFactory* f = FindLinearKernel(kernel);
  return f != nullptr && f->can_implement(spec, Device{}).ok();
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

std::string MarkdownTable() {
  std::string out;
  absl::StrAppend(&out, "Machine: ", CpuModel(), ", ", CpuThreadPool::Global().num_threads(),
                  " threads. DRAM read bandwidth (1 GiB buffer, best 64 MiB slice): ",
                  absl::StrFormat("%.1f GB/s with 1 thread, %.1f GB/s with all",
                                  g_bandwidth[0] / 1e9, g_bandwidth[1] / 1e9),
                  ".\n\n");
  absl::StrAppend(&out, g_use_cpu_time ? "Times are the calling thread's CPU time.\n\n" : "",
                  "| K x N | M | threads | kernel | p10 time (us) | median (us) | GB/s | of floor "
                  "| vs oneDNN |\n"
                  "|---|---|---|---|---|---|---|---|---|\n");
  std::vector<const Series*> rows;
  for (const Series& r : *g_series) rows.push_back(&r);
  // Registration order (shape, M, threads, kernel), whatever order they ran in.
  auto rank = [](const Series* r) {
    const char* order[] = {"onednn_dense",        "cpu_avx512_w4a16", "cpu_avx512_w8a16",
                           "cpu_avx512fma_w4a16", "cpu_avx2_w4a16",   "cpu_reference"};
    for (int i = 0; i < 6; ++i) {
      if (r->kernel == order[i]) return i;
    }
    return 6;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const Series* a, const Series* b) {
    return std::make_tuple(a->shape, a->M, a->threads, rank(a)) <
           std::make_tuple(b->shape, b->M, b->threads, rank(b));
  });
  for (const Series* r : rows) {
    const Shape& s = kShapes[r->shape];
    const double bw = g_bandwidth[r->threads == 1 ? 0 : 1];
    const double sec = r->Seconds();
    const Series* peer = FindSeries(r->shape, r->M, r->threads, "onednn_dense", 16);
    const std::string vs = (peer && r->kernel != "onednn_dense")
                               ? absl::StrFormat("%.2fx", peer->Seconds() / sec)
                               : "";
    // onednn_dense holds bf16 (2 bytes a weight), or f32 where oneDNN has no
    // bf16 matmul (ONEDNN_MAX_CPU_ISA=AVX2 emulates such a CPU).
    const bool f32_peer = r->bytes >= 4 * s.K * s.N;
    const std::string kernel =
        r->bits == 8 ? absl::StrCat(r->kernel, " (uint8b128)")
        : r->kernel == "onednn_dense"
            ? std::string(f32_peer ? "onednn_dense (f32)" : "onednn_dense (bf16)")
            : absl::StrCat(r->kernel, " (uint4)");
    absl::StrAppend(
        &out,
        absl::StrFormat("| %dx%d | %d | %s | %s | %.0f | %.0f | %.1f | %.0f%% | %s |\n", s.K, s.N,
                        r->M, r->threads == 1 ? "1" : "all", kernel, sec * 1e6, r->Median() * 1e6,
                        r->bytes / sec / 1e9, 100.0 * (r->bytes / bw) / sec, vs));
  }
  return out;
}

}  // namespace
}  // namespace qlayer

int main(int argc, char** argv) {
  using namespace qlayer;  // NOLINT
  std::string md_path;
  bool crossover = false, w8 = false;
  std::vector<std::string> gemv = {"cpu_avx512_w4a16", "cpu_avx512fma_w4a16", "cpu_avx2_w4a16"};
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--qlayer_md=", 0) == 0) {
      md_path = a.substr(12);
    } else if (a == "--qlayer_crossover") {
      crossover = true;
    } else if (a.rfind("--qlayer_gemv=", 0) == 0) {
      gemv = absl::StrSplit(a.substr(14), ',', absl::SkipEmpty());
    } else if (a == "--qlayer_w8") {
      w8 = true;
    } else if (a.rfind("--qlayer_repetitions=", 0) == 0) {
      g_repetitions = std::max(1, std::atoi(a.c_str() + 21));
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());

  const int all = CpuThreadPool::Global().num_threads();
  g_bandwidth[0] = MeasureReadBandwidth(1);
  g_bandwidth[1] = MeasureReadBandwidth(all);
  std::printf("DRAM read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (%d threads)\n",
              g_bandwidth[0] / 1e9, g_bandwidth[1] / 1e9, all);

  // --qlayer_crossover: where the GEMV kernel stops beating oneDNN, one
  // thread, judged by thread CPU time (both are compute-bound there, scale
  // alike over threads, and CPU time ignores preemption on a shared machine).
  // Run it with QLAYER_CPU_DISABLE / ONEDNN_MAX_CPU_ISA to emulate a CPU
  // with less (BENCHMARKS.md has the commands).
  if (crossover) {
    auto it = std::find_if(gemv.begin(), gemv.end(),
                           [](const std::string& k) { return Available(k, 4); });
    gemv = it == gemv.end() ? std::vector<std::string>{} : std::vector<std::string>{*it};
  }
  g_use_cpu_time = crossover;
  for (int shape = 0; shape < 3; ++shape) {
    const std::vector<int64_t> ms =
        crossover ? std::vector<int64_t>{2, 4, 6, 8, 12, 16, 32, 48, 64, 96, 128, 192, 256}
                  : std::vector<int64_t>{1, 4, 16, 64, 256};
    std::vector<int> thread_counts = {1};
    if (all > 1 && !crossover) thread_counts.push_back(all);
    for (int64_t M : ms) {
      for (int threads : thread_counts) {
        Register(shape, M, threads, "onednn_dense", 16);  // the peer runs first
        for (const std::string& k : gemv) {
          // The AVX2 fallback serves decode only; past M = 64 it only costs
          // time. The AVX-512 FMA loop's table rows are the decode ones (M <=
          // 16); --qlayer_crossover measures it up to 256.
          if (!crossover && k == "cpu_avx2_w4a16" && M > 64) continue;
          if (!crossover && k == "cpu_avx512fma_w4a16" && M > 16) continue;
          if (Available(k, 4)) Register(shape, M, threads, k, 4);
        }
        if (!crossover && shape == 0 && M == 1 && threads == 1) {
          Register(shape, M, threads, "cpu_reference", 4);
        }
        // With --qlayer_crossover, --qlayer_w8 measures the 8-bit kernel's
        // own crossover (twice the bytes and two nibble products a weight: it
        // stops beating oneDNN earlier than the 4-bit one).
        if (w8 && (crossover || M <= 16) && (crossover || threads == 1 || shape == 1) &&
            Available("cpu_avx512_w8a16", 8)) {
          Register(shape, M, threads, "cpu_avx512_w8a16", 8);
        }
      }
    }
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  // Measured again after the kernels, keeping the better figure: load from
  // other processes only lowers it.
  g_bandwidth[0] = std::max(g_bandwidth[0], MeasureReadBandwidth(1));
  g_bandwidth[1] = std::max(g_bandwidth[1], MeasureReadBandwidth(all));

  const std::string md = MarkdownTable();
  std::printf("\n%s", md.c_str());
  if (!md_path.empty()) std::ofstream(md_path) << md;
  return 0;
}
