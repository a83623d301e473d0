#include "client/cli/random_input.h"

#include <chrono>
#include <random>

namespace qlayer {

uint64_t ClockSeed() {
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) %
         1000000007ull;
}

Tensor RandomActivations(DType dtype, int64_t rows, int64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  Tensor x = Tensor::Zeros(dtype, {rows, k});
  for (int64_t i = 0; i < rows * k; ++i) StoreFromDouble(x.data(), dtype, i, dist(rng));
  return x;
}

}  // namespace qlayer
