// safetensors files: a bounds-checked, mmap-backed reader and a writer
// (FORMATS.md §7). Tensors are views into the mapping, never copies; every
// header field, dtype, shape, offset and size is checked before a view is
// handed out, so a hostile file gets an absl::Status, never a crash.
#ifndef QLAYER_SERVER_CHECKPOINT_SAFETENSORS_H_
#define QLAYER_SERVER_CHECKPOINT_SAFETENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "qlayer/kernels/formats.h"
#include "qlayer/kernels/tensor.h"

namespace qlayer {

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  // Maps `path` read-only and validates the header: size <= 100 MB, starts
  // with '{', known dtypes, end >= begin, end - begin == numel * size
  // (overflow-checked), tensors tile the buffer exactly, buffer long enough.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent. The view lives as long as this file.
  const ConstTensorView* Find(absl::string_view name) const;
  std::vector<std::string> TensorNames() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, ConstTensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (in name order, contiguous) and optional string metadata.
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_SAFETENSORS_H_
