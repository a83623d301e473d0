// BearerTokens in-process: the token file's rules and the header check.
#include "server/security/bearer_tokens.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/security/security_test_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::security_testing::WriteSecret;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::TestSeed;

TEST(BearerTokensTest, AcceptsExactlyTheTokensInTheFile) {
  std::mt19937_64 rng(TestSeed());
  const std::string a = absl::StrCat("tok", rng()), b = absl::StrCat("tok", rng());
  TempDir dir;
  const std::string path =
      WriteSecret(dir.path(), "t", absl::StrCat("# comment\r\n", a, "\r\n\n\t", b, "\n"));
  absl::StatusOr<BearerTokens> tokens = BearerTokens::FromFile("--auth-token-file", path);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 2u);
  EXPECT_TRUE(tokens->Accepts("Bearer " + a));
  EXPECT_TRUE(tokens->Accepts("bearer " + b));  // the scheme is case-insensitive
  EXPECT_TRUE(tokens->Accepts("BEARER " + a));
  for (const std::string& bad : std::vector<std::string>{
           std::string(""), "Bearer", "Bearer ", a, "Basic " + a, "Bearer " + a + "x",
           "Bearer " + a.substr(1), "Bearer " + a + b, "Bearer # comment", "Bearer x" + a}) {
    EXPECT_FALSE(tokens->Accepts(bad)) << "'" << bad << "'";
  }
}

TEST(BearerTokensTest, BadFilesAreErrorsThatNameTheFileNotTheToken) {
  TempDir dir;
  absl::StatusOr<BearerTokens> missing =
      BearerTokens::FromFile("--auth-token-file", dir.path() + "/absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("--auth-token-file"), std::string::npos);

  const std::string empty = WriteSecret(dir.path(), "empty", "# only a comment\n\n");
  EXPECT_EQ(BearerTokens::FromFile("--auth-token-file", empty).status().code(),
            absl::StatusCode::kInvalidArgument);

  const std::string spaced = WriteSecret(dir.path(), "spaced", "two words-secret\n");
  absl::StatusOr<BearerTokens> s = BearerTokens::FromFile("--auth-token-file", spaced);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.status().message().find("secret"), std::string::npos) << s.status();
  EXPECT_NE(s.status().message().find("line 1"), std::string::npos) << s.status();
}

TEST(BearerTokensTest, DigestIsSha256) {
  // FIPS 180-2 test vector: SHA-256("abc").
  const BearerTokens::Digest d = Sha256("abc");
  std::string hex;
  for (uint8_t byte : d) absl::StrAppend(&hex, absl::Hex(byte, absl::kZeroPad2));
  EXPECT_EQ(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

}  // namespace
}  // namespace qlayer
