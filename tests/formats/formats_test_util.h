// Helpers for the format codec tests: the run's seed, random dense weights,
// hand-built tensors, an fp16/bf16 decoder written from the IEEE definition
// (so references never go through the library's conversions), and a
// field-by-field comparison of canonical weights.
#ifndef QLAYER_TESTS_FORMATS_FORMATS_TEST_UTIL_H_
#define QLAYER_TESTS_FORMATS_FORMATS_TEST_UTIL_H_

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"
#include "tests/common/test_seed.h"

namespace qlayer::formats_test {

// $QLAYER_TEST_SEED if set, else from the clock; printed once per process.
using test_common::TestSeed;
// "seed=<TestSeed()> salt=<salt>", for SCOPED_TRACE.
std::string SeedTrace(uint64_t salt);

// Dense [N, K] weights: normal values with a per-row spread, a few outliers,
// never all zero.
std::vector<float> RandomWeights(int64_t N, int64_t K, std::mt19937_64& rng);
// Random [N] bias stored in dtype (f16/bf16/f32).
Tensor RandomBias(int64_t N, DType dtype, std::mt19937_64& rng);

// Tensors built from literal values.
Tensor I32Tensor(const Shape& shape, const std::vector<uint32_t>& words);
Tensor I64Tensor(const Shape& shape, const std::vector<int64_t>& values);
Tensor I8Tensor(const Shape& shape, const std::vector<int8_t>& values);
// Values rounded to dtype (f16/bf16/f32) by the library's conversion.
Tensor FloatTensor(DType dtype, const Shape& shape, const std::vector<double>& values);
// Raw fp16 / bf16 bit patterns.
Tensor HalfBitsTensor(DType dtype, const Shape& shape, const std::vector<uint16_t>& bits);

// IEEE binary16 / bfloat16 bits -> double, from the definition.
double HalfBitsToDouble(uint16_t h);
double Bf16BitsToDouble(uint16_t b);
// Element i of an f16/bf16/f32 view as double, through the two functions
// above (f32 directly).
double RefLoad(const ConstTensorView& t, int64_t i);

// Expects every field and tensor of `got` to equal `want` exactly.
void ExpectSameCanonical(const QuantizedLinear& want, const QuantizedLinear& got);

LayerScheme Scheme(CheckpointFormat format, int bits, int64_t group_size, bool sym, bool act_order);

}  // namespace qlayer::formats_test

#endif  // QLAYER_TESTS_FORMATS_FORMATS_TEST_UTIL_H_
