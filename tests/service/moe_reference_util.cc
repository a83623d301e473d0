#include "tests/service/moe_reference_util.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/moe_catalog.h"
#include "server/checkpoint/quant_config.h"

namespace qlayer::testing {
namespace {

constexpr double kGap = 1e-4;

std::vector<double> ToDoubles(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) out[i] = LoadAsDouble(t.data(), t.dtype(), i);
  return out;
}

// Indices of v sorted by descending value, ties to the lower index (as
// torch.topk on CPU returns them in practice; the gap check covers the rest).
std::vector<int> Order(const std::vector<double>& v) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  return idx;
}

double Sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

}  // namespace

MoEReference::MoEReference(const std::string& dir, const std::string& block_name) {
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    ADD_FAILURE() << ckpt.status();
    return;
  }
  auto qc = QuantConfig::Parse((*ckpt)->config());
  if (!qc.ok()) {
    ADD_FAILURE() << qc.status();
    return;
  }
  auto entries = ListMoEBlocks(**ckpt, *qc, block_name);
  if (!entries.ok() || entries->size() != 1) {
    ADD_FAILURE() << "no MoE block " << block_name << " in " << dir << ": "
                  << (entries.ok() ? "none listed" : entries.status().ToString());
    return;
  }
  auto block = LoadMoEBlock(**ckpt, *qc, (*entries)[0]);
  if (!block.ok()) {
    ADD_FAILURE() << block.status();
    return;
  }

  // Router settings straight from config.json, with the defaults of
  // transformers' configuration classes.
  const nlohmann::json& c = (*ckpt)->config();
  family_ = c.value("model_type", std::string());
  const bool deepseek = family_ == "deepseek_v2" || family_ == "deepseek_v3";
  const bool v3 = family_ == "deepseek_v3";
  k_ = c.value("num_experts_per_tok", 0);
  E_ = family_ == "mixtral" ? c.value("num_local_experts", 0)
       : deepseek           ? c.value("n_routed_experts", 0)
                            : c.value("num_experts", 0);
  norm_topk_prob_ = family_ == "mixtral" ? true : c.value("norm_topk_prob", v3);
  if (deepseek) {
    topk_method_ = c.value("topk_method", std::string(v3 ? "noaux_tc" : "greedy"));
    n_group_ = c.value("n_group", 1);
    topk_group_ = c.value("topk_group", 1);
    routed_scaling_factor_ = c.value("routed_scaling_factor", v3 ? 2.5 : 1.0);
  } else {
    topk_method_ = "greedy";
  }

  H_ = block->hidden;
  I_ = block->intermediate;
  gate_ = ToDoubles(block->gate);
  if (!block->correction_bias.empty()) bias_ = ToDoubles(block->correction_bias);
  if (!block->shared_expert_gate.empty()) shared_gate_ = ToDoubles(block->shared_expert_gate);
  auto dequant = [this](const MoEExpert& x) {
    Mlp m;
    m.I = x.intermediate();
    m.gate.resize(static_cast<size_t>(m.I * H_));
    m.up.resize(static_cast<size_t>(m.I * H_));
    m.down.resize(static_cast<size_t>(H_ * m.I));
    for (int64_t i = 0; i < m.I; ++i) {
      for (int64_t h = 0; h < H_; ++h) {
        m.gate[i * H_ + h] = x.w13.Dequant(h, i);
        m.up[i * H_ + h] = x.w13.Dequant(h, m.I + i);
        m.down[h * m.I + i] = x.w2.Dequant(i, h);
      }
    }
    return m;
  };
  for (const MoEExpert& x : block->experts) experts_.push_back(dequant(x));
  if (block->shared.has_value()) {
    shared_ = dequant(*block->shared);
    shared_I_ = shared_.I;
  }
  ok_ = static_cast<int64_t>(experts_.size()) == E_ && k_ > 0 &&
        static_cast<int64_t>(gate_.size()) == E_ * H_;
  if (!ok_) ADD_FAILURE() << "MoE block " << block_name << ": config and tensors disagree";
}

