// Seeded normal draws for qlayer-quantize's random weights, from raw
// mt19937_64 output (Box-Muller), so a seed gives the same weights whatever
// the standard library's distributions do; and SplitMix64 to derive
// decorrelated per-layer seeds from --seed.
#ifndef QLAYER_SERVER_TOOLS_NORMAL_RNG_H_
#define QLAYER_SERVER_TOOLS_NORMAL_RNG_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

namespace qlayer {

inline uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : gen_(seed) {}
  double Uniform() { return static_cast<double>(gen_() >> 11) * 0x1.0p-53; }
  double Normal() {
    const double u1 = std::max(Uniform(), 1e-300);
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::mt19937_64 gen_;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_TOOLS_NORMAL_RNG_H_
