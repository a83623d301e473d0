// The canonical weight every format decoder produces and every kernel's
// Prepare() consumes (DESIGN.md "The canonical weight", FORMATS.md §1).
// It mirrors vLLM's GPTQ-like "standard" layout so that one repack per kernel
// serves all formats.
#ifndef QLAYER_KERNELS_QUANTIZED_LINEAR_H_
#define QLAYER_KERNELS_QUANTIZED_LINEAR_H_

#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

enum class WeightType : uint8_t {
  kUint4,      // 4-bit with per-group zero points
  kUint4b8,    // 4-bit symmetric, zero fixed at 8
  kUint8,      // 8-bit with per-group zero points
  kUint8b128,  // 8-bit symmetric, zero fixed at 128
  kDense,      // unquantized fp16/bf16/fp32 weight
};

absl::string_view WeightTypeName(WeightType t);  // "uint4", "uint4b8", ...
inline int WeightBits(WeightType t) {
  switch (t) {
    case WeightType::kUint4:
    case WeightType::kUint4b8:
      return 4;
    case WeightType::kUint8:
    case WeightType::kUint8b128:
      return 8;
    default:
      return 0;
  }
}
inline bool HasZeroPoints(WeightType t) {
  return t == WeightType::kUint4 || t == WeightType::kUint8;
}
// The fixed zero of a symmetric type (8 or 128); 0 for others.
inline int32_t SymmetricZero(WeightType t) {
  return t == WeightType::kUint4b8 ? 8 : (t == WeightType::kUint8b128 ? 128 : 0);
}
// Values per int32 word: 8 for 4-bit, 4 for 8-bit.
inline int PackFactor(WeightType t) { return WeightBits(t) ? 32 / WeightBits(t) : 1; }

// K = in_features, N = out_features.
//   qweight [K/pack, N] i32   packed along K, sequential: row k in word k/pack,
//                             bits bits*(k%pack) ...
//   scales  [K/G, N]          f16 | bf16 | f32 as stored
//   zeros   [K/G, N] i32      true zero points (after format offsets); only
//                             for kUint4 / kUint8
//   g_idx   [K] i32           optional act-order group of each input row
//   bias    [N]               optional, f16 | bf16 | f32
//   dense   [N, K]            only for kDense (PyTorch Linear.weight layout)
// w[k][n] = (q[k][n] - z[g(k)][n]) * s[g(k)][n], g(k) = g_idx ? g_idx[k] : k/G
struct QuantizedLinear {
  int64_t K = 0;
  int64_t N = 0;
  WeightType wtype = WeightType::kDense;
  int64_t group_size = 0;  // == K for channel-wise; unused for kDense
  Tensor qweight;
  Tensor scales;
  Tensor zeros;
  Tensor g_idx;
  Tensor bias;
  Tensor dense;

  int64_t num_groups() const { return group_size > 0 ? K / group_size : 0; }
  // Bytes of weight data a forward pass reads (qweight+scales+zeros or dense).
  int64_t weight_bytes() const;
  // Checks every tensor's presence, dtype and shape against K, N, wtype and
  // group size, and that g_idx values are < K/G. Decoders call it last.
  absl::Status Validate() const;
  // Quantized value q[k][n] (unsigned, 0..2^bits-1).
  int32_t q(int64_t k, int64_t n) const;
  // Group of input row k.
  int64_t group_of(int64_t k) const;
  // Zero point of (group g, column n), including a symmetric type's fixed zero.
  int32_t zero(int64_t g, int64_t n) const;
  // Dequantized w[k][n] in double (for kDense: dense[n][k]).
  double Dequant(int64_t k, int64_t n) const;
  QuantizedLinear Clone() const;
};

}  // namespace qlayer

#endif  // QLAYER_KERNELS_QUANTIZED_LINEAR_H_
