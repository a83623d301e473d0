#include "server/security/bearer_tokens.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace qlayer {
namespace {

// Tokens are header values: visible ASCII only, so a stray space, tab or
// CR (a file edited on Windows) is an error at startup, not a token that can
// never match.
bool IsVisibleAscii(absl::string_view token) {
  for (const char c : token) {
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

}  // namespace

BearerTokens::Digest Sha256(absl::string_view bytes) {
  BearerTokens::Digest digest{};
  unsigned int len = 0;
  // EVP_Digest fails only when OpenSSL cannot allocate; the all-zero digest
  // then matches no accepted token (those were hashed at startup).
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != digest.size()) {
    digest.fill(0);
  }
  return digest;
}

absl::StatusOr<BearerTokens> BearerTokens::FromTokens(const std::vector<std::string>& tokens) {
  BearerTokens result;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty() || !IsVisibleAscii(tokens[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("token ", i + 1, " is empty or holds whitespace or control characters"));
    }
    result.digests_.push_back(Sha256(tokens[i]));
  }
  if (result.digests_.empty()) return absl::InvalidArgumentError("no token given");
  return result;
}

absl::StatusOr<BearerTokens> BearerTokens::FromFile(const std::string& flag,
                                                    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, " ", path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(flag, " ", path, ": read error"));
  std::vector<std::string> tokens;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(ss.str(), '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    if (!IsVisibleAscii(line)) {
      return absl::InvalidArgumentError(absl::StrCat(
          flag, " ", path, ": line ", line_no,
          " holds whitespace or control characters inside the token (one token per line)"));
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": no token in the file"));
  }
  return FromTokens(tokens);
}

bool BearerTokens::Accepts(absl::string_view authorization) const {
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  const Digest presented = Sha256(absl::StripAsciiWhitespace(authorization.substr(kScheme.size())));
  // Every byte of every digest, no early exit: the time does not depend on
  // which token (if any) matched or where a mismatch is.
  uint8_t matched = 0;
  for (const Digest& accepted : digests_) {
    uint8_t diff = 0;
    for (size_t i = 0; i < presented.size(); ++i) diff |= presented[i] ^ accepted[i];
    matched |= static_cast<uint8_t>(diff == 0);
  }
  return matched != 0;
}

}  // namespace qlayer
