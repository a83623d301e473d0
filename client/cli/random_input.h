// Seeded random activations for verify and bench.
#ifndef QLAYER_CLIENT_CLI_RANDOM_INPUT_H_
#define QLAYER_CLIENT_CLI_RANDOM_INPUT_H_

#include <cstdint>

#include "qlayer/kernels/tensor.h"

namespace qlayer {

// A seed from the clock, for runs that do not name one (they print it).
uint64_t ClockSeed();
// [rows, k] of `dtype`, uniform in [-1, 1) rounded to the dtype.
Tensor RandomActivations(DType dtype, int64_t rows, int64_t k, uint64_t seed);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_RANDOM_INPUT_H_
