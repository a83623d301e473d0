// Whole-file reads and writes with errors that name the path and errno.
#ifndef QLAYER_CLIENT_FILE_BYTES_H_
#define QLAYER_CLIENT_FILE_BYTES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qlayer {

absl::StatusOr<std::string> ReadFileBytes(const std::string& path);
// Writes to path + ".tmp" then renames, so a reader never sees half a file.
absl::Status WriteFileBytes(const std::string& path, absl::string_view bytes);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_FILE_BYTES_H_
