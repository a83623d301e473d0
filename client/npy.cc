#include "client/npy.h"

#include <cctype>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/file_bytes.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// numpy refuses headers above 10000 bytes unless told otherwise; 1 MiB keeps
// a hostile file from making us scan gigabytes while allowing huge ranks.
constexpr size_t kMaxHeaderLen = 1 << 20;

struct DescrRow {
  const char* descr;  // as numpy writes it for a little-endian machine
  DType dtype;
};
constexpr DescrRow kDescrs[] = {
    {"<f2", DType::kF16}, {"<f4", DType::kF32}, {"<f8", DType::kF64}, {"|i1", DType::kI8},
    {"|u1", DType::kU8},  {"<i2", DType::kI16}, {"<u2", DType::kU16}, {"<i4", DType::kI32},
    {"<u4", DType::kU32}, {"<i8", DType::kI64}, {"<u8", DType::kU64}, {"|b1", DType::kBool},
};

absl::StatusOr<DType> DTypeFromDescr(absl::string_view descr) {
  // '=' (native) is little-endian on every machine qlayer runs on; one-byte
  // types may be spelled with any order mark.
  std::string d(descr);
  if (d.size() == 3 && d[0] == '=') d[0] = '<';
  if (d.size() == 3 && d[2] == '1' && (d[0] == '<' || d[0] == '>' || d[0] == '=')) d[0] = '|';
  for (const DescrRow& row : kDescrs) {
    if (d == row.descr) return row.dtype;
  }
  if (!d.empty() && d[0] == '>') {
    return absl::UnimplementedError(
        absl::StrCat(".npy dtype '", descr, "' is big-endian; save it little-endian (arr.astype('<",
                     d.substr(1), "'))"));
  }
  return absl::UnimplementedError(absl::StrCat(".npy dtype '", descr,
                                               "' is not supported (f2, f4, f8, i1-i8, u1-u8, b1; "
                                               "bfloat16 has no numpy dtype: use .safetensors)"));
}

absl::StatusOr<std::string> DescrFromDType(DType t) {
  for (const DescrRow& row : kDescrs) {
    if (row.dtype == t) return std::string(row.descr);
  }
  return absl::UnimplementedError(
      absl::StrCat("dtype ", DTypeName(t),
                   " cannot be stored in .npy (numpy has no such dtype): use .safetensors"));
}

// Reads the header's Python dict literal. Only the three keys numpy writes
// matter; values are strings, True/False, or tuples of ints.
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view s) : s_(s) {}

  absl::Status Parse() {
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      QLAYER_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Consume(':')) return Error("expected ':' after key");
      SkipSpace();
      if (key == "descr") {
        QLAYER_ASSIGN_OR_RETURN(descr, ParseString());
      } else if (key == "fortran_order") {
        if (ConsumeWord("True")) {
          fortran_order = true;
        } else if (ConsumeWord("False")) {
          fortran_order = false;
        } else {
          return Error("fortran_order is not True or False");
        }
      } else if (key == "shape") {
        QLAYER_ASSIGN_OR_RETURN(shape, ParseTuple());
      } else {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      SkipSpace();
      if (!Consume(',')) {
        SkipSpace();
        if (!Consume('}')) return Error("expected ',' or '}'");
        break;
      }
    }
    if (!descr.has_value() || !fortran_order.has_value() || !shape.has_value()) {
      return Error("needs the keys 'descr', 'fortran_order' and 'shape'");
    }
    return absl::OkStatus();
  }

  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<Shape> shape;

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(".npy header: ", what, " at offset ", pos_, " in \"", s_, "\""));
  }
  void SkipSpace() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool Consume(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ConsumeWord(absl::string_view w) {
    if (s_.substr(pos_, w.size()) == w) {
      pos_ += w.size();
      return true;
    }
    return false;
  }
  absl::StatusOr<std::string> ParseString() {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = s_[pos_++];
    const size_t end = s_.find(quote, pos_);
    if (end == absl::string_view::npos) return Error("unterminated string");
    std::string out(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  absl::StatusOr<Shape> ParseTuple() {
    if (!Consume('(')) return Error("shape is not a tuple");
    Shape shape;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        return Error("shape entry is not a non-negative integer");
      }
      int64_t v = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        if (v > (INT64_MAX - 9) / 10) return Error("shape entry overflows int64");
        v = v * 10 + (s_[pos_++] - '0');
      }
      Consume('L');  // Python 2 longs, as very old numpy wrote them
      shape.push_back(v);
      SkipSpace();
      if (!Consume(',')) {
        SkipSpace();
        if (!Consume(')')) return Error("expected ',' or ')' in shape");
        break;
      }
    }
    return shape;
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

// Column-major `src` of `shape` -> row-major `dst`.
void FortranToC(const char* src, char* dst, const Shape& shape, size_t elem) {
  const size_t rank = shape.size();
  const int64_t n = NumElements(shape);
  std::vector<int64_t> idx(rank, 0);
  std::vector<int64_t> fstride(rank, 1);
  for (size_t d = 1; d < rank; ++d) fstride[d] = fstride[d - 1] * shape[d - 1];
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < rank; ++d) off += idx[d] * fstride[d];
    std::memcpy(dst + static_cast<size_t>(i) * elem, src + static_cast<size_t>(off) * elem, elem);
    for (size_t d = rank; d-- > 0;) {  // advance the row-major counter
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

std::string ShapeTuple(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    absl::StrAppend(&s, shape[i], i + 1 < shape.size() || shape.size() == 1 ? "," : "");
    if (i + 1 < shape.size()) s += " ";
  }
  return s + ")";
}

}  // namespace

