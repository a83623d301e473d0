#include "qlayer/kernels/crossover.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

struct Cache {
  absl::Mutex mu;
  std::map<std::string, Crossover> results ABSL_GUARDED_BY(mu);
};

Cache& GetCache() {
  static Cache* c = new Cache;
  return *c;
}

// `large` wins only when it is faster by more than this fraction.
constexpr double kMargin = 0.03;

}  // namespace

const std::vector<int64_t>& CrossoverCandidates() {
  static const std::vector<int64_t> c = {1, 4, 8, 16, 24, 32, 48, 64};
  return c;
}

std::string CrossoverKey(const LinearSpec& spec, const Device& device, absl::string_view small,
                         absl::string_view large) {
  return absl::StrCat(device.ToString(), " K=", spec.K, " N=", spec.N, " ",
                      WeightTypeName(spec.wtype), " g", spec.group_size, " z", spec.zero_points,
                      " gidx", spec.g_idx, " bias", spec.bias, " s", DTypeName(spec.scale_dtype),
                      " a", DTypeName(spec.act), " ", small, "|", large);
}

absl::StatusOr<Crossover> MeasureCrossover(const std::string& cache_key, const LinearKernel& small,
                                           const LinearKernel& large, DType act, int64_t min_m,
                                           int64_t max_m) {
  Cache& cache = GetCache();
  {
    absl::MutexLock lock(&cache.mu);
    auto it = cache.results.find(cache_key);
    if (it != cache.results.end()) {
      Crossover c = it->second;
      c.cached = true;
      return c;
    }
  }
  Crossover c;
  c.max_m = min_m;
  for (int64_t M : CrossoverCandidates()) {
    if (M < min_m) continue;
    if (M > max_m) break;
    QLAYER_ASSIGN_OR_RETURN(double ts, small.MeasureForwardUs(M, act));
    QLAYER_ASSIGN_OR_RETURN(double tl, large.MeasureForwardUs(M, act));
    absl::StrAppend(&c.detail, c.detail.empty() ? "" : ", ", "M=", M, " ",
                    absl::StrFormat("%.1f/%.1f", ts, tl), " us");
    if (tl * (1.0 + kMargin) < ts) break;
    c.max_m = M;
  }
  absl::MutexLock lock(&cache.mu);
  cache.results.emplace(cache_key, c);
  return c;
}

void ClearCrossoverCache() {
  Cache& cache = GetCache();
  absl::MutexLock lock(&cache.mu);
  cache.results.clear();
}

}  // namespace qlayer
