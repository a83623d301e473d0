// A checkpoint directory: config.json plus model.safetensors, or shards named
// by model.safetensors.index.json. Every file it names must lie inside the
// directory (no "..", no absolute paths, no symlinks out).
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
  std::vector<std::string> TensorNames() const;

 private:
  std::string dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> owner_;  // tensor -> file
};

// Writes config.json and the tensors, as one model.safetensors or, when the
// bytes exceed `shard_bytes` (> 0), as model-0000i-of-0000n.safetensors plus
// model.safetensors.index.json. Creates `dir` if needed.
absl::Status WriteCheckpoint(const std::string& dir, const nlohmann::json& config,
                             const NamedTensors& tensors, int64_t shard_bytes = 0);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_CHECKPOINT_H_
