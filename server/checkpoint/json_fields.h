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

// Checkpoint JSON (a safetensors header, config.json, the shard index) may
// nest at most this deep. nlohmann's parser is iterative but dump(), copies
// and comparisons recurse, so a hostile file nested 10^5 levels deep would
// overflow the stack in an error message or a config copy (found by
// fuzz/safetensors_fuzz.cc). Real files nest a handful of levels.
inline constexpr int kMaxJsonDepth = 128;

// Parses `text` without exceptions. INVALID_ARGUMENT "is not valid JSON" or
// "nests deeper than 128 levels" (callers prefix the file).
absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text);

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
