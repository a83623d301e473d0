// Random canonical weights and activations for kernel tests, built directly
// (no format decoder involved), with their float64 dequantized values kept on
// the side so the reference never goes through the code under test.
#ifndef QLAYER_TESTS_KERNELS_RANDOM_LINEAR_UTIL_H_
#define QLAYER_TESTS_KERNELS_RANDOM_LINEAR_UTIL_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qlayer/kernels/linear_kernel.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"
#include "tests/common/random_activations.h"
#include "tests/common/test_seed.h"

namespace qlayer::testing {

// Seed for this test run (tests/common/test_seed.h).
using test_common::TestSeed;

struct RandomLinearSpec {
  int64_t K = 0, N = 0;
  WeightType wtype = WeightType::kUint4;
  int64_t group_size = 0;           // 0 = channel-wise (K); ignored for kDense
  DType scale_dtype = DType::kF16;  // dense weight dtype for kDense
  bool g_idx = false;               // act-order: groups scattered over K
  bool bias = false;                // bias in scale_dtype
};

struct RandomLinear {
  QuantizedLinear w;
  // Dequantized weight, [K, N] row-major, computed here from the random
  // q / z / s before packing.
  std::vector<double> w_ref;
  std::vector<double> bias_ref;  // [N], zeros without bias
};

RandomLinear MakeRandomLinear(const RandomLinearSpec& spec, std::mt19937_64& rng);

// Random activations in [-1, 1), stored in dtype `dt`: RandomActivations(M,
// K, dt, rng) (tests/common/random_activations.h).
using test_common::RandomActivations;

// y_ref[m][n] = sum_k x[m][k] * w_ref[k][n] + bias[n] in float64, where x is
// read back from its stored dtype (so the rounding of x is not an error).
std::vector<double> ReferenceForward(const RandomLinear& rl, const ConstTensorView& x);

// sum_k |x[m][k]| * |w_ref[k][n]| + |bias[n]|: the scale of any error made
// per weight or per product.
std::vector<double> AbsReference(const RandomLinear& rl, const ConstTensorView& x);

// ||got - want|| with got read from its dtype; NaN/inf in `got` gives +inf.
double ErrorNorm(const ConstTensorView& got, const std::vector<double>& want);
double Norm(const std::vector<double>& v);

// want rounded to dtype dt, element by element (what an exact kernel writes).
std::vector<double> RoundTo(const std::vector<double>& want, DType dt);

}  // namespace qlayer::testing

#endif  // QLAYER_TESTS_KERNELS_RANDOM_LINEAR_UTIL_H_
