#include "server/checkpoint/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/json_fields.h"

namespace qlayer {
namespace {

namespace fs = std::filesystem;

// JSON side files (config.json, the index) are small; a larger one is hostile.
constexpr uintmax_t kMaxJsonFileBytes = 100ull * 1000 * 1000;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

// `rel` (a name from the directory or an index) resolved inside `root`
// (already canonical). Rejects absolute paths, ".." components and anything
// whose real path, symlinks followed, leaves `root`.
absl::StatusOr<std::string> ResolveInside(const fs::path& root, const std::string& rel,
                                          absl::string_view named_by) {
  if (rel.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(named_by, " names an empty file name"));
  }
  const fs::path p(rel);
  if (p.is_absolute()) {
    return absl::InvalidArgumentError(absl::StrCat(
        named_by, " names '", rel, "', an absolute path; files must lie inside ", root.string()));
  }
  for (const auto& part : p) {
    if (part == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          named_by, " names '", rel, "', which uses '..'; files must lie inside ", root.string()));
    }
  }
  std::error_code ec;
  const fs::path real = fs::canonical(root / p, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat(named_by, " names '", rel,
                                            "', which does not exist in ", root.string(), " (",
                                            ec.message(), ")"));
  }
  const std::string prefix = root.string() + "/";
  if (!absl::StartsWith(real.string(), prefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat(named_by, " names '", rel, "', which resolves to ", real.string(),
                     ", outside the checkpoint directory ", root.string(), " (a symlink out?)"));
  }
  return real.string();
}

// Reads and parses a JSON file without exceptions; errors name the file.
absl::StatusOr<nlohmann::json> ReadJsonFile(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", ec.message()));
  if (size > kMaxJsonFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", size, " bytes, over the 100 MB limit for JSON files"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  absl::StatusOr<nlohmann::json> parsed = ParseJsonBounded(text);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " ", parsed.status().message()));
  }
  nlohmann::json j = *std::move(parsed);
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  return j;
}

// Writes `text` to `path` through a temporary file and a rename.
absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint directory ", dir, " does not exist (", ec.message(), ")"));
  }
  if (!fs::is_directory(root)) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint path ", dir, " is not a directory"));
  }
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = root.string();
  ckpt->config_ = nlohmann::json::object();

  if (fs::exists(root / "config.json")) {
    QLAYER_ASSIGN_OR_RETURN(std::string path, ResolveInside(root, "config.json", "checkpoint"));
    QLAYER_ASSIGN_OR_RETURN(ckpt->config_, ReadJsonFile(path));
    if (ckpt->config_.contains("quantization_config")) ckpt->quant_config_file_ = "config.json";
  }
  if (ckpt->quant_config_file_.empty()) {
    // Older exports keep the quantization settings beside config.json.
    struct SideFile {
      const char* name;
      const char* default_method;  // "" = the file must say
    };
    for (const SideFile& side :
         {SideFile{"quantize_config.json", "gptq"}, SideFile{"quant_config.json", "awq"},
          SideFile{"quantization_config.json", ""}}) {
      if (!fs::exists(root / side.name)) continue;
      QLAYER_ASSIGN_OR_RETURN(std::string path, ResolveInside(root, side.name, "checkpoint"));
      QLAYER_ASSIGN_OR_RETURN(nlohmann::json qc, ReadJsonFile(path));
      if (!qc.contains("quant_method")) {
        if (*side.default_method == '\0') {
          return absl::InvalidArgumentError(absl::StrCat(path, " has no \"quant_method\""));
        }
        qc["quant_method"] = side.default_method;
      }
      ckpt->config_["quantization_config"] = std::move(qc);
      ckpt->quant_config_file_ = side.name;
      break;
    }
  }

  // Which files hold the weights, and (from an index) which tensor each holds.
  std::vector<std::string> files;
  nlohmann::json weight_map;
  std::map<std::string, std::string> index_name_to_path;
  if (fs::exists(root / kSingleFile)) {
    QLAYER_ASSIGN_OR_RETURN(std::string path, ResolveInside(root, kSingleFile, "checkpoint"));
    files.push_back(path);
  } else if (fs::exists(root / kIndexFile)) {
    QLAYER_ASSIGN_OR_RETURN(std::string index_path, ResolveInside(root, kIndexFile, "checkpoint"));
    QLAYER_ASSIGN_OR_RETURN(nlohmann::json index, ReadJsonFile(index_path));
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, " has no \"weight_map\" object"));
    }
    auto md = index.find("metadata");
    if (md != index.end() && !md->is_null() && !md->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": \"metadata\" is not an object"));
    }
    std::set<std::string> names;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry '", it.key(),
                                                       "' is not a file name: ", it->dump()));
      }
      names.insert(it->get<std::string>());
    }
    if (names.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map is empty"));
    }
    for (const std::string& name : names) {
      QLAYER_ASSIGN_OR_RETURN(std::string path, ResolveInside(root, name, index_path));
      files.push_back(path);
      index_name_to_path[name] = path;
    }
    weight_map = std::move(*wm);
  } else {
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(root, ec)) {
      if (e.path().extension() == ".safetensors") found.push_back(e.path().filename().string());
    }
    std::sort(found.begin(), found.end());
    if (found.empty()) {
      return absl::NotFoundError(absl::StrCat("checkpoint directory ", root.string(), " has no ",
                                              kSingleFile, ", no ", kIndexFile,
                                              " and no other *.safetensors file"));
    }
    for (const std::string& name : found) {
      QLAYER_ASSIGN_OR_RETURN(std::string path, ResolveInside(root, name, "checkpoint"));
      files.push_back(path);
    }
  }

  std::map<std::string, const SafetensorsFile*> by_path;
  for (const std::string& path : files) {
    if (by_path.count(path)) continue;  // two index names, one real file
    QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(path));
    for (const std::string& t : f->TensorNames()) {
      auto [it, inserted] = ckpt->owner_.emplace(t, f.get());
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", t, "' is stored twice: in ",
                                                       it->second->path(), " and in ", path));
      }
    }
    by_path[path] = f.get();
    ckpt->files_.push_back(std::move(f));
  }
  for (auto it = weight_map.begin(); it != weight_map.end(); ++it) {
    const std::string file = it->get<std::string>();
    auto owner = ckpt->owner_.find(it.key());
    if (owner == ckpt->owner_.end() || owner->second != by_path[index_name_to_path[file]]) {
      return absl::InvalidArgumentError(absl::StrCat(kIndexFile, " maps tensor '", it.key(),
                                                     "' to ", file, ", but ", file,
                                                     " has no tensor of that name"));
    }
  }
  return ckpt;
}

