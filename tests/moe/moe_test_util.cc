#include "tests/moe/moe_test_util.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "gtest/gtest.h"

namespace qlayer::moetest {

std::vector<double> DequantNK(const QuantizedLinear& w) {
  std::vector<double> out(static_cast<size_t>(w.N * w.K));
  if (w.wtype == WeightType::kDense) {
    for (int64_t i = 0; i < w.N * w.K; ++i)
      out[i] = LoadAsDouble(w.dense.data(), w.dense.dtype(), i);
    return out;
  }
  const int bits = WeightBits(w.wtype);
  const int pack = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  const int32_t* qw = w.qweight.as<int32_t>();
  for (int64_t k = 0; k < w.K; ++k) {
    const int64_t g = w.g_idx.empty() ? k / w.group_size : w.g_idx.as<int32_t>()[k];
    for (int64_t n = 0; n < w.N; ++n) {
      const uint32_t word = static_cast<uint32_t>(qw[(k / pack) * w.N + n]);
      const int32_t q = static_cast<int32_t>((word >> (bits * (k % pack))) & mask);
      const int32_t z =
          HasZeroPoints(w.wtype) ? w.zeros.as<int32_t>()[g * w.N + n] : (bits == 4 ? 8 : 128);
      const double s = LoadAsDouble(w.scales.data(), w.scales.dtype(), g * w.N + n);
      out[n * w.K + k] = (q - z) * s;
    }
  }
  return out;
}

namespace {

std::vector<float> RandomWeight(int64_t N, int64_t K, std::mt19937_64& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f / std::sqrt(static_cast<float>(K)));
  std::vector<float> w(static_cast<size_t>(N * K));
  for (float& v : w) v = d(rng);
  return w;
}

QuantizedLinear Quantize(int64_t N, int64_t K, const RandomBlockSpec& spec, uint64_t seed,
                         std::mt19937_64& rng) {
  const std::vector<float> w = RandomWeight(N, K, rng);
  QuantizeOptions o;
  o.wtype = spec.wtype;
  o.group_size = spec.group_size;
  o.scale_dtype = spec.scale_dtype;
  o.act_order = spec.act_order;
  o.seed = seed;
  absl::StatusOr<QuantizedLinear> q = QuantizeRtn(w.data(), N, K, o);
  EXPECT_TRUE(q.ok()) << q.status();
  return q.ok() ? *std::move(q) : QuantizedLinear();
}

// gate, up (same act-order seed: they share input rows), down; fills ref.
MoEExpert MakeExpert(int64_t H, int64_t I, const RandomBlockSpec& spec, std::mt19937_64& rng,
                     RefMlp& ref, QuantizedLinear* parts) {
  const uint64_t seed13 = rng();
  parts[0] = Quantize(I, H, spec, seed13, rng);
  parts[1] = Quantize(I, H, spec, seed13, rng);
  parts[2] = Quantize(H, I, spec, rng(), rng);
  ref.H = H;
  ref.I = I;
  ref.gate = DequantNK(parts[0]);
  ref.up = DequantNK(parts[1]);
  ref.down = DequantNK(parts[2]);
  MoEExpert x;
  absl::StatusOr<QuantizedLinear> w13 = StackGateUp(parts[0], parts[1]);
  EXPECT_TRUE(w13.ok()) << w13.status();
  if (w13.ok()) x.w13 = *std::move(w13);
  x.w2 = parts[2].Clone();
  return x;
}

double Silu(double g) { return g / (1.0 + std::exp(-g)); }

// mlp(x) into out [H].
void RefMlpForward(const RefMlp& m, const std::vector<double>& x, std::vector<double>& out) {
  std::vector<double> a(static_cast<size_t>(m.I));
  for (int64_t i = 0; i < m.I; ++i) {
    double g = 0, u = 0;
    for (int64_t h = 0; h < m.H; ++h) {
      g += m.gate[i * m.H + h] * x[h];
      u += m.up[i * m.H + h] * x[h];
    }
    a[i] = Silu(g) * u;
  }
  out.assign(static_cast<size_t>(m.H), 0.0);
  for (int64_t h = 0; h < m.H; ++h) {
    double acc = 0;
    for (int64_t i = 0; i < m.I; ++i) acc += m.down[h * m.I + i] * a[i];
    out[h] = acc;
  }
}

}  // namespace

