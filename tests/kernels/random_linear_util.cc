#include "tests/kernels/random_linear_util.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>

namespace qlayer::testing {

namespace {

// Stores v (already representable or to be rounded) as element i of t and
// returns the value actually stored, as double.
double StoreRounded(Tensor& t, int64_t i, double v) {
  StoreFromDouble(t.data(), t.dtype(), i, v);
  return LoadAsDouble(t.data(), t.dtype(), i);
}

}  // namespace

RandomLinear MakeRandomLinear(const RandomLinearSpec& spec, std::mt19937_64& rng) {
  RandomLinear r;
  QuantizedLinear& w = r.w;
  const int64_t K = spec.K, N = spec.N;
  w.K = K;
  w.N = N;
  w.wtype = spec.wtype;
  r.w_ref.assign(static_cast<size_t>(K * N), 0.0);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);

  if (spec.wtype == WeightType::kDense) {
    w.group_size = 0;
    w.dense = Tensor::Zeros(spec.scale_dtype, {N, K});
    const double amp = 1.0 / std::sqrt(static_cast<double>(K));
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        r.w_ref[k * N + n] = StoreRounded(w.dense, n * K + k, amp * unit(rng));
      }
    }
  } else {
    const int bits = WeightBits(spec.wtype);
    const int pack = 32 / bits;
    const int64_t G = spec.group_size > 0 ? spec.group_size : K;
    const int64_t groups = K / G;
    w.group_size = G;

    // Group of each row: k / G, or for act-order a random assignment with
    // exactly G rows per group (what GPTQ's desc_act produces).
    std::vector<int32_t> group(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) group[k] = static_cast<int32_t>(k / G);
    if (spec.g_idx) {
      std::shuffle(group.begin(), group.end(), rng);
      w.g_idx = Tensor::Zeros(DType::kI32, {K});
      for (int64_t k = 0; k < K; ++k) w.g_idx.as<int32_t>()[k] = group[k];
    }

    // Scales of either sign and a spread of magnitudes, sized so outputs
    // stay O(1) with activations in [-1, 1).
    const double base = 4.0 / ((1 << bits) * std::sqrt(static_cast<double>(K)));
    std::uniform_real_distribution<double> mag(0.25, 2.0);
    w.scales = Tensor::Zeros(spec.scale_dtype, {groups, N});
    std::vector<double> s(static_cast<size_t>(groups * N));
    for (int64_t i = 0; i < groups * N; ++i) {
      s[i] = StoreRounded(w.scales, i, base * mag(rng) * (unit(rng) < 0 ? -1 : 1));
    }
    // Zero points anywhere in [0, 2^bits] (2^bits is GPTQ v1's +1 edge).
    std::vector<int32_t> z(static_cast<size_t>(groups * N), SymmetricZero(spec.wtype));
    if (HasZeroPoints(spec.wtype)) {
      std::uniform_int_distribution<int32_t> zd(0, 1 << bits);
      w.zeros = Tensor::Zeros(DType::kI32, {groups, N});
      for (int64_t i = 0; i < groups * N; ++i) z[i] = w.zeros.as<int32_t>()[i] = zd(rng);
    }
    std::uniform_int_distribution<uint32_t> qd(0, (1u << bits) - 1);
    w.qweight = Tensor::Zeros(DType::kI32, {K / pack, N});
    auto* qw = reinterpret_cast<uint32_t*>(w.qweight.data());
    for (int64_t k = 0; k < K; ++k) {
      for (int64_t n = 0; n < N; ++n) {
        const uint32_t q = qd(rng);
        qw[(k / pack) * N + n] |= q << (bits * (k % pack));
        const int64_t g = group[k];
        r.w_ref[k * N + n] = (static_cast<double>(q) - z[g * N + n]) * s[g * N + n];
      }
    }
  }

  r.bias_ref.assign(static_cast<size_t>(N), 0.0);
  if (spec.bias) {
    w.bias = Tensor::Zeros(spec.scale_dtype, {N});
    for (int64_t n = 0; n < N; ++n) r.bias_ref[n] = StoreRounded(w.bias, n, unit(rng));
  }
  return r;
}

std::vector<double> ReferenceForward(const RandomLinear& rl, const ConstTensorView& x) {
  const int64_t M = x.dim(0), K = rl.w.K, N = rl.w.N;
  std::vector<double> y(static_cast<size_t>(M * N));
  std::vector<double> xr(static_cast<size_t>(K));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t k = 0; k < K; ++k) xr[k] = LoadAsDouble(x.data, x.dtype, m * K + k);
    for (int64_t n = 0; n < N; ++n) {
      double acc = rl.bias_ref[n];
      for (int64_t k = 0; k < K; ++k) acc += xr[k] * rl.w_ref[k * N + n];
      y[m * N + n] = acc;
    }
  }
  return y;
}

std::vector<double> AbsReference(const RandomLinear& rl, const ConstTensorView& x) {
  const int64_t M = x.dim(0), K = rl.w.K, N = rl.w.N;
  std::vector<double> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = std::fabs(rl.bias_ref[n]);
      for (int64_t k = 0; k < K; ++k) {
        acc += std::fabs(LoadAsDouble(x.data, x.dtype, m * K + k) * rl.w_ref[k * N + n]);
      }
      y[m * N + n] = acc;
    }
  }
  return y;
}

double ErrorNorm(const ConstTensorView& got, const std::vector<double>& want) {
  double num = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = LoadAsDouble(got.data, got.dtype, static_cast<int64_t>(i));
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    num += (g - want[i]) * (g - want[i]);
  }
  return std::sqrt(num);
}

double Norm(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return std::sqrt(s);
}

std::vector<double> RoundTo(const std::vector<double>& want, DType dt) {
  std::vector<double> r(want.size());
  Tensor tmp = Tensor::Zeros(dt, {1});
  for (size_t i = 0; i < want.size(); ++i) {
    StoreFromDouble(tmp.data(), dt, 0, want[i]);
    r[i] = LoadAsDouble(tmp.data(), dt, 0);
  }
  return r;
}

}  // namespace qlayer::testing
