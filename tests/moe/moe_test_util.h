// Test helpers for MoE blocks: seeded random blocks (quantized with
// QuantizeRtn) whose float64 dequantized weights are kept on the side, and a
// float64 forward of the expert MLPs written from transformers' code
// (down(silu(gate(x)) * up(x)), weighted sum, shared expert with its sigmoid
// gate). None of it goes through the MoE code under test.
#ifndef QLAYER_TESTS_MOE_MOE_TEST_UTIL_H_
#define QLAYER_TESTS_MOE_MOE_TEST_UTIL_H_

#include <cstdint>
#include <random>
#include <vector>

#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/tensor.h"
#include "tests/common/random_activations.h"
#include "tests/common/test_seed.h"

namespace qlayer::moetest {

// $QLAYER_TEST_SEED if set, else from the clock; printed once.
inline uint64_t Seed() { return test_common::TestSeed(); }

// Dense float64 weights of one expert MLP, PyTorch layout [N, K].
struct RefMlp {
  int64_t H = 0, I = 0;
  std::vector<double> gate;  // [I, H]
  std::vector<double> up;    // [I, H]
  std::vector<double> down;  // [H, I]
};

struct RandomBlockSpec {
  int64_t E = 8, H = 64, I = 96;
  int top_k = 2;
  WeightType wtype = WeightType::kUint4;
  int64_t group_size = 32;
  DType scale_dtype = DType::kF16;
  bool act_order = false;
  int64_t shared_I = 0;  // 0 = no shared expert
  bool shared_gate = false;
  DType gate_dtype = DType::kBF16;  // router gate dtype
};

struct RandomBlock {
  MoEBlock block;
  std::vector<RefMlp> experts;      // dequantized, float64
  RefMlp shared;                    // when spec.shared_I > 0
  std::vector<double> shared_gate;  // [H] when spec.shared_gate
  // The per-projection canonical weights before stacking (what a checkpoint
  // stores): gate, up, down of each expert, then of the shared expert.
  std::vector<QuantizedLinear> gate_w, up_w, down_w;
  std::vector<QuantizedLinear> shared_w;  // gate, up, down
};

// Random expert weights ~ N(0, 1/sqrt(fan_in)), quantized with QuantizeRtn,
// w13 stacked with StackGateUp; a random router gate; the router config is a
// Mixtral-style softmax top-k (tests overwrite it).
RandomBlock MakeRandomBlock(const RandomBlockSpec& spec, std::mt19937_64& rng);

// Dequantized [N, K] float64 of a canonical weight, from q, z, s directly.
std::vector<double> DequantNK(const QuantizedLinear& w);

// Random activations ~ U[-1, 1) rounded to dtype dt, [T, H]:
// RandomActivations(T, H, dt, rng) (tests/common/random_activations.h).
using test_common::RandomActivations;

// float64 MoE forward: y[t] = sum_j w[t][j] * mlp_{ids[t][j]}(x[t])
// + (sigmoid(shared_gate . x[t]) *) shared(x[t]); x read from its dtype.
std::vector<double> ReferenceMoE(const RandomBlock& rb, const ConstTensorView& x,
                                 const std::vector<int32_t>& ids, const std::vector<float>& w,
                                 int top_k);

// ||got - want|| / ||want||, got read from its dtype; NaN/inf gives +inf.
double RelativeError(const ConstTensorView& got, const std::vector<double>& want);

}  // namespace qlayer::moetest

#endif  // QLAYER_TESTS_MOE_MOE_TEST_UTIL_H_
