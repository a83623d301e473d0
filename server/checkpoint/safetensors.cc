#include "server/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/status_macros.h"
#include "server/checkpoint/json_fields.h"

namespace qlayer {
namespace {

// The reference implementation's bound: a larger header is a hostile file.
constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

absl::Status Bad(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", what));
}

absl::Status Errno(absl::StatusCode code, const std::string& path, absl::string_view op) {
  return absl::Status(code, absl::StrCat(op, " ", path, ": ", std::strerror(errno)));
}

uint64_t ReadLe64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// One header entry before the tiling check.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin;
  uint64_t end;
};

absl::StatusOr<Entry> ParseEntry(const std::string& path, const std::string& name,
                                 const nlohmann::json& v) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!v.is_object()) return Bad(path, absl::StrCat(where, " is not a JSON object"));
  Entry e;
  e.name = name;

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) {
    return Bad(path, absl::StrCat(where, " has no string \"dtype\""));
  }
  const std::string code = dt->get<std::string>();
  absl::StatusOr<DType> dtype = DTypeFromSafetensors(code);
  if (!dtype.ok()) return Bad(path, absl::StrCat(where, ": ", dtype.status().message()));
  e.dtype = *dtype;

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) {
    return Bad(path, absl::StrCat(where, " has no array \"shape\""));
  }
  for (const auto& d : *sh) {
    if (d.is_number_integer() && !d.is_number_unsigned()) {
      return Bad(path, absl::StrCat(where, " has a negative dimension ", d.get<int64_t>()));
    }
    if (!d.is_number_unsigned()) {
      return Bad(path,
                 absl::StrCat(where, " has a shape entry that is not an integer: ", d.dump()));
    }
    const uint64_t u = d.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Bad(path, absl::StrCat(where, " has dimension ", u, ", too large"));
    }
    e.shape.push_back(static_cast<int64_t>(u));
  }

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned()) {
    return Bad(path,
               absl::StrCat(where, ": \"data_offsets\" must be two non-negative integers, got ",
                            off == v.end() ? std::string("nothing") : off->dump()));
  }
  e.begin = (*off)[0].get<uint64_t>();
  e.end = (*off)[1].get<uint64_t>();
  if (e.end < e.begin) {
    return Bad(path, absl::StrCat(where, ": data_offsets end ", e.end, " < begin ", e.begin));
  }
  const int64_t nbytes = CheckedNumBytes(e.shape, DTypeSize(e.dtype));
  if (nbytes < 0) {
    return Bad(path, absl::StrCat(where, ": shape ", ShapeToString(e.shape), " x ",
                                  DTypeName(e.dtype), " overflows"));
  }
  if (e.end - e.begin != static_cast<uint64_t>(nbytes)) {
    return Bad(path,
               absl::StrCat(where, ": shape ", ShapeToString(e.shape), " of ", DTypeName(e.dtype),
                            " needs ", nbytes, " bytes but data_offsets [", e.begin, ", ", e.end,
                            "] span ", e.end - e.begin));
  }
  return e;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return Errno(errno == ENOENT ? absl::StatusCode::kNotFound : absl::StatusCode::kInvalidArgument,
                 path, "cannot open");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = Errno(absl::StatusCode::kInvalidArgument, path, "cannot stat");
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Bad(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return Bad(
        path, absl::StrCat("file is ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  // MAP_PRIVATE + PROT_READ: nothing we do can write the file. A file truncated
  // by someone else after this point would SIGBUS; checkpoints are not expected
  // to change under a running server.
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) return Errno(absl::StatusCode::kInvalidArgument, path, "cannot mmap");

  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->map_ = map;
  f->map_size_ = file_size;
  const auto* bytes = static_cast<const unsigned char*>(map);

  const uint64_t header_len = ReadLe64(bytes);
  if (header_len == 0) return Bad(path, "header length is 0 (empty header)");
  if (header_len > kMaxHeaderBytes) {
    return Bad(path, absl::StrCat("header length ", header_len, " exceeds the 100 MB limit"));
  }
  if (header_len > file_size - 8) {
    return Bad(path, absl::StrCat("header length ", header_len, " runs past the end of the file (",
                                  file_size, " bytes)"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  if (header[0] != '{') {
    return Bad(path, absl::StrCat("header does not start with '{' (first byte 0x",
                                  absl::Hex(static_cast<unsigned char>(header[0])), ")"));
  }
  // Non-throwing parse; trailing spaces (the writers' 8-byte padding) are
  // whitespace to the parser.
  absl::StatusOr<nlohmann::json> parsed =
      ParseJsonBounded(absl::string_view(header, static_cast<size_t>(header_len)));
  if (!parsed.ok()) return Bad(path, absl::StrCat("header ", parsed.status().message()));
  const nlohmann::json& j = *parsed;
  if (!j.is_object()) return Bad(path, "header is not a JSON object");

  std::vector<Entry> entries;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_null()) continue;
      if (!it->is_object()) return Bad(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Bad(path, absl::StrCat("__metadata__ value of '", m.key(),
                                        "' is not a string: ", m->dump()));
        }
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    QLAYER_ASSIGN_OR_RETURN(Entry e, ParseEntry(path, it.key(), *it));
    entries.push_back(std::move(e));
  }

  // Sorted by offset, the tensors must tile the buffer exactly from 0: no
  // overlaps (two views aliasing the same bytes) and no holes (bytes nobody
  // accounts for), as the reference implementation requires.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const Entry& e : entries) {
    if (e.begin != expect) {
      if (e.begin < expect) {
        return Bad(path,
                   absl::StrCat("tensor '", e.name, "' at data_offsets [", e.begin, ", ", e.end,
                                "] overlaps the previous tensor, which ends at ", expect));
      }
      return Bad(path, absl::StrCat("hole in the byte buffer: bytes [", expect, ", ", e.begin,
                                    ") before tensor '", e.name, "' belong to no tensor"));
    }
    expect = e.end;
  }
  const uint64_t buffer_len = file_size - 8 - header_len;
  if (buffer_len < expect) {
    return Bad(path, absl::StrCat("byte buffer is ", buffer_len, " bytes but the tensors need ",
                                  expect, " (file truncated?)"));
  }
  // The reference implementation also rejects bytes after the last tensor;
  // they would be a writer bug or a file glued to something else.
  if (buffer_len > expect) {
    return Bad(path, absl::StrCat("byte buffer is ", buffer_len, " bytes but the tensors end at ",
                                  expect, ": ", buffer_len - expect, " trailing bytes"));
  }

  const unsigned char* buffer = bytes + 8 + header_len;
  for (Entry& e : entries) {
    ConstTensorView v;
    v.dtype = e.dtype;
    v.shape = std::move(e.shape);
    v.data = buffer + e.begin;  // in bounds (or one past the end for size 0)
    f->tensors_.emplace(std::move(e.name), std::move(v));
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const ConstTensorView* SafetensorsFile::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> SafetensorsFile::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

absl::Status WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") {
      return absl::InvalidArgumentError("a tensor cannot be named __metadata__");
    }
    if (t.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has no data"));
    }
    const absl::string_view code = DTypeToSafetensors(t.dtype());
    if (code.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ",
                                                     DTypeName(t.dtype()),
                                                     ", which safetensors cannot store"));
    }
    nlohmann::json e;
    e["dtype"] = std::string(code);
    e["shape"] = std::vector<int64_t>(t.shape().begin(), t.shape().end());
    e["data_offsets"] = {offset, offset + t.nbytes()};
    header[name] = std::move(e);
    offset += t.nbytes();
  }
  // dump() throws on a name or metadata string that is not valid UTF-8 (found
  // by fuzz/moe_catalog_fuzz.cc); the JSON header cannot hold one.
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write ", path,
                     ": a tensor name or metadata string is not valid UTF-8 (", e.what(), ")"));
  }
  // Pad with spaces so the byte buffer starts 8-aligned in the file (the
  // Python writer does the same; mmap'd views are then aligned).
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) return Errno(absl::StatusCode::kInvalidArgument, tmp, "cannot create");
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<unsigned char>(n & 0xff);
  bool ok = std::fwrite(len, 1, 8, out) == 8 &&
            std::fwrite(text.data(), 1, text.size(), out) == text.size();
  for (auto it = tensors.begin(); ok && it != tensors.end(); ++it) {
    const Tensor& t = it->second;
    ok = t.nbytes() == 0 || std::fwrite(t.data(), 1, t.nbytes(), out) == t.nbytes();
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) {
    absl::Status s = Errno(absl::StatusCode::kInternal, tmp, "cannot write");
    std::remove(tmp.c_str());
    return s;
  }
  // Rename last: a reader never sees a half-written file under `path`.
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno(absl::StatusCode::kInternal, path, "cannot rename into");
    std::remove(tmp.c_str());
    return s;
  }
  return absl::OkStatus();
}

}  // namespace qlayer