absl::StatusOr<Tensor> ParseNpy(absl::string_view bytes) {
  if (bytes.size() < kMagicLen + 2 ||
      bytes.substr(0, kMagicLen) != absl::string_view(kMagic, kMagicLen)) {
    return absl::InvalidArgumentError("not a .npy file (no \\x93NUMPY magic)");
  }
  const int major = static_cast<unsigned char>(bytes[kMagicLen]);
  const int minor = static_cast<unsigned char>(bytes[kMagicLen + 1]);
  size_t len_bytes = 0;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2 || major == 3) {
    len_bytes = 4;
  } else {
    return absl::UnimplementedError(
        absl::StrCat(".npy format version ", major, ".", minor, " is not supported (1.0-3.0)"));
  }
  const size_t prefix = kMagicLen + 2 + len_bytes;
  if (bytes.size() < prefix)
    return absl::InvalidArgumentError(".npy file truncated in its preamble");
  size_t header_len = 0;
  for (size_t i = 0; i < len_bytes; ++i) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[kMagicLen + 2 + i]))
                  << (8 * i);
  }
  if (header_len > kMaxHeaderLen || bytes.size() - prefix < header_len) {
    return absl::InvalidArgumentError(absl::StrCat(".npy header length ", header_len,
                                                   " exceeds the file (", bytes.size(),
                                                   " bytes) or the 1 MiB limit"));
  }
  HeaderParser header(bytes.substr(prefix, header_len));
  QLAYER_RETURN_IF_ERROR(header.Parse());
  QLAYER_ASSIGN_OR_RETURN(DType dtype, DTypeFromDescr(*header.descr));
  const Shape& shape = *header.shape;
  const int64_t nbytes = CheckedNumBytes(shape, DTypeSize(dtype));
  if (nbytes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(".npy shape ", ShapeToString(shape), " overflows"));
  }
  const absl::string_view payload = bytes.substr(prefix + header_len);
  if (static_cast<int64_t>(payload.size()) != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat(".npy ", *header.descr, " ",
                                                   ShapeToString(shape), " needs ", nbytes,
                                                   " data bytes, file has ", payload.size()));
  }
  Tensor t = Tensor::Zeros(dtype, shape);
  if (nbytes == 0) return t;
  if (*header.fortran_order && shape.size() > 1) {
    FortranToC(payload.data(), static_cast<char*>(t.data()), shape, DTypeSize(dtype));
  } else {
    std::memcpy(t.data(), payload.data(), static_cast<size_t>(nbytes));
  }
  return t;
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path) {
  QLAYER_ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  auto t = ParseNpy(bytes);
  if (!t.ok())
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  return t;
}

absl::StatusOr<std::string> SerializeNpy(const ConstTensorView& t) {
  QLAYER_ASSIGN_OR_RETURN(std::string descr, DescrFromDType(t.dtype));
  const int64_t nbytes = CheckedNumBytes(t.shape, DTypeSize(t.dtype));
  if (nbytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeToString(t.shape), " overflows"));
  }
  std::string dict = absl::StrCat(
      "{'descr': '", descr, "', 'fortran_order': False, 'shape': ", ShapeTuple(t.shape), ", }");
  // Pad with spaces so that magic + version + length + header + '\n' is a
  // multiple of 64: numpy does this so the data can be mapped aligned.
  int major = 1;
  size_t len_bytes = 2;
  size_t total = kMagicLen + 2 + len_bytes + dict.size() + 1;
  if ((total + 63) / 64 * 64 - kMagicLen - 2 - len_bytes > 65535) {
    major = 2;
    len_bytes = 4;
    total = kMagicLen + 2 + len_bytes + dict.size() + 1;
  }
  const size_t padded = (total + 63) / 64 * 64;
  dict.append(padded - total, ' ');
  dict.push_back('\n');
  const size_t header_len = dict.size();
  std::string out(kMagic, kMagicLen);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  for (size_t i = 0; i < len_bytes; ++i)
    out.push_back(static_cast<char>((header_len >> (8 * i)) & 0xff));
  out += dict;
  if (nbytes > 0) out.append(static_cast<const char*>(t.data), static_cast<size_t>(nbytes));
  return out;
}

absl::Status WriteNpy(const std::string& path, const ConstTensorView& t) {
  QLAYER_ASSIGN_OR_RETURN(std::string bytes, SerializeNpy(t));
  return WriteFileBytes(path, bytes);
}

}  // namespace qlayer
