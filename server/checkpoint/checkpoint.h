// A checkpoint directory: config.json plus model.safetensors, or shards named
// by model.safetensors.index.json. Every file it names must lie inside the
// directory (no "..", no absolute paths, no symlinks out).
//
// Which weights are read, in order (transformers' own order for the first two):
//   1. model.safetensors
//   2. model.safetensors.index.json: every file in weight_map is opened; every
//      tensor it maps must be in the named file; a tensor in two files is an
//      error. Tensors a shard holds but the map omits are still served.
//   3. otherwise every *.safetensors in the directory (no index), again with
//      duplicates rejected.
// Every weight file, config.json included, must resolve (after symlinks)
// inside the directory. Note that this rejects a Hugging Face cache snapshot
// directory, whose files are symlinks to ../../blobs: download with
// --local-dir (real files) instead.
//
// Separate quantization configs: when config.json has no quantization_config,
// the first of quantize_config.json (AutoGPTQ; quant_method "gptq" assumed),
// quant_config.json (AutoAWQ's spelling; "awq" assumed) and
// quantization_config.json (AutoRound; quant_method required) that exists is
// merged into config()["quantization_config"], so QuantConfig::Parse(config())
// sees one place.
#ifndef QLAYER_SERVER_CHECKPOINT_CHECKPOINT_H_
#define QLAYER_SERVER_CHECKPOINT_CHECKPOINT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/formats.h"
#include "server/checkpoint/safetensors.h"

namespace qlayer {

class Checkpoint : public TensorSource {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // Parsed config.json (an empty object when the file is absent).
  const nlohmann::json& config() const { return config_; }
  const ConstTensorView* Find(absl::string_view name) const override;
  // Every tensor name, sorted.
  std::vector<std::string> TensorNames() const;
  // Paths of the opened .safetensors files, in the order they were opened.
  std::vector<std::string> WeightFiles() const;
  // The file the quantization config came from ("config.json",
  // "quantize_config.json", ...; empty when there is none).
  const std::string& quant_config_file() const { return quant_config_file_; }

 private:
  std::string dir_;
  nlohmann::json config_;
  std::string quant_config_file_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> owner_;  // tensor -> file
};

// Writes config.json and the tensors, as one model.safetensors or, when the
// bytes exceed `shard_bytes` (> 0), as model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"}).
// Tensors go to shards in name order; a shard is closed before it would pass
// shard_bytes (a single larger tensor gets a shard of its own). Every file
// carries {"format": "pt"} metadata, which transformers requires. Creates
// `dir` if needed and first removes the checkpoint files this function writes
// (model.safetensors, the index and model-*-of-*.safetensors) so an older
// layout left there cannot shadow the new one.
absl::Status WriteCheckpoint(const std::string& dir, const nlohmann::json& config,
                             const NamedTensors& tensors, int64_t shard_bytes = 0);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_CHECKPOINT_H_
