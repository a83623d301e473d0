// Fuzz target: the MoE catalog (ListMoEBlocks / LoadMoEBlock /
// MoEMemberModules) over a checkpoint directory built from the input:
//   <config.json text>
//   ---
//   <tensor name> <safetensors dtype> <dims, comma-separated>   (one a line)
//   ---
//   <bytes: the tensors' data in line order, cycled when short>
// The catalog must reject or list blocks; a listed block must load or be
// rejected cleanly, and a loaded block must validate and build a router.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fuzz/fuzz_util.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/moe.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/moe_catalog.h"
#include "server/checkpoint/quant_config.h"
#include "server/checkpoint/safetensors.h"

namespace {

using qlayer::fuzz::Fail;

constexpr int64_t kMaxTensorBytes = 1 << 20;
constexpr int64_t kMaxTotalBytes = 4 << 20;
constexpr size_t kMaxTensors = 256;

// Tensors from the "name dtype dims" lines, filled from `pool`.
qlayer::NamedTensors ParseTensors(absl::string_view lines, absl::string_view pool) {
  qlayer::NamedTensors out;
  size_t cursor = 0;
  int64_t total = 0;
  for (absl::string_view line : absl::StrSplit(lines, '\n', absl::SkipEmpty())) {
    if (out.size() >= kMaxTensors) break;
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 2 || f.size() > 3) continue;
    auto dtype = qlayer::DTypeFromSafetensors(f[1]);
    if (!dtype.ok()) continue;
    qlayer::Shape shape;
    bool ok = true;
    if (f.size() == 3) {
      for (absl::string_view d : absl::StrSplit(f[2], ',')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(d, &v) || v < 0 || v > (1 << 20)) ok = false;
        shape.push_back(v);
      }
    }
    const int64_t nbytes = qlayer::CheckedNumBytes(shape, qlayer::DTypeSize(*dtype));
    if (!ok || nbytes < 0 || nbytes > kMaxTensorBytes || total + nbytes > kMaxTotalBytes) continue;
    total += nbytes;
    qlayer::Tensor t = qlayer::Tensor::Zeros(*dtype, shape);
    auto* dst = static_cast<uint8_t*>(t.data());
    for (int64_t b = 0; b < nbytes && !pool.empty(); ++b) {
      dst[b] = static_cast<uint8_t>(pool[cursor++ % pool.size()]);
    }
    out.insert_or_assign(std::string(f[0]), std::move(t));
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const qlayer::fuzz::ScratchDir* dir = new qlayer::fuzz::ScratchDir();
  const absl::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> parts = absl::StrSplit(in, absl::MaxSplits("\n---\n", 2));
  if (parts.size() < 2) return 0;
  const absl::string_view pool = parts.size() == 3 ? parts[2] : absl::string_view();
  const qlayer::NamedTensors tensors = ParseTensors(parts[1], pool);
  if (tensors.empty()) return 0;
  nlohmann::json config = nlohmann::json::parse(parts[0].begin(), parts[0].end(), nullptr,
                                                /*allow_exceptions=*/false);
  if (config.is_discarded() || !config.is_object()) return 0;
  dir->WriteFile("config.json", parts[0].data(), parts[0].size());
  // A name WriteSafetensors refuses (e.g. __metadata__) ends the input here.
  if (!qlayer::WriteSafetensors(dir->path() + "/model.safetensors", tensors).ok()) return 0;

  auto ckpt = qlayer::Checkpoint::Open(dir->path());
  if (!ckpt.ok()) return 0;
  auto qc = qlayer::QuantConfig::Parse((*ckpt)->config());
  if (!qc.ok()) return 0;
  (void)qlayer::MoEMemberModules(**ckpt);
  auto blocks = qlayer::ListMoEBlocks(**ckpt, *qc);
  if (!blocks.ok()) return 0;
  for (const qlayer::MoEBlockEntry& entry : *blocks) {
    if (entry.experts.empty()) Fail("block " + entry.name + " listed with no experts");
    auto block = qlayer::LoadMoEBlock(**ckpt, *qc, entry);
    if (!block.ok()) continue;
    if (absl::Status s = block->Validate(); !s.ok()) Fail("loaded block invalid: " + s.ToString());
    auto router = qlayer::MoERouter::FromBlock(*block);
    if (!router.ok() && router.status().code() != absl::StatusCode::kInvalidArgument) {
      Fail("router of a loaded block: " + router.status().ToString());
    }
  }
  return 0;
}