const ConstTensorView* Checkpoint::Find(absl::string_view name) const {
  auto it = owner_.find(name);
  return it == owner_.end() ? nullptr : it->second->Find(name);
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(owner_.size());
  for (const auto& [name, file] : owner_) names.push_back(name);
  return names;
}

std::vector<std::string> Checkpoint::WeightFiles() const {
  std::vector<std::string> paths;
  for (const auto& f : files_) paths.push_back(f->path());
  return paths;
}

absl::Status WriteCheckpoint(const std::string& dir, const nlohmann::json& config,
                             const NamedTensors& tensors, int64_t shard_bytes) {
  if (!config.is_null() && !config.is_object()) {
    return absl::InvalidArgumentError("config.json must be a JSON object");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  // Remove the files an earlier write may have left, so they cannot shadow
  // this layout (model.safetensors wins over an index when both exist).
  static const std::regex kShardName(R"(model-\d+-of-\d+\.safetensors)");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name == kSingleFile || name == kIndexFile || std::regex_match(name, kShardName)) {
      fs::remove(e.path(), ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot remove ", e.path().string()));
    }
  }

  QLAYER_RETURN_IF_ERROR(
      WriteTextFile((fs::path(dir) / "config.json").string(),
                    (config.is_null() ? nlohmann::json::object() : config).dump(2) + "\n"));

  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.nbytes();
  if (shard_bytes <= 0 || total <= static_cast<uint64_t>(shard_bytes)) {
    return WriteSafetensors((fs::path(dir) / kSingleFile).string(), tensors, metadata);
  }

  // Greedy in name order: layers of one module stay together, as
  // transformers' sharding by state-dict order does.
  std::vector<std::vector<const NamedTensors::value_type*>> shards(1);
  uint64_t used = 0;
  for (const auto& entry : tensors) {
    const uint64_t n = entry.second.nbytes();
    if (!shards.back().empty() && used + n > static_cast<uint64_t>(shard_bytes)) {
      shards.emplace_back();
      used = 0;
    }
    shards.back().push_back(&entry);
    used += n;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    NamedTensors part;
    for (const auto* entry : shards[i]) {
      // Tensor is move-only; a shard holds copies (the tool's tensors are small
      // next to the time spent writing them).
      part.emplace(entry->first, entry->second.Clone());
      weight_map[entry->first] = name;
    }
    QLAYER_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / name).string(), part, metadata));
  }
  nlohmann::json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = std::move(weight_map);
  return WriteTextFile((fs::path(dir) / kIndexFile).string(), index.dump(2) + "\n");
}

}  // namespace qlayer
