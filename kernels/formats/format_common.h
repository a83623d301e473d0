// Shared pieces of the checkpoint format codecs (FORMATS.md): error messages
// that name the layer, tensor lookup with dtype/shape checks, scheme
// resolution, bit packing and g_idx handling. Internal to kernels/formats.
#ifndef QLAYER_KERNELS_FORMATS_FORMAT_COMMON_H_
#define QLAYER_KERNELS_FORMATS_FORMAT_COMMON_H_

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer::formats_internal {

// One module being decoded or encoded: builds tensor names and messages of
// the form "layer P (gptq, from auto-round:auto_gptq): <what>".
class LayerContext {
 public:
  LayerContext(absl::string_view prefix, const LayerScheme& scheme)
      : prefix_(prefix), scheme_(scheme) {}

  const LayerScheme& scheme() const { return scheme_; }
  absl::string_view prefix() const { return prefix_; }
  // "P.suffix"
  std::string Name(absl::string_view suffix) const { return absl::StrCat(prefix_, ".", suffix); }
  std::string Head() const;

  template <typename... Args>
  absl::Status Invalid(const Args&... args) const {
    return absl::InvalidArgumentError(absl::StrCat(Head(), args...));
  }
  template <typename... Args>
  absl::Status Unimplemented(const Args&... args) const {
    return absl::UnimplementedError(absl::StrCat(Head(), args...));
  }
  // Prefixes a status from elsewhere (e.g. QuantizedLinear::Validate) with
  // the layer, keeping its code.
  absl::Status Wrap(const absl::Status& s) const;

 private:
  absl::string_view prefix_;
  const LayerScheme& scheme_;
};

using DTypes = std::initializer_list<DType>;
inline constexpr DTypes kFloatDTypes = {DType::kF16, DType::kBF16, DType::kF32};

// "f16|bf16|f32"
std::string DTypeList(DTypes dtypes);

// Looks up P.suffix; nullptr when absent. When present, checks its dtype is
// one of `dtypes` and its rank is `rank` (shapes are checked by the caller
// once the dims it derives from are known).
absl::StatusOr<const ConstTensorView*> FindTensor(const TensorSource& source,
                                                  const LayerContext& ctx, absl::string_view suffix,
                                                  DTypes dtypes, int rank);
// As FindTensor, but absence is an error.
absl::StatusOr<const ConstTensorView*> RequireTensor(const TensorSource& source,
                                                     const LayerContext& ctx,
                                                     absl::string_view suffix, DTypes dtypes,
                                                     int rank);
// Checks every dim is positive (rank already checked).
absl::Status CheckPositiveDims(const LayerContext& ctx, absl::string_view suffix,
                               const ConstTensorView& t);
absl::Status CheckShape(const LayerContext& ctx, absl::string_view suffix, const ConstTensorView& t,
                        const Shape& expected);

// Bits of a quantized scheme: 4 or 8; 2/3-bit (and other widths) are
// UNIMPLEMENTED, non-positive bits INVALID_ARGUMENT.
absl::Status CheckBits(const LayerContext& ctx);
// Canonical weight type for (bits, sym).
WeightType QuantizedType(int bits, bool sym);

// Group size from the scheme for a module with K input rows: -1 -> K;
// 0 (compressed-tensors "tensor" strategy) -> K when allow_tensor; errors
// when K % G != 0.
absl::StatusOr<int64_t> ResolveGroupSize(const LayerContext& ctx, int64_t K, bool allow_tensor);

// Element i of a view read through memcpy: checkpoint views point into an
// mmap whose offsets safetensors does not promise to align.
inline uint32_t LoadU32(const ConstTensorView& t, int64_t i) {
  uint32_t v;
  std::memcpy(&v, static_cast<const char*>(t.data) + i * 4, 4);
  return v;
}
inline int64_t LoadI64(const ConstTensorView& t, int64_t i) {
  int64_t v;
  std::memcpy(&v, static_cast<const char*>(t.data) + i * 8, 8);
  return v;
}

// Slot `i` (bits wide) of a packed word, sequential from the least
// significant bits.
inline uint32_t Slot(uint32_t word, int bits, int64_t i) {
  return (word >> (bits * i)) & ((1u << bits) - 1u);
}

// Canonical qweight [K/pack, N] from a q(k, n) callable (values < 2^bits).
template <typename QOf>
Tensor PackAlongK(int64_t K, int64_t N, int bits, QOf q_of) {
  const int pack = 32 / bits;
  Tensor t = Tensor::Zeros(DType::kI32, {K / pack, N});
  uint32_t* out = t.as<uint32_t>();
  for (int64_t k = 0; k < K; ++k) {
    const int shift = bits * static_cast<int>(k % pack);
    uint32_t* row = out + (k / pack) * N;
    for (int64_t n = 0; n < N; ++n) row[n] |= static_cast<uint32_t>(q_of(k, n)) << shift;
  }
  return t;
}

// Reads a g_idx [K] i32 tensor (already shape-checked): every value must be
// in [0, K/G). Returns an empty Tensor when it is the trivial k / G (the
// canonical weight then carries none), else an owning copy.
absl::StatusOr<Tensor> TakeGIdx(const LayerContext& ctx, absl::string_view suffix,
                                const ConstTensorView& g_idx, int64_t K, int64_t G);
// True when g(k) == k / G for every k.
bool IsTrivialGIdx(const int32_t* g, int64_t K, int64_t G);
// The trivial g_idx [K] i32 (k / G), as AutoGPTQ writes without act-order.
Tensor TrivialGIdx(int64_t K, int64_t G);
// The g_idx an encoder writes: the canonical one, or the trivial one.
Tensor GIdxToWrite(const QuantizedLinear& w);

// Optional P.bias [N] f16/bf16/f32, copied into w.bias.
absl::Status DecodeBias(const TensorSource& source, const LayerContext& ctx, int64_t N,
                        QuantizedLinear& w);
void EncodeBias(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out);

// Runs w.Validate() and names the layer in its error.
absl::Status ValidateDecoded(const LayerContext& ctx, const QuantizedLinear& w);

// Encoder preamble shared by the quantized formats: w is valid, quantized,
// and agrees with the scheme's bits, symmetry, group size (-1 = K; 0 only
// when allow_tensor) and act-order (a non-trivial g_idx needs act_order).
absl::Status CheckEncodable(const LayerContext& ctx, const QuantizedLinear& w, bool allow_tensor);

// Per-format codecs (one file each).
absl::StatusOr<QuantizedLinear> DecodeDense(const TensorSource& source, const LayerContext& ctx);
absl::Status EncodeDense(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out);
absl::StatusOr<QuantizedLinear> DecodeGptq(const TensorSource& source, const LayerContext& ctx);
absl::Status EncodeGptq(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out);
absl::StatusOr<QuantizedLinear> DecodeAwq(const TensorSource& source, const LayerContext& ctx);
absl::Status EncodeAwq(const QuantizedLinear& w, const LayerContext& ctx, NamedTensors& out);
absl::StatusOr<QuantizedLinear> DecodeCompressedTensors(const TensorSource& source,
                                                        const LayerContext& ctx);
absl::Status EncodeCompressedTensors(const QuantizedLinear& w, const LayerContext& ctx,
                                     NamedTensors& out);

}  // namespace qlayer::formats_internal

#endif  // QLAYER_KERNELS_FORMATS_FORMAT_COMMON_H_
