#include "client/cli/moe_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/moe_catalog.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer {
namespace {

constexpr double kNearTie = 1e-4;

std::vector<double> Doubles(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = LoadAsDouble(t.data(), t.dtype(), i);
  return v;
}

// Descending, ties to the lower index.
std::vector<int> Order(const std::vector<double>& v) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  return idx;
}

double Sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

}  // namespace

absl::StatusOr<std::unique_ptr<MoEReferenceBlock>> MoEReferenceBlock::Load(
    const std::string& model_dir, const std::string& block) {
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::Open(model_dir));
  QLAYER_ASSIGN_OR_RETURN(QuantConfig config, QuantConfig::Parse(ckpt->config()));
  QLAYER_ASSIGN_OR_RETURN(std::vector<MoEBlockEntry> entries, ListMoEBlocks(*ckpt, config, block));
  const MoEBlockEntry* entry = nullptr;
  for (const MoEBlockEntry& e : entries) {
    if (e.name == block) entry = &e;
  }
  if (entry == nullptr) {
    std::vector<std::string> names;
    auto all = ListMoEBlocks(*ckpt, config);
    if (all.ok()) {
      for (const MoEBlockEntry& e : *all) names.push_back(e.name);
    }
    return absl::NotFoundError(absl::StrCat("checkpoint ", model_dir, " has no MoE block '", block,
                                            "' (it has ", names.size(), ": ",
                                            absl::StrJoin(names, ", "), ")"));
  }
  QLAYER_ASSIGN_OR_RETURN(MoEBlock b, LoadMoEBlock(*ckpt, config, *entry));
  auto ref = std::unique_ptr<MoEReferenceBlock>(new MoEReferenceBlock);
  ref->router_ = b.router;
  ref->H_ = b.hidden;
  ref->E_ = b.num_experts();
  ref->gate_ = Doubles(b.gate);
  if (!b.correction_bias.empty()) ref->bias_ = Doubles(b.correction_bias);
  if (!b.shared_expert_gate.empty()) ref->shared_gate_ = Doubles(b.shared_expert_gate);
  const int64_t H = ref->H_;
  auto dequant = [H](const MoEExpert& x) {
    Mlp m;
    m.I = x.intermediate();
    m.gate.resize(static_cast<size_t>(m.I * H));
    m.up.resize(static_cast<size_t>(m.I * H));
    m.down.resize(static_cast<size_t>(H * m.I));
    for (int64_t i = 0; i < m.I; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        m.gate[i * H + h] = x.w13.Dequant(h, i);
        m.up[i * H + h] = x.w13.Dequant(h, m.I + i);
        m.down[h * m.I + i] = x.w2.Dequant(i, h);
      }
    }
    return m;
  };
  for (const MoEExpert& x : b.experts) ref->experts_.push_back(dequant(x));
  ref->expert_bytes_ = b.experts[0].w13.weight_bytes() + b.experts[0].w2.weight_bytes();
  if (b.shared.has_value()) {
    ref->shared_ = std::make_unique<Mlp>(dequant(*b.shared));
    ref->shared_bytes_ = b.shared->w13.weight_bytes() + b.shared->w2.weight_bytes();
  }
  return ref;
}

std::vector<double> MoEReferenceBlock::Logits(const ConstTensorView& x) const {
  const int64_t T = x.dim(0);
  std::vector<double> out(static_cast<size_t>(T * E_), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E_; ++e) {
      double acc = 0;
      for (int64_t h = 0; h < H_; ++h) {
        acc += LoadAsDouble(x.data, x.dtype, t * H_ + h) * gate_[e * H_ + h];
      }
      out[t * E_ + e] = acc;
    }
  }
  return out;
}

void MoEReferenceBlock::Scores(const double* logits, std::vector<double>& scores,
                               std::vector<double>& choice) const {
  scores.assign(static_cast<size_t>(E_), 0.0);
  if (router_.scoring == RouterScoring::kSigmoid) {
    for (int64_t e = 0; e < E_; ++e) scores[e] = Sigmoid(logits[e]);
  } else {
    const double mx = *std::max_element(logits, logits + E_);
    double sum = 0;
    for (int64_t e = 0; e < E_; ++e) sum += scores[e] = std::exp(logits[e] - mx);
    for (double& s : scores) s /= sum;
  }
  choice = scores;
  for (size_t e = 0; e < bias_.size(); ++e) choice[e] += bias_[e];
}

