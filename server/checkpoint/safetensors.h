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
  // with '{' (trailing space padding allowed), known dtypes, non-negative
  // integer dims, end >= begin, end - begin == numel * size (overflow-checked),
  // and, sorted by offset, the tensors tile the byte buffer exactly from 0.
  // Like the reference implementation, a buffer shorter than the last end
  // (truncated file) and bytes after it (trailing garbage) are both errors.
  // Every problem is INVALID_ARGUMENT naming the file and the tensor; a
  // missing file is NOT_FOUND.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // nullptr when absent. The view lives as long as this file.
  const ConstTensorView* Find(absl::string_view name) const;
  std::vector<std::string> TensorNames() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Bytes of the file (header and buffer).
  size_t file_size() const { return map_size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, ConstTensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (in name order, contiguous) and optional string metadata.
// The header is padded with spaces to a multiple of 8 bytes, so the buffer is
// 8-aligned. Writes `path`.tmp and renames it, so readers never see half a file.
absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_SAFETENSORS_H_
