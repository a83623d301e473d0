// Typed, non-throwing reads of optional fields of a JSON object, for the
// config files a checkpoint carries. A field that is absent or null takes its
// default; a field of the wrong type is INVALID_ARGUMENT naming `where` and the
// key, so a malformed config never reaches nlohmann's throwing accessors.
#ifndef QLAYER_SERVER_CHECKPOINT_JSON_FIELDS_H_
#define QLAYER_SERVER_CHECKPOINT_JSON_FIELDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qlayer {

// The value of `key` (nullptr when absent or null).
const nlohmann::json* FieldOrNull(const nlohmann::json& obj, absl::string_view key);

absl::StatusOr<int64_t> OptInt(const nlohmann::json& obj, absl::string_view key, int64_t def,
                               absl::string_view where);
absl::StatusOr<bool> OptBool(const nlohmann::json& obj, absl::string_view key, bool def,
                             absl::string_view where);
absl::StatusOr<std::string> OptString(const nlohmann::json& obj, absl::string_view key,
                                      absl::string_view def, absl::string_view where);
// A list of strings (absent or null = empty).
absl::StatusOr<std::vector<std::string>> OptStringList(const nlohmann::json& obj,
                                                       absl::string_view key,
                                                       absl::string_view where);

}  // namespace qlayer

#endif  // QLAYER_SERVER_CHECKPOINT_JSON_FIELDS_H_
