// The input layout of the formats fuzz target, shared with the seed tool that
// converts qlayer-quantize checkpoints into it. A record is a parsed header
// (the scheme and each tensor's suffix, dtype and shape) followed by the
// tensors' bytes, so the fuzzer mutates shapes and bytes directly instead of
// first having to keep a safetensors header valid:
//   u8 format (CheckpointFormat, mod 6)   u8 bits   i16 group_size
//   u8 flags (1 = sym, 2 = act_order)     u8 tensor count (mod 9)
//   per tensor: u8 suffix index (kSuffixes), u8 dtype (DType), u8 rank (mod 4),
//               rank x u16 dims
//   then the bytes of every tensor in order; when the input runs out the
//   remaining bytes repeat what is there (or are zero), so a short input still
//   gives every tensor its full size.
#ifndef QLAYER_FUZZ_LINEAR_RECORD_H_
#define QLAYER_FUZZ_LINEAR_RECORD_H_

#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer::fuzz {

inline constexpr const char* kSuffixes[] = {"qweight",       "qzeros",       "scales",
                                            "g_idx",         "bias",         "weight",
                                            "weight_packed", "weight_scale", "weight_zero_point",
                                            "weight_g_idx",  "weight_shape"};
inline constexpr int kNumSuffixes = static_cast<int>(std::size(kSuffixes));
inline constexpr char kRecordPrefix[] = "model.layers.0.mlp.down_proj";
// A tensor larger than this is dropped: the decoders' cost is linear in the
// bytes, and shapes are what the fuzzer should explore.
inline constexpr int64_t kMaxTensorBytes = 1 << 20;

struct LinearRecord {
  LayerScheme scheme;
  NamedTensors tensors;  // full names: kRecordPrefix + "." + suffix
};

inline LinearRecord ParseLinearRecord(const uint8_t* data, size_t size) {
  ByteReader r(data, size);
  LinearRecord rec;
  rec.scheme.format = static_cast<CheckpointFormat>(r.U8() % 6);
  rec.scheme.bits = static_cast<int8_t>(r.U8());
  rec.scheme.group_size = static_cast<int16_t>(r.U16());
  const uint8_t flags = r.U8();
  rec.scheme.sym = flags & 1;
  rec.scheme.act_order = flags & 2;
  rec.scheme.origin = "fuzz";
  struct Pending {
    std::string name;
    DType dtype;
    Shape shape;
  };
  std::vector<Pending> pending;
  const int count = r.U8() % 9;
  for (int i = 0; i < count; ++i) {
    Pending p;
    p.name = std::string(kRecordPrefix) + "." + kSuffixes[r.U8() % kNumSuffixes];
    p.dtype = static_cast<DType>(r.U8() % 16);
    const int rank = r.U8() % 4;
    for (int d = 0; d < rank; ++d) p.shape.push_back(r.U16());
    pending.push_back(std::move(p));
  }
  // The bytes: what is left of the input, consumed in order, then cycled.
  const uint8_t* pool = r.rest();
  const size_t pool_size = r.remaining();
  size_t cursor = 0;
  for (Pending& p : pending) {
    const int64_t nbytes = CheckedNumBytes(p.shape, DTypeSize(p.dtype));
    if (DTypeSize(p.dtype) == 0 || nbytes < 0 || nbytes > kMaxTensorBytes) continue;
    Tensor t = Tensor::Zeros(p.dtype, p.shape);
    auto* dst = static_cast<uint8_t*>(t.data());
    for (int64_t b = 0; b < nbytes && pool_size > 0; ++b) dst[b] = pool[cursor++ % pool_size];
    rec.tensors.insert_or_assign(p.name, std::move(t));
  }
  return rec;
}

// The inverse, for seeds: `tensors` named by suffix only ("qweight", ...).
inline std::vector<uint8_t> SerializeLinearRecord(
    const LayerScheme& scheme, const std::vector<std::pair<int, ConstTensorView>>& tensors) {
  std::vector<uint8_t> out;
  out.push_back(static_cast<uint8_t>(scheme.format));
  out.push_back(static_cast<uint8_t>(scheme.bits));
  const auto g = static_cast<uint16_t>(static_cast<int16_t>(scheme.group_size));
  out.push_back(static_cast<uint8_t>(g));
  out.push_back(static_cast<uint8_t>(g >> 8));
  out.push_back(static_cast<uint8_t>((scheme.sym ? 1 : 0) | (scheme.act_order ? 2 : 0)));
  out.push_back(static_cast<uint8_t>(tensors.size()));
  for (const auto& [suffix, t] : tensors) {
    out.push_back(static_cast<uint8_t>(suffix));
    out.push_back(static_cast<uint8_t>(t.dtype));
    out.push_back(static_cast<uint8_t>(t.shape.size()));
    for (int64_t d : t.shape) {
      out.push_back(static_cast<uint8_t>(d));
      out.push_back(static_cast<uint8_t>(d >> 8));
    }
  }
  for (const auto& [suffix, t] : tensors) {
    const auto* p = static_cast<const uint8_t*>(t.data);
    out.insert(out.end(), p, p + t.nbytes());
  }
  return out;
}

}  // namespace qlayer::fuzz

#endif  // QLAYER_FUZZ_LINEAR_RECORD_H_
