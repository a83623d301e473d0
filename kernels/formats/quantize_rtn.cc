// Round-to-nearest min-max quantizer (GPTQ's Quantizer without the Hessian
// update): the source of every weight that qlayer-quantize and the tests
// write. Scales are rounded (up) to their storage dtype before q is
// computed, so the stored (q - z) * s is exactly what the quantizer meant.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "formats/format_common.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// Keeps a flat group's scale representable (and non-zero) in f16.
constexpr double kMinScale = 1e-6;

struct GroupParams {
  double scale = 0;  // already rounded to the scale dtype
  int32_t zero = 0;
};

// The smallest value of dtype (f16, bf16, f32) that is >= s > 0. Rounding
// the scale up keeps the group's range within 2^bits - 1 steps, so no value
// lands more than half a step from its dequantized value, even at the
// clamped ends.
double RoundUpTo(double s, DType dtype) {
  if (dtype == DType::kF32) {
    float f = static_cast<float>(s);
    if (f < s) f = std::nextafter(f, INFINITY);
    return f;
  }
  uint16_t bits = 0;
  StoreFromDouble(&bits, dtype, 0, s);
  if (LoadAsDouble(&bits, dtype, 0) < s) ++bits;  // positive: next pattern is next value
  return LoadAsDouble(&bits, dtype, 0);
}

// Scale and zero for values spanning [lo, hi], as GPTQ's Quantizer does:
// symmetric uses max |x| around the fixed zero 2^(bits-1); asymmetric widens
// the range to include 0 so that 0 is exactly representable.
absl::StatusOr<GroupParams> ParamsFor(double lo, double hi, WeightType wtype, DType scale_dtype) {
  const int32_t maxq = (1 << WeightBits(wtype)) - 1;
  double s;
  GroupParams p;
  if (!HasZeroPoints(wtype)) {
    double amax = std::max(std::fabs(lo), std::fabs(hi));
    if (amax == 0) amax = 1;
    s = 2 * amax / maxq;
    p.zero = SymmetricZero(wtype);
  } else {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    if (lo == hi) {
      lo = -1;
      hi = 1;
    }
    s = (hi - lo) / maxq;
  }
  s = std::max(s, kMinScale);
  p.scale = RoundUpTo(s, scale_dtype);
  if (!std::isfinite(p.scale) || p.scale <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale ", s, " is not representable in ", DTypeName(scale_dtype)));
  }
  if (HasZeroPoints(wtype)) {
    const double z = std::nearbyint(-lo / p.scale);
    p.zero = static_cast<int32_t>(std::clamp(z, 0.0, static_cast<double>(maxq)));
  }
  return p;
}

// Group of each input row: k / G, or with act-order the GPTQ desc_act map
// g_idx[perm[i]] = i / G for a random permutation standing in for the
// Hessian-diagonal order. Fisher-Yates with raw mt19937_64 draws so the
// result does not depend on the standard library's distributions.
std::vector<int32_t> GroupOfRows(int64_t K, int64_t G, bool act_order, uint64_t seed) {
  std::vector<int32_t> g(static_cast<size_t>(K));
  if (!act_order) {
    for (int64_t k = 0; k < K; ++k) g[k] = static_cast<int32_t>(k / G);
    return g;
  }
  std::vector<int64_t> perm(static_cast<size_t>(K));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  for (int64_t i = K - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  for (int64_t i = 0; i < K; ++i) g[perm[i]] = static_cast<int32_t>(i / G);
  return g;
}

}  // namespace

absl::StatusOr<QuantizedLinear> QuantizeRtn(const float* w_nk, int64_t N, int64_t K,
                                            const QuantizeOptions& options) {
  const WeightType wtype = options.wtype;
  const int bits = WeightBits(wtype);
  if (bits == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizeRtn needs a quantized weight type, got ", WeightTypeName(wtype)));
  }
  if (w_nk == nullptr || N <= 0 || K <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("QuantizeRtn: bad weight [", N, ", ", K, "]"));
  }
  const int pack = PackFactor(wtype);
  if (K % pack != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizeRtn: K=", K, " is not a multiple of the pack factor ", pack));
  }
  if (!IsFloatActivation(options.scale_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "QuantizeRtn: scale dtype ", DTypeName(options.scale_dtype), " is not f16, bf16 or f32"));
  }
  const bool whole_tensor = options.group_size == 0;
  const int64_t G = options.group_size > 0 ? options.group_size : K;
  if (options.group_size < -1 || K % G != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("QuantizeRtn: K=", K, " is not divisible by group size ", options.group_size));
  }
  for (int64_t i = 0; i < N * K; ++i) {
    if (!std::isfinite(w_nk[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("QuantizeRtn: weight [", i / K, ", ", i % K, "] is not finite"));
    }
  }
  const int64_t groups = K / G;
  const std::vector<int32_t> g_of = GroupOfRows(K, G, options.act_order, options.seed);

  // Per-(group, column) value range.
  std::vector<double> lo(static_cast<size_t>(groups * N), INFINITY);
  std::vector<double> hi(static_cast<size_t>(groups * N), -INFINITY);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t k = 0; k < K; ++k) {
      const size_t i = static_cast<size_t>(g_of[k] * N + n);
      lo[i] = std::min(lo[i], static_cast<double>(w_nk[n * K + k]));
      hi[i] = std::max(hi[i], static_cast<double>(w_nk[n * K + k]));
    }
  }
  if (whole_tensor) {  // one range for everything (groups == 1 here)
    const double all_lo = *std::min_element(lo.begin(), lo.end());
    const double all_hi = *std::max_element(hi.begin(), hi.end());
    std::fill(lo.begin(), lo.end(), all_lo);
    std::fill(hi.begin(), hi.end(), all_hi);
  }

  QuantizedLinear w;
  w.K = K;
  w.N = N;
  w.wtype = wtype;
  w.group_size = G;
  w.scales = Tensor::Zeros(options.scale_dtype, {groups, N});
  if (HasZeroPoints(wtype)) w.zeros = Tensor::Zeros(DType::kI32, {groups, N});
  std::vector<GroupParams> params(static_cast<size_t>(groups * N));
  for (int64_t i = 0; i < groups * N; ++i) {
    QLAYER_ASSIGN_OR_RETURN(params[i], ParamsFor(lo[i], hi[i], wtype, options.scale_dtype));
    StoreFromDouble(w.scales.data(), options.scale_dtype, i, params[i].scale);
    if (HasZeroPoints(wtype)) w.zeros.as<int32_t>()[i] = params[i].zero;
  }
  const double maxq = (1 << bits) - 1;
  w.qweight = formats_internal::PackAlongK(K, N, bits, [&](int64_t k, int64_t n) {
    const GroupParams& p = params[static_cast<size_t>(g_of[k] * N + n)];
    const double q = std::nearbyint(static_cast<double>(w_nk[n * K + k]) / p.scale) + p.zero;
    return static_cast<int32_t>(std::clamp(q, 0.0, maxq));
  });
  if (options.act_order && !formats_internal::IsTrivialGIdx(g_of.data(), K, G)) {
    w.g_idx = Tensor::Zeros(DType::kI32, {K});
    std::copy(g_of.begin(), g_of.end(), w.g_idx.as<int32_t>());
  }
  QLAYER_RETURN_IF_ERROR(w.Validate());
  return w;
}

}  // namespace qlayer
