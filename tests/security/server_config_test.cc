// qlayer-server refuses unsafe or inconsistent security settings and
// checkpoints that reach outside their directory, at startup, with a message
// naming the flag or file; /metrics answers 401 without its own token.
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/security/security_test_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

namespace fs = std::filesystem;
using namespace ::qlayer::security_testing;  // NOLINT(build/namespaces)
using ::qlayer::testing::BuildDir;
using ::qlayer::testing::MetricValue;
using ::qlayer::testing::ServerProcess;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::TestSeed;

// Starts qlayer-server with `args`; it must exit non-zero at once.
ProgramResult StartExpectingRefusal(const std::string& model, std::vector<std::string> args) {
  std::vector<std::string> argv = {BuildDir() + "/server/qlayer-server",
                                   "--model",
                                   model,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProgramResult r = RunProgram(argv, 20);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("listening on"), std::string::npos) << r.output;
  return r;
}

TEST(ServerConfigTest, InconsistentOrUnreadableSecuritySettingsStopTheStart) {
  TempDir dir;
  const std::string token = WriteSecret(dir.path(), "token", "t0ken\n");
  struct Case {
    std::vector<std::string> args;
    std::string expect;  // in the error
  };
  const std::vector<Case> cases = {
      {{"--auth-token-file", token}, "--auth-token-file needs TLS"},
      {{"--tls-cert", Cert("server.pem")}, "--tls-cert and --tls-key go together"},
      {{"--tls-client-ca", Cert("ca.pem")}, "--tls-client-ca"},
      {{"--tls-cert", Cert("server.pem"), "--tls-key", dir.path() + "/absent.key"},
       "--tls-key " + dir.path() + "/absent.key: cannot open"},
      {{"--tls-cert", Cert("server.key"), "--tls-key", Cert("server.key")},
       "--tls-cert " + Cert("server.key") + ": not a PEM file holding CERTIFICATE"},
      // A key that is not the certificate's: gRPC cannot build the port.
      {{"--tls-cert", Cert("server.pem"), "--tls-key", Cert("client.key")}, "cannot bind"},
      {{"--tls-cert", Cert("server.pem"), "--tls-key", Cert("server.key"), "--auth-token-file",
        WriteSecret(dir.path(), "empty", "\n# none\n")},
       "no token in the file"},
      {{"--metrics-auth-token-file", token, "--tls-cert", Cert("server.pem"), "--tls-key",
        Cert("server.key"), "--auth-token-file", token},
       "must not also open the gRPC port"},
      {{"--max-streams-per-connection", "-1"}, "--max-streams-per-connection -1"},
  };
  for (const Case& c : cases) {
    const ProgramResult r = StartExpectingRefusal(ModelDir(), c.args);
    EXPECT_NE(r.output.find(c.expect), std::string::npos)
        << "expected '" << c.expect << "' in: " << r.output;
    EXPECT_EQ(r.output.find("t0ken"), std::string::npos) << "a token was logged: " << r.output;
  }
}

TEST(ServerConfigTest, ModelFilesMustLieInsideTheModelDirectory) {
  // model.safetensors a symlink to a file outside the directory.
  TempDir outside, linked;
  fs::copy_file(ModelDir() + "/model.safetensors", outside.path() + "/model.safetensors");
  for (const auto& e : fs::directory_iterator(ModelDir())) {
    if (e.path().filename() != "model.safetensors") {
      fs::copy_file(e.path(), linked.path() + "/" + e.path().filename().string());
    }
  }
  fs::create_symlink(outside.path() + "/model.safetensors", linked.path() + "/model.safetensors");
  ProgramResult r = StartExpectingRefusal(linked.path(), {});
  EXPECT_NE(r.output.find("outside the checkpoint directory"), std::string::npos) << r.output;

  // A sharded index naming a shard through "..".
  TempDir parent;
  const std::string model = parent.path() + "/model";
  fs::create_directory(model);
  fs::copy_file(ModelDir() + "/model.safetensors", parent.path() + "/shard.safetensors");
  for (const auto& e : fs::directory_iterator(ModelDir())) {
    if (e.path().extension() == ".json") {
      fs::copy_file(e.path(), model + "/" + e.path().filename().string());
    }
  }
  WriteSecret(model, "model.safetensors.index.json",
              absl::StrCat(R"({"metadata": {}, "weight_map": {")", kLayer,
                           R"(.qweight": "../shard.safetensors"}})"));
  r = StartExpectingRefusal(model, {});
  EXPECT_NE(r.output.find("uses '..'"), std::string::npos) << r.output;
}

TEST(MetricsAuthTest, ScrapesNeedTheMetricsTokenAndOnlyIt) {
  TempDir dir;
  std::mt19937_64 rng(TestSeed());
  const std::string grpc_token = absl::StrCat("g", rng()), metrics_token = absl::StrCat("m", rng());
  ServerProcess server(
      ModelDir(), {"--tls-cert", Cert("server.pem"), "--tls-key", Cert("server.key"),
                   "--auth-token-file", WriteSecret(dir.path(), "grpc", grpc_token),
                   "--metrics-auth-token-file", WriteSecret(dir.path(), "metrics", metrics_token)});
  ASSERT_TRUE(server.ok());
  for (const std::string& auth : {std::string(), "Bearer " + grpc_token,
                                  "Bearer " + metrics_token + "0", "Basic " + metrics_token}) {
    const HttpResponse r = HttpGet(server.metrics_port(), "/metrics", auth);
    EXPECT_EQ(r.status, 401) << "'" << auth << "'";
    EXPECT_EQ(r.body.find("qlayer_"), std::string::npos);
  }
  const HttpResponse ok = HttpGet(server.metrics_port(), "/metrics", "Bearer " + metrics_token);
  EXPECT_EQ(ok.status, 200);
  EXPECT_GE(MetricValue(ok.body, "qlayer_weight_bytes", {{"layer", kLayer}}), 1) << ok.body;
}

TEST(MetricsAuthTest, WithoutATokenMetricsAreOpenAsBefore) {
  ServerProcess server(ModelDir(), {});
  ASSERT_TRUE(server.ok());
  const HttpResponse r = HttpGet(server.metrics_port(), "/metrics", "");
  EXPECT_EQ(r.status, 200);
  EXPECT_GE(MetricValue(r.body, "qlayer_weight_bytes", {{"layer", kLayer}}), 1);
  EXPECT_EQ(HttpGet(server.metrics_port(), "/other", "").status, 404);
}

}  // namespace
}  // namespace qlayer
