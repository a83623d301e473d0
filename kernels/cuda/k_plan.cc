#include "cuda/k_plan.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace qlayer::cuda {
namespace {
int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
}  // namespace

absl::StatusOr<PermutedKPlan> PlanPermutedK(const QuantizedLinear& w) {
  PermutedKPlan p;
  const int64_t K = w.K, G = w.group_size;
  p.ngroups = w.num_groups();
  if (!w.g_idx.empty()) {
    // Act-order: sort rows by group (stable, so a trivial g_idx is the
    // identity) and give every group the same padded span.
    const int32_t* gi = w.g_idx.as<int32_t>();
    std::vector<std::vector<int32_t>> rows(static_cast<size_t>(p.ngroups));
    for (int64_t k = 0; k < K; ++k)
      rows[static_cast<size_t>(gi[k])].push_back(static_cast<int32_t>(k));
    size_t most = 0;
    for (const auto& r : rows) most = std::max(most, r.size());
    const int64_t span = RoundUp(static_cast<int64_t>(most), 32);
    p.Kp = RoundUp(span * p.ngroups, 64);
    if (p.Kp > 2 * K + 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("act-order g_idx puts up to ", most, " of K=", K, " rows in one of ",
                       p.ngroups, " groups (group size ", G, "); padding every group to ", span,
                       " rows would read more than twice the weight"));
    }
    p.perm.assign(static_cast<size_t>(p.Kp), -1);
    for (int64_t g = 0; g < p.ngroups; ++g) {
      const auto& r = rows[static_cast<size_t>(g)];
      std::copy(r.begin(), r.end(), p.perm.begin() + g * span);
    }
    p.geff = p.ngroups == 1 ? 0 : span;
    return p;
  }
  if (G == K) {
    p.geff = 0;
  } else if (G % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("group size ", G, " is not a multiple of 32 (K=", K, ")"));
  } else {
    p.geff = G;
  }
  p.Kp = RoundUp(K, 64);
  if (p.Kp != K) {
    p.perm.assign(static_cast<size_t>(p.Kp), -1);
    for (int64_t k = 0; k < K; ++k) p.perm[static_cast<size_t>(k)] = static_cast<int32_t>(k);
  }
  return p;
}

}  // namespace qlayer::cuda
