#include "tests/common/random_activations.h"

namespace qlayer::test_common {

Tensor RandomActivations(int64_t rows, int64_t cols, DType dt, std::mt19937_64& rng) {
  Tensor x = Tensor::Zeros(dt, {rows, cols});
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  for (int64_t i = 0; i < rows * cols; ++i) StoreFromDouble(x.data(), dt, i, unit(rng));
  return x;
}

}  // namespace qlayer::test_common
