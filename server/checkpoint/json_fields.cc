#include "server/checkpoint/json_fields.h"

#include "absl/strings/str_cat.h"

namespace qlayer {
namespace {

absl::Status WrongType(absl::string_view where, absl::string_view key, absl::string_view want,
                       const nlohmann::json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": \"", key, "\" must be ", want, ", got ", got.dump()));
}

}  // namespace

absl::StatusOr<nlohmann::json> ParseJsonBounded(absl::string_view text) {
  // Depth of [ and { outside strings, checked before nlohmann builds a tree.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        return absl::InvalidArgumentError(
            absl::StrCat("nests deeper than ", kMaxJsonDepth, " levels (at byte ", i, ")"));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("is not valid JSON");
  return j;
}

const nlohmann::json* FieldOrNull(const nlohmann::json& obj, absl::string_view key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(std::string(key));
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<int64_t> OptInt(const nlohmann::json& obj, absl::string_view key, int64_t def,
                               absl::string_view where) {
  const nlohmann::json* v = FieldOrNull(obj, key);
  if (v == nullptr) return def;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return WrongType(where, key, "an int64", *v);
    return static_cast<int64_t>(u);
  }
  if (v->is_number_integer()) return v->get<int64_t>();
  return WrongType(where, key, "an integer", *v);
}

absl::StatusOr<bool> OptBool(const nlohmann::json& obj, absl::string_view key, bool def,
                             absl::string_view where) {
  const nlohmann::json* v = FieldOrNull(obj, key);
  if (v == nullptr) return def;
  if (!v->is_boolean()) return WrongType(where, key, "true or false", *v);
  return v->get<bool>();
}

absl::StatusOr<std::string> OptString(const nlohmann::json& obj, absl::string_view key,
                                      absl::string_view def, absl::string_view where) {
  const nlohmann::json* v = FieldOrNull(obj, key);
  if (v == nullptr) return std::string(def);
  if (!v->is_string()) return WrongType(where, key, "a string", *v);
  return v->get<std::string>();
}

absl::StatusOr<std::vector<std::string>> OptStringList(const nlohmann::json& obj,
                                                       absl::string_view key,
                                                       absl::string_view where) {
  std::vector<std::string> out;
  const nlohmann::json* v = FieldOrNull(obj, key);
  if (v == nullptr) return out;
  if (!v->is_array()) return WrongType(where, key, "a list of strings", *v);
  for (const auto& e : *v) {
    if (!e.is_string()) return WrongType(where, key, "a list of strings", *v);
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace qlayer
