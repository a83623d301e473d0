#include "tests/gpu/gpu_test_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <thread>

namespace qlayer::gputest {
namespace {

// splitmix64: fast and good enough for test data of hundreds of MB.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
};

template <typename F>
void ParallelFor(int64_t n, F f) {
  const int64_t threads =
      std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t) {
    pool.emplace_back([=, &f] {
      for (int64_t i = t; i < n; i += threads) f(i);
    });
  }
  for (auto& th : pool) th.join();
}

}  // namespace

QuantizedLinear MakeRandomWeight(const RandomWeightOptions& o) {
  QuantizedLinear w;
  w.K = o.K;
  w.N = o.N;
  w.wtype = o.wtype;
  w.group_size = o.group_size;
  const int pack = PackFactor(o.wtype), bits = WeightBits(o.wtype);
  const int64_t groups = o.K / o.group_size;
  w.qweight = Tensor::Zeros(DType::kI32, {o.K / pack, o.N});
  {
    // Random 32-bit words: every slot value equally likely. Chunked in
    // parallel for the benchmark's 235M-weight layers.
    uint32_t* q = w.qweight.as<uint32_t>();
    const int64_t words = w.qweight.numel();
    const int64_t chunk = 1 << 20;
    ParallelFor((words + chunk - 1) / chunk, [&](int64_t c) {
      Rng r{o.seed * 7919 + static_cast<uint64_t>(c)};
      const int64_t end = std::min(words, (c + 1) * chunk);
      for (int64_t i = c * chunk; i < end; ++i) q[i] = static_cast<uint32_t>(r.Next());
    });
  }
  Rng r{o.seed};
  w.scales = Tensor::Zeros(o.scale_dtype, {groups, o.N});
  for (int64_t i = 0; i < groups * o.N; ++i) {
    StoreFromDouble(w.scales.data(), o.scale_dtype, i, 0.002 + 0.02 * r.Uniform());
  }
  if (HasZeroPoints(o.wtype)) {
    // 0 ... 2^bits inclusive: GPTQ v1's +1 offset can give 2^bits.
    w.zeros = Tensor::Zeros(DType::kI32, {groups, o.N});
    int32_t* z = w.zeros.as<int32_t>();
    for (int64_t i = 0; i < groups * o.N; ++i) {
      z[i] = static_cast<int32_t>(r.Next() % ((1u << bits) + 1));
    }
  }
  if (o.act_order) {
    w.g_idx = Tensor::Zeros(DType::kI32, {o.K});
    int32_t* g = w.g_idx.as<int32_t>();
    if (o.irregular_groups) {
      for (int64_t k = 0; k < o.K; ++k) g[k] = static_cast<int32_t>(r.Next() % groups);
    } else {
      std::vector<int32_t> perm(static_cast<size_t>(o.K));
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937_64 gen(o.seed);
      std::shuffle(perm.begin(), perm.end(), gen);
      for (int64_t k = 0; k < o.K; ++k)
        g[perm[static_cast<size_t>(k)]] = static_cast<int32_t>(k / o.group_size);
    }
  }
  if (o.bias) {
    w.bias = Tensor::Zeros(DType::kF16, {o.N});
    for (int64_t n = 0; n < o.N; ++n)
      StoreFromDouble(w.bias.data(), DType::kF16, n, r.Uniform() - 0.5);
  }
  return w;
}

Tensor RandomActivations(int64_t M, int64_t K, DType dtype, uint64_t seed) {
  Tensor x = Tensor::Zeros(dtype, {M, K});
  Rng r{seed};
  for (int64_t i = 0; i < M * K; ++i) StoreFromDouble(x.data(), dtype, i, 2.0 * r.Uniform() - 1.0);
  return x;
}

std::vector<double> DequantizeToDouble(const QuantizedLinear& w) {
  std::vector<double> d(static_cast<size_t>(w.K * w.N));
  ParallelFor(w.K, [&](int64_t k) {
    for (int64_t n = 0; n < w.N; ++n) d[static_cast<size_t>(k * w.N + n)] = w.Dequant(k, n);
  });
  return d;
}

std::vector<double> ReferenceForward(const Tensor& x, const std::vector<double>& w_kn,
                                     const QuantizedLinear& w) {
  const int64_t M = x.dim(0), K = w.K, N = w.N;
  std::vector<double> y(static_cast<size_t>(M * N), 0.0);
  ParallelFor(M, [&](int64_t m) {
    double* row = &y[static_cast<size_t>(m * N)];
    for (int64_t k = 0; k < K; ++k) {
      const double xv = LoadAsDouble(x.data(), x.dtype(), m * K + k);
      const double* wr = &w_kn[static_cast<size_t>(k * N)];
      for (int64_t n = 0; n < N; ++n) row[n] += xv * wr[n];
    }
    if (!w.bias.empty()) {
      for (int64_t n = 0; n < N; ++n) row[n] += LoadAsDouble(w.bias.data(), w.bias.dtype(), n);
    }
  });
  return y;
}

double RelativeError(const Tensor& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double v = LoadAsDouble(y.data(), y.dtype(), static_cast<int64_t>(i));
    if (!std::isfinite(v)) return std::numeric_limits<double>::infinity();
    num += (v - ref[i]) * (v - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

uint64_t TestSeed() {
  if (const char* s = std::getenv("QLAYER_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count() %
                               1000000007);
}

}  // namespace qlayer::gputest