RandomBlock MakeRandomBlock(const RandomBlockSpec& spec, std::mt19937_64& rng) {
  RandomBlock rb;
  MoEBlock& b = rb.block;
  b.name = "model.layers.0.mlp";
  b.family = "test";
  b.hidden = spec.H;
  b.intermediate = spec.I;
  rb.experts.resize(static_cast<size_t>(spec.E));
  for (int64_t e = 0; e < spec.E; ++e) {
    QuantizedLinear parts[3];
    b.experts.push_back(MakeExpert(spec.H, spec.I, spec, rng, rb.experts[e], parts));
    rb.gate_w.push_back(std::move(parts[0]));
    rb.up_w.push_back(std::move(parts[1]));
    rb.down_w.push_back(std::move(parts[2]));
  }
  if (spec.shared_I > 0) {
    QuantizedLinear parts[3];
    b.shared = MakeExpert(spec.H, spec.shared_I, spec, rng, rb.shared, parts);
    for (QuantizedLinear& p : parts) rb.shared_w.push_back(std::move(p));
    if (spec.shared_gate) {
      b.shared_expert_gate = Tensor::Zeros(spec.gate_dtype, {1, spec.H});
      std::normal_distribution<double> d(0.0, 1.0 / std::sqrt(static_cast<double>(spec.H)));
      rb.shared_gate.resize(static_cast<size_t>(spec.H));
      for (int64_t h = 0; h < spec.H; ++h) {
        StoreFromDouble(b.shared_expert_gate.data(), spec.gate_dtype, h, d(rng));
        rb.shared_gate[h] = LoadAsDouble(b.shared_expert_gate.data(), spec.gate_dtype, h);
      }
    }
  }
  b.gate = Tensor::Zeros(spec.gate_dtype, {spec.E, spec.H});
  std::normal_distribution<double> d(0.0, 1.0);
  for (int64_t i = 0; i < spec.E * spec.H; ++i) {
    StoreFromDouble(b.gate.data(), spec.gate_dtype, i, d(rng) / std::sqrt(double(spec.H)));
  }
  b.router.num_experts = spec.E;
  b.router.top_k = spec.top_k;
  b.router.norm_topk_prob = true;
  return rb;
}

std::vector<double> ReferenceMoE(const RandomBlock& rb, const ConstTensorView& x,
                                 const std::vector<int32_t>& ids, const std::vector<float>& w,
                                 int top_k) {
  const int64_t T = x.dim(0), H = x.dim(1);
  std::vector<double> y(static_cast<size_t>(T * H), 0.0);
  std::vector<double> xr(static_cast<size_t>(H)), o;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) xr[h] = LoadAsDouble(x.data, x.dtype, t * H + h);
    for (int j = 0; j < top_k; ++j) {
      RefMlpForward(rb.experts[ids[t * top_k + j]], xr, o);
      for (int64_t h = 0; h < H; ++h) y[t * H + h] += static_cast<double>(w[t * top_k + j]) * o[h];
    }
    if (rb.block.shared.has_value()) {
      RefMlpForward(rb.shared, xr, o);
      double g = 1.0;
      if (!rb.shared_gate.empty()) {
        double dot = 0;
        for (int64_t h = 0; h < H; ++h) dot += rb.shared_gate[h] * xr[h];
        g = 1.0 / (1.0 + std::exp(-dot));
      }
      for (int64_t h = 0; h < H; ++h) y[t * H + h] += g * o[h];
    }
  }
  return y;
}

double RelativeError(const ConstTensorView& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = LoadAsDouble(got.data, got.dtype, static_cast<int64_t>(i));
    if (!std::isfinite(g)) return std::numeric_limits<double>::infinity();
    num += (g - want[i]) * (g - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace qlayer::moetest
