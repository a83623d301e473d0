// Fuzz target: every checkpoint format decoder (dense, GPTQ v1 / v2, AWQ,
// compressed-tensors pack- / int-quantized; AutoRound checkpoints use the
// GPTQ and AWQ decoders) given a parsed header and bytes (linear_record.h:
// the first input byte picks the format). A decoded weight must validate,
// dequantize at its corners without reading out of bounds, and survive the
// round trip: encoding it back in the same scheme and decoding that again
// gives the same canonical weight (the decoders are documented lossless and
// the encoders their exact inverse).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz/fuzz_util.h"
#include "fuzz/linear_record.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/quantized_linear.h"

namespace {

using qlayer::fuzz::Fail;

bool SameTensor(const qlayer::Tensor& a, const qlayer::Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape() || a.nbytes() != b.nbytes()) return false;
  return a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}

std::string Diff(const qlayer::QuantizedLinear& a, const qlayer::QuantizedLinear& b) {
  if (a.K != b.K || a.N != b.N) return "K/N";
  if (a.wtype != b.wtype) return "wtype";
  if (a.group_size != b.group_size) return "group_size";
  if (!SameTensor(a.qweight, b.qweight)) return "qweight";
  if (!SameTensor(a.scales, b.scales)) return "scales";
  if (!SameTensor(a.zeros, b.zeros)) return "zeros";
  if (!SameTensor(a.g_idx, b.g_idx)) return "g_idx";
  if (!SameTensor(a.bias, b.bias)) return "bias";
  if (!SameTensor(a.dense, b.dense)) return "dense";
  return "";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const qlayer::fuzz::LinearRecord rec = qlayer::fuzz::ParseLinearRecord(data, size);
  const qlayer::NamedTensorSource source(rec.tensors);
  auto w = qlayer::DecodeLinear(source, qlayer::fuzz::kRecordPrefix, rec.scheme);
  if (!w.ok()) return 0;
  if (absl::Status s = w->Validate(); !s.ok())
    Fail("decoded weight fails Validate: " + s.ToString());
  if (w->K <= 0 || w->N <= 0) Fail("decoded weight with K or N <= 0");
  // Corners and a diagonal walk: Dequant reads qweight, scales, zeros, g_idx.
  double sum = 0;
  for (int64_t k : {int64_t{0}, w->K / 2, w->K - 1}) {
    for (int64_t n : {int64_t{0}, w->N / 2, w->N - 1}) sum += w->Dequant(k, n);
  }
  for (int64_t i = 0; i < 64; ++i) sum += w->Dequant((i * 7919) % w->K, (i * 104729) % w->N);
  (void)sum;

  qlayer::NamedTensors again;
  if (!qlayer::EncodeLinear(*w, qlayer::fuzz::kRecordPrefix, rec.scheme, again).ok()) return 0;
  const qlayer::NamedTensorSource source2(again);
  auto w2 = qlayer::DecodeLinear(source2, qlayer::fuzz::kRecordPrefix, rec.scheme);
  if (!w2.ok()) Fail("re-encoded weight does not decode: " + w2.status().ToString());
  if (const std::string d = Diff(*w, *w2); !d.empty()) Fail("round trip changed " + d);
  return 0;
}
