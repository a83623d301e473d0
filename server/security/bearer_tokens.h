// Bearer tokens for --auth-token-file: the accepted tokens, kept only as
// SHA-256 digests, and the check of an "authorization: Bearer <token>" value
// (gRPC metadata and the /metrics HTTP header alike).
//
// The file holds one token per line (one line is the usual case); blank
// lines and lines starting with '#' are skipped, surrounding whitespace is
// trimmed. Several tokens let a rotation overlap: add the new token, roll
// the clients, remove the old one (each change needs a server restart).
//
// Constant time: the presented token is hashed and its digest compared with
// every accepted digest by a loop that touches every byte of every digest
// whatever matches, so the time taken says nothing about how much of a
// token was right, nor its length. Tokens are never logged.
#ifndef QLAYER_SERVER_SECURITY_BEARER_TOKENS_H_
#define QLAYER_SERVER_SECURITY_BEARER_TOKENS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qlayer {

class BearerTokens {
 public:
  using Digest = std::array<uint8_t, 32>;

  // Reads `path`; errors name `flag` and the file (never its contents):
  // unreadable, no token in it, or a token with whitespace or control
  // characters inside.
  static absl::StatusOr<BearerTokens> FromFile(const std::string& flag, const std::string& path);
  // From tokens already in memory (tests); the same rules per token.
  static absl::StatusOr<BearerTokens> FromTokens(const std::vector<std::string>& tokens);

  size_t size() const { return digests_.size(); }

  // True when `authorization` is "Bearer <token>" (scheme case-insensitive,
  // RFC 6750) with an accepted token.
  bool Accepts(absl::string_view authorization) const;

 private:
  std::vector<Digest> digests_;
};

// SHA-256 of `bytes` (OpenSSL's EVP interface).
BearerTokens::Digest Sha256(absl::string_view bytes);

}  // namespace qlayer

#endif  // QLAYER_SERVER_SECURITY_BEARER_TOKENS_H_