ReferenceRouting MoEReferenceBlock::Route(const std::vector<double>& logits, int64_t T) const {
  const int k = router_.top_k;
  ReferenceRouting r;
  r.ids.resize(static_cast<size_t>(T * k));
  r.weights.resize(static_cast<size_t>(T * k));
  r.near_tie.assign(static_cast<size_t>(T), false);
  std::vector<double> scores, choice;
  for (int64_t t = 0; t < T; ++t) {
    Scores(logits.data() + t * E_, scores, choice);
    if (router_.topk_method != TopkMethod::kGreedy) {
      const int64_t G = router_.n_group, per = E_ / G, keep = router_.topk_group;
      std::vector<double> group(static_cast<size_t>(G));
      for (int64_t g = 0; g < G; ++g) {
        std::vector<double> m(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(m.rbegin(), m.rend());
        group[g] = router_.topk_method == TopkMethod::kNoauxTc ? m[0] + m[1] : m[0];
      }
      const std::vector<int> order = Order(group);
      if (keep < G && group[order[keep - 1]] - group[order[keep]] < kNearTie) r.near_tie[t] = true;
      std::vector<bool> kept(static_cast<size_t>(G), false);
      for (int64_t g = 0; g < keep; ++g) kept[order[g]] = true;
      for (int64_t e = 0; e < E_; ++e) {
        if (!kept[e / per]) choice[e] = 0.0;  // transformers' masked_fill(..., 0.0)
      }
    }
    const std::vector<int> order = Order(choice);
    if (k < E_ && choice[order[k - 1]] - choice[order[k]] < kNearTie) r.near_tie[t] = true;
    for (int j = 0; j < k; ++j) r.ids[t * k + j] = order[j];
    const std::vector<double> w = WeightsFor(logits.data() + t * E_, r.ids.data() + t * k);
    std::copy(w.begin(), w.end(), r.weights.begin() + t * k);
  }
  return r;
}

ReferenceRouting MoEReferenceBlock::RouteLike(const std::vector<double>& logits, int64_t T,
                                              const int32_t* server_ids,
                                              int64_t* mismatches) const {
  ReferenceRouting r = Route(logits, T);
  const int k = router_.top_k;
  int64_t differ = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* got = server_ids + t * k;
    if (r.near_tie[t]) {
      std::copy(got, got + k, r.ids.begin() + t * k);
      const std::vector<double> w = WeightsFor(logits.data() + t * E_, got);
      std::copy(w.begin(), w.end(), r.weights.begin() + t * k);
      continue;
    }
    differ += !std::equal(got, got + k, r.ids.begin() + t * k);
  }
  if (mismatches != nullptr) *mismatches = differ;
  return r;
}

std::vector<double> MoEReferenceBlock::WeightsFor(const double* logits_row,
                                                  const int32_t* ids) const {
  std::vector<double> scores, choice;
  Scores(logits_row, scores, choice);
  const int k = router_.top_k;
  std::vector<double> w(static_cast<size_t>(k));
  double sum = 0;
  for (int j = 0; j < k; ++j) sum += w[j] = scores[ids[j]];
  if (router_.norm_topk_prob) {
    for (double& v : w) v /= sum + router_.norm_epsilon;
  }
  for (double& v : w) v *= router_.routed_scaling_factor;
  return w;
}

void MoEReferenceBlock::Mlp64(const Mlp& m, const double* x, double* y, double scale) const {
  std::vector<double> a(static_cast<size_t>(m.I));
  for (int64_t i = 0; i < m.I; ++i) {
    double g = 0, u = 0;
    for (int64_t h = 0; h < H_; ++h) {
      g += m.gate[i * H_ + h] * x[h];
      u += m.up[i * H_ + h] * x[h];
    }
    a[i] = g * Sigmoid(g) * u;
  }
  for (int64_t h = 0; h < H_; ++h) {
    double o = 0;
    for (int64_t i = 0; i < m.I; ++i) o += m.down[h * m.I + i] * a[i];
    y[h] += scale * o;
  }
}

Tensor MoEReferenceBlock::Forward(const ConstTensorView& x, const std::vector<int32_t>& ids,
                                  const std::vector<double>& weights) const {
  const int64_t T = x.dim(0);
  const int k = router_.top_k;
  Tensor y = Tensor::Zeros(DType::kF64, {T, H_});
  std::vector<double> row(static_cast<size_t>(H_));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H_; ++h) row[h] = LoadAsDouble(x.data, x.dtype, t * H_ + h);
    double* yt = y.as<double>() + t * H_;
    for (int j = 0; j < k; ++j) {
      Mlp64(experts_[ids[t * k + j]], row.data(), yt, weights[t * k + j]);
    }
    if (shared_ != nullptr) {
      double g = 1.0;
      if (!shared_gate_.empty()) {
        double dot = 0;
        for (int64_t h = 0; h < H_; ++h) dot += shared_gate_[h] * row[h];
        g = Sigmoid(dot);
      }
      Mlp64(*shared_, row.data(), yt, g);
    }
  }
  return y;
}

}  // namespace qlayer