std::vector<double> MoEReference::Logits(const ConstTensorView& x) const {
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

void MoEReference::Scores(const double* logits, std::vector<double>& scores,
                          std::vector<double>& choice) const {
  scores.assign(static_cast<size_t>(E_), 0.0);
  if (family_ == "deepseek_v3") {
    // DeepseekV3TopkRouter: scores = sigmoid(logits); the correction bias
    // only steers the choice.
    for (int64_t e = 0; e < E_; ++e) scores[e] = Sigmoid(logits[e]);
    choice = scores;
    for (int64_t e = 0; e < E_; ++e) choice[e] += bias_[e];
    return;
  }
  // softmax(router_logits, dim=-1, dtype=float)
  const double mx = *std::max_element(logits, logits + E_);
  double sum = 0;
  for (int64_t e = 0; e < E_; ++e) sum += scores[e] = std::exp(logits[e] - mx);
  for (double& s : scores) s /= sum;
  choice = scores;
}

RefRouting MoEReference::Route(const std::vector<double>& logits, int64_t T) const {
  RefRouting r;
  r.T = T;
  r.k = k_;
  r.ids.resize(static_cast<size_t>(T * k_));
  r.weights.resize(static_cast<size_t>(T * k_));
  r.ambiguous.assign(static_cast<size_t>(T), false);
  std::vector<double> scores, choice;
  for (int64_t t = 0; t < T; ++t) {
    Scores(logits.data() + t * E_, scores, choice);
    if (topk_method_ == "group_limited_greedy" || topk_method_ == "noaux_tc") {
      // group_scores: max of the group (V2), sum of its top-2 (V3); keep the
      // topk_group best groups, masked_fill(~mask, 0.0) the rest.
      const int64_t per = E_ / n_group_;
      std::vector<double> group(static_cast<size_t>(n_group_));
      for (int64_t g = 0; g < n_group_; ++g) {
        std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(members.rbegin(), members.rend());
        group[g] = topk_method_ == "noaux_tc" ? members[0] + members[1] : members[0];
      }
      const std::vector<int> gorder = Order(group);
      if (topk_group_ < n_group_ &&
          group[gorder[topk_group_ - 1]] - group[gorder[topk_group_]] < kGap) {
        r.ambiguous[t] = true;
      }
      std::vector<bool> kept(static_cast<size_t>(n_group_), false);
      for (int64_t g = 0; g < topk_group_; ++g) kept[gorder[g]] = true;
      for (int64_t e = 0; e < E_; ++e) {
        if (!kept[e / per]) choice[e] = 0.0;
      }
    }
    const std::vector<int> order = Order(choice);
    if (k_ < E_ && choice[order[k_ - 1]] - choice[order[k_]] < kGap) r.ambiguous[t] = true;
    for (int j = 0; j < k_; ++j) r.ids[t * k_ + j] = order[j];
    const std::vector<double> w = WeightsFor(logits.data() + t * E_, r.ids.data() + t * k_);
    std::copy(w.begin(), w.end(), r.weights.begin() + t * k_);
  }
  return r;
}

std::vector<double> MoEReference::WeightsFor(const double* logits_row, const int32_t* ids) const {
  std::vector<double> scores, choice;
  Scores(logits_row, scores, choice);
  std::vector<double> w(static_cast<size_t>(k_));
  double sum = 0;
  for (int j = 0; j < k_; ++j) sum += w[j] = scores[ids[j]];  // uncorrected scores
  const bool deepseek = family_ == "deepseek_v2" || family_ == "deepseek_v3";
  if (norm_topk_prob_) {
    for (double& v : w) v /= deepseek ? sum + 1e-20 : sum;
  }
  if (deepseek) {
    for (double& v : w) v *= routed_scaling_factor_;
  }
  return w;
}

std::vector<double> MoEReference::MlpForward(const Mlp& m, const std::vector<double>& x) const {
  std::vector<double> a(static_cast<size_t>(m.I));
  for (int64_t i = 0; i < m.I; ++i) {
    double g = 0, u = 0;
    for (int64_t h = 0; h < H_; ++h) {
      g += m.gate[i * H_ + h] * x[h];
      u += m.up[i * H_ + h] * x[h];
    }
    a[i] = g * Sigmoid(g) * u;  // act_fn(gate_proj(x)) * up_proj(x), act_fn = SiLU
  }
  std::vector<double> o(static_cast<size_t>(H_), 0.0);
  for (int64_t h = 0; h < H_; ++h) {
    for (int64_t i = 0; i < m.I; ++i) o[h] += m.down[h * m.I + i] * a[i];
  }
  return o;
}

std::vector<double> MoEReference::Forward(const ConstTensorView& x, const std::vector<int32_t>& ids,
                                          const std::vector<double>& weights) const {
  const int64_t T = x.dim(0);
  std::vector<double> y(static_cast<size_t>(T * H_), 0.0);
  std::vector<double> row(static_cast<size_t>(H_));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H_; ++h) row[h] = LoadAsDouble(x.data, x.dtype, t * H_ + h);
    double* yt = y.data() + t * H_;
    for (int j = 0; j < k_; ++j) {
      const std::vector<double> o = MlpForward(experts_[ids[t * k_ + j]], row);
      for (int64_t h = 0; h < H_; ++h) yt[h] += weights[t * k_ + j] * o[h];
    }
    if (shared_I_ > 0) {
      double g = 1.0;
      if (!shared_gate_.empty()) {
        double dot = 0;
        for (int64_t h = 0; h < H_; ++h) dot += shared_gate_[h] * row[h];
        g = Sigmoid(dot);  // F.sigmoid(self.shared_expert_gate(x)) * shared_expert(x)
      }
      const std::vector<double> o = MlpForward(shared_, row);
      for (int64_t h = 0; h < H_; ++h) yt[h] += g * o[h];
    }
  }
  return y;
}

}  // namespace qlayer::testing
