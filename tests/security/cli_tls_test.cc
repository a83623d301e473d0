// qlayer-cli against a qlayer-server with mutual TLS and a bearer token.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/security/security_test_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::security_testing;  // NOLINT(build/namespaces)
using ::qlayer::testing::BuildDir;
using ::qlayer::testing::ServerProcess;
using ::qlayer::testing::TempDir;

TEST(CliTlsTest, ListAndVerifyWithTlsClientCertAndToken) {
  TempDir dir;
  const std::string token = WriteSecret(dir.path(), "token", "cli-token-1\n");
  ServerProcess server(ModelDir(),
                       {"--tls-cert", Cert("server.pem"), "--tls-key", Cert("server.key"),
                        "--tls-client-ca", Cert("ca.pem"), "--auth-token-file", token});
  ASSERT_TRUE(server.ok());
  const std::vector<std::string> base = {BuildDir() + "/client/qlayer-cli", "--server",
                                         server.address(), "--timeout", "10"};
  const std::vector<std::string> tls = {"--tls-ca",         Cert("ca.pem"), "--tls-cert",
                                        Cert("client.pem"), "--tls-key",    Cert("client.key")};
  auto run = [&](std::vector<std::vector<std::string>> parts) {
    std::vector<std::string> argv = base;
    for (const auto& p : parts) argv.insert(argv.end(), p.begin(), p.end());
    return RunProgram(argv, 60);
  };
  ProgramResult r = run({tls, {"--auth-token-file", token, "list"}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(kLayer), std::string::npos) << r.output;
  // verify: the server's answers vs a float64 reference from the checkpoint.
  r = run({tls, {"--auth-token-file", token, "verify", "--layer", kLayer, "--model", ModelDir()}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;

  // The health check needs the TLS flags but no token (a probe).
  r = run({tls, {"health"}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SERVING"), std::string::npos) << r.output;

  r = run({tls, {"list"}});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("UNAUTHENTICATED"), std::string::npos) << r.output;
  r = run({{"--tls-ca", Cert("ca.pem"), "--auth-token-file", token, "list"}});
  EXPECT_EQ(r.exit_code, 1) << "no client certificate: " << r.output;
  r = run({{"--auth-token-file", token, "list"}});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("needs TLS"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("cli-token-1"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace qlayer
