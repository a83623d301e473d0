#include "tests/service/moe_request_util.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/algorithm/container.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "tests/service/service_test_util.h"

namespace qlayer::testing {

const char* MoEModeName(MoEMode m) {
  switch (m) {
    case MoEMode::kGate:
      return "server router";
    case MoEMode::kLogits:
      return "caller logits";
    case MoEMode::kSkewedLogits:
      return "caller logits favouring experts 0..k-1";
    case MoEMode::kTopk:
      return "caller top-k";
    case MoEMode::kSkewedTopk:
      return "caller top-k, every token on experts 0..k-1";
  }
  return "?";
}

bool RoutedByLogits(MoEMode m) {
  return m == MoEMode::kGate || m == MoEMode::kLogits || m == MoEMode::kSkewedLogits;
}

namespace {
bool Skewed(MoEMode m) { return m == MoEMode::kSkewedTopk || m == MoEMode::kSkewedLogits; }
}  // namespace

v1::MoEForwardRequest MakeMoERequest(const MoEReference& ref, const std::string& block, uint64_t id,
                                     MoEMode mode, DType dt, int64_t T, std::mt19937_64& rng,
                                     MoESent& s, const MoERequestOptions& options) {
  const int64_t E = ref.E();
  const int k = ref.k();
  s = MoESent();
  s.mode = mode;
  s.x = RandomInput(dt, T, ref.H(), rng);
  v1::MoEForwardRequest r;
  r.set_request_id(id);
  r.set_layer(block);
  *r.mutable_hidden_states() = ToWire(s.x.view());
  r.set_return_routing(true);
  if (mode == MoEMode::kGate) {
    s.logits = ref.Logits(s.x.view());
  } else if (mode == MoEMode::kLogits || mode == MoEMode::kSkewedLogits) {
    std::normal_distribution<double> normal(0.0, 2.0);
    std::vector<float> l(static_cast<size_t>(T * E));
    for (int64_t i = 0; i < T * E; ++i) {
      // Skewed: experts 0..k-1 far ahead (for the grouped routers they form
      // group 0, which then wins its group vote too).
      const double offset = mode == MoEMode::kLogits ? 0.0 : (i % E < k ? 10.0 : -10.0);
      l[i] = static_cast<float>(offset + normal(rng));
    }
    s.logits.assign(l.begin(), l.end());
    *r.mutable_router_logits() = ToWire(DType::kF32, {T, E}, l.data());
  } else {
    std::vector<int32_t> perm(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      std::iota(perm.begin(), perm.end(), 0);
      if (mode == MoEMode::kTopk) std::shuffle(perm.begin(), perm.end(), rng);
      s.ids.insert(s.ids.end(), perm.begin(), perm.begin() + k);
    }
    std::uniform_real_distribution<double> uw(0.1, 1.0);
    Tensor w = Tensor::Zeros(options.weights_dtype, {T, k});
    for (int64_t i = 0; i < T * k; ++i) {
      StoreFromDouble(w.data(), w.dtype(), i, uw(rng));
      s.weights.push_back(LoadAsDouble(w.data(), w.dtype(), i));  // as the server reads it
    }
    if (options.i64_ids) {
      const std::vector<int64_t> ids64(s.ids.begin(), s.ids.end());
      *r.mutable_topk_ids() = ToWire(DType::kI64, {T, k}, ids64.data());
    } else {
      *r.mutable_topk_ids() = ToWire(DType::kI32, {T, k}, s.ids.data());
    }
    *r.mutable_topk_weights() = ToWire(w.view());
  }
  return r;
}

void CheckMoEAnswer(const MoEReference& ref, const MoESent& s, const v1::MoEForwardResponse& r,
                    double tol, std::vector<double>* tokens) {
  const int64_t T = s.x.dim(0);
  const int64_t E = ref.E();
  const int k = ref.k();
  SCOPED_TRACE(absl::StrCat(MoEModeName(s.mode), ", ", DTypeName(s.x.dtype()), ", T=", T));
  ASSERT_EQ(r.error().code(), 0) << r.error().message();

  // The routing the server used.
  const ConstTensorView got_ids = WireView(r.topk_ids());
  const ConstTensorView got_w = WireView(r.topk_weights());
  ASSERT_EQ(got_ids.dtype, DType::kI32);
  ASSERT_EQ(got_ids.shape, (Shape{T, k}));
  ASSERT_EQ(got_w.dtype, DType::kF32);
  ASSERT_EQ(got_w.shape, (Shape{T, k}));
  const int32_t* sid = got_ids.as<int32_t>();
  std::vector<int32_t> ids = s.ids;
  std::vector<double> weights = s.weights;
  if (RoutedByLogits(s.mode)) {
    const RefRouting want = ref.Route(s.logits, T);
    ids = want.ids;
    weights = want.weights;
    int ambiguous = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (want.ambiguous[t]) {
        // A near tie: f32 may choose otherwise; weigh the server's choice
        // the family's way.
        ++ambiguous;
        std::copy(sid + t * k, sid + (t + 1) * k, ids.begin() + t * k);
        const std::vector<double> w = ref.WeightsFor(s.logits.data() + t * E, sid + t * k);
        std::copy(w.begin(), w.end(), weights.begin() + t * k);
        continue;
      }
      for (int j = 0; j < k; ++j) {
        ASSERT_EQ(sid[t * k + j], want.ids[t * k + j]) << "token " << t << " slot " << j;
      }
    }
    // Skewed logits leave the runner-up groups of the grouped routers tied
    // near 0 (flagged, harmlessly: experts 0..k-1 are all in group 0); the
    // per-expert counts below check that choice exactly.
    // Near ties are rare but not negligible (router logits of a small
    // random block are close together): 2 of 7 tokens were seen once
    // (DeepSeek-V2 group-limited, seed 1796314527411859494). The bound keeps
    // most tokens' routing checked strictly without failing on that.
    if (!Skewed(s.mode)) EXPECT_LE(ambiguous, std::max<int64_t>(2, T / 8));
  } else {
    for (int64_t i = 0; i < T * k; ++i) ASSERT_EQ(sid[i], s.ids[i]) << "slot " << i;
  }
  std::vector<int64_t> per_expert(static_cast<size_t>(E), 0);
  for (int64_t i = 0; i < T * k; ++i) {
    EXPECT_NEAR(got_w.as<float>()[i], weights[i], 1e-4 * std::max(1.0, std::fabs(weights[i])))
        << "weight " << i;
    ASSERT_GE(sid[i], 0);
    ASSERT_LT(sid[i], E);
    ++per_expert[sid[i]];
  }
  if (Skewed(s.mode)) {
    // The imbalance really happened: each of experts 0..k-1 got all T
    // tokens, the other E - k none.
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(per_expert[e], e < k ? T : 0) << "expert " << e;
  }
  if (tokens != nullptr) {
    for (int64_t e = 0; e < E; ++e) (*tokens)[e] += static_cast<double>(per_expert[e]);
  }

  const ConstTensorView y = WireView(r.output());
  ASSERT_FALSE(y.empty());
  EXPECT_EQ(y.dtype, s.x.dtype());
  ASSERT_EQ(y.shape, (Shape{T, ref.H()}));
  // onednn_dense (batches past the GEMV kernels' max_m) computes with weights
  // rounded to bf16 whatever the activation dtype: one f16 token of a small
  // test layer reached 1.05e-2 there (qwen3_moe awq int4 asym, seed
  // 1796415046797852696). A wrong expert, weight or scale is off by O(1).
  const bool bf16_weights = absl::c_linear_search(r.kernels(), "onednn_dense");
  EXPECT_LT(RelativeError(y, ref.Forward(s.x.view(), ids, weights)),
            bf16_weights ? std::max(tol, 2e-2) : tol)
      << absl::StrJoin(r.kernels(), ", ");
}

}  // namespace qlayer::testing
