// Random activations for the kernel and MoE tests, shared by their helpers.
#ifndef QLAYER_TESTS_COMMON_RANDOM_ACTIVATIONS_H_
#define QLAYER_TESTS_COMMON_RANDOM_ACTIVATIONS_H_

#include <cstdint>
#include <random>

#include "qlayer/kernels/tensor.h"

namespace qlayer::test_common {

// [rows, cols] values ~ U[-1, 1), rounded to dtype `dt`.
Tensor RandomActivations(int64_t rows, int64_t cols, DType dt, std::mt19937_64& rng);

}  // namespace qlayer::test_common

#endif  // QLAYER_TESTS_COMMON_RANDOM_ACTIVATIONS_H_
