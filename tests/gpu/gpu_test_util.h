// Shared by the GPU tests and the GPU benchmark: random canonical weights
// drawn directly (every q, zero and scale value reachable, independent of the
// format codecs), random activations, and the float64 CPU reference.
#ifndef QLAYER_TESTS_GPU_GPU_TEST_UTIL_H_
#define QLAYER_TESTS_GPU_GPU_TEST_UTIL_H_

#include <cstdint>
#include <vector>

#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer::gputest {

struct RandomWeightOptions {
  int64_t K = 0, N = 0;
  WeightType wtype = WeightType::kUint4b8;
  int64_t group_size = 128;  // K for channel-wise
  DType scale_dtype = DType::kF16;
  // Act-order g_idx: a random permutation of rows into groups of exactly
  // group_size rows (as GPTQ writes), or with `irregular_groups` a random
  // group per row (uneven group sizes).
  bool act_order = false;
  bool irregular_groups = false;
  bool bias = false;
  uint64_t seed = 1;
};

QuantizedLinear MakeRandomWeight(const RandomWeightOptions& o);

// Uniform in [-1, 1), as f16 or bf16.
Tensor RandomActivations(int64_t M, int64_t K, DType dtype, uint64_t seed);

// w.Dequant as a dense [K, N] float64 matrix.
std::vector<double> DequantizeToDouble(const QuantizedLinear& w);

// y[M, N] = x W (+ bias) in float64, x read from its 16-bit dtype; threads
// over rows.
std::vector<double> ReferenceForward(const Tensor& x, const std::vector<double>& w_kn,
                                     const QuantizedLinear& w);

// ||y - ref|| / ||ref||; +inf when y holds a NaN or Inf (an unwritten,
// poisoned element).
double RelativeError(const Tensor& y, const std::vector<double>& ref);

// The seed for this run: QLAYER_TEST_SEED if set, else from the clock.
uint64_t TestSeed();

}  // namespace qlayer::gputest

#endif  // QLAYER_TESTS_GPU_GPU_TEST_UTIL_H_
