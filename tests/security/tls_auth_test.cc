// TLS, mutual TLS and bearer tokens on the gRPC port of a real qlayer-server
// process: who gets through, with which status, and that what gets through
// computes the right answer (vs the float64 reference of the checkpoint).
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "client/client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/security/security_test_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::security_testing;  // NOLINT(build/namespaces)
using ::qlayer::testing::LoadLayers;
using ::qlayer::testing::MakeRequest;
using ::qlayer::testing::RandomInput;
using ::qlayer::testing::Reference;
using ::qlayer::testing::RelativeError;
using ::qlayer::testing::ServerProcess;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::TestSeed;

std::vector<std::string> TlsFlags(bool mutual) {
  std::vector<std::string> flags = {"--tls-cert", Cert("server.pem"), "--tls-key",
                                    Cert("server.key")};
  if (mutual) {
    flags.push_back("--tls-client-ca");
    flags.push_back(Cert("ca.pem"));
  }
  return flags;
}

// ListLayers on `channel` within a short deadline: the status only.
grpc::Status TryList(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::LayerService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListLayersRequest req;
  v1::ListLayersResponse resp;
  return stub->ListLayers(&ctx, req, &resp);
}

// One Forward through qlayer::Client: its status, and (when OK) the error
// relative to the float64 reference.
absl::StatusOr<double> ForwardError(const std::string& address, const ChannelSecurity& security) {
  static const std::map<std::string, QuantizedLinear> layers = LoadLayers(ModelDir());
  const Reference ref(layers.at(kLayer));
  std::mt19937_64 rng(TestSeed());
  const Tensor x = RandomInput(DType::kF16, 5, kK, rng);
  ClientOptions options;
  options.security = security;
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Connect(address, options);
  if (!client.ok()) return client.status();
  CallOptions call;
  call.timeout = absl::Seconds(10);
  absl::StatusOr<ForwardResult> y = (*client)->Forward(kLayer, x.view(), call).get();
  if (!y.ok()) return y.status();
  return RelativeError(y->output.view(), ref.Forward(x.view()));
}

TEST(TlsTest, PlaintextClientIsRefusedTlsClientComputesTheReference) {
  ServerProcess server(ModelDir(), TlsFlags(/*mutual=*/false));
  ASSERT_TRUE(server.ok());
  // A plaintext client speaks HTTP/2 cleartext into a TLS handshake.
  const grpc::Status plain = TryList(server.Channel());
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE) << plain.error_message();
  // Trusting an unrelated CA: the server's certificate does not verify.
  EXPECT_EQ(TryList(SecureChannel(server.address(), Tls("other_ca.pem"))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The right CA: served, and the answer is the layer's.
  EXPECT_TRUE(TryList(SecureChannel(server.address(), Tls())).ok());
  absl::StatusOr<double> err = ForwardError(server.address(), Tls());
  ASSERT_TRUE(err.ok()) << err.status();
  EXPECT_LT(*err, 4e-3);
}

TEST(TlsTest, TheNameInTheCertificateIsChecked) {
  ServerProcess server(ModelDir(), TlsFlags(/*mutual=*/false));
  ASSERT_TRUE(server.ok());
  // The certificate names 127.0.0.1, ::1 and localhost, nothing else.
  ChannelSecurity wrong_name = Tls();
  wrong_name.server_name = "qlayer.example.com";
  EXPECT_EQ(TryList(SecureChannel(server.address(), wrong_name)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ChannelSecurity localhost = Tls();
  localhost.server_name = "localhost";
  EXPECT_TRUE(TryList(SecureChannel(server.address(), localhost)).ok());
}

TEST(MutualTlsTest, ClientsNeedACertificateFromTheClientCa) {
  ServerProcess server(ModelDir(), TlsFlags(/*mutual=*/true));
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(TryList(SecureChannel(server.address(), Tls())).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "no client certificate";
  EXPECT_EQ(TryList(SecureChannel(server.address(), Tls("ca.pem", "other_client"))).error_code(),
            grpc::StatusCode::UNAVAILABLE)
      << "a client certificate from another CA";
  EXPECT_TRUE(TryList(SecureChannel(server.address(), Tls("ca.pem", "client"))).ok());
  absl::StatusOr<double> err = ForwardError(server.address(), Tls("ca.pem", "client"));
  ASSERT_TRUE(err.ok()) << err.status();
  EXPECT_LT(*err, 4e-3);
}

class TokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two accepted tokens (a rotation), a comment and blank lines.
    std::mt19937_64 rng(TestSeed());
    token_a_ = absl::StrCat("qlt-", rng(), "-a");
    token_b_ = absl::StrCat("qlt-", rng(), "-b");
    const std::string file =
        WriteSecret(secrets_.path(), "tokens",
                    absl::StrCat("# accepted tokens\n", token_a_, "\n\n  ", token_b_, "  \n"));
    std::vector<std::string> flags = TlsFlags(/*mutual=*/false);
    flags.insert(flags.end(), {"--auth-token-file", file});
    server_ = std::make_unique<ServerProcess>(ModelDir(), flags);
    ASSERT_TRUE(server_->ok());
  }

  TempDir secrets_;
  std::string token_a_, token_b_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(TokenTest, MissingOrWrongTokenIsUnauthenticatedOnEveryMethod) {
  for (const std::string& token :
       {std::string(), token_a_ + "x", token_a_.substr(0, token_a_.size() - 1), token_b_ + token_a_,
        std::string("qlt-0")}) {
    SCOPED_TRACE(token.empty() ? "no token" : "token " + token);
    auto channel = SecureChannel(server_->address(), Tls("ca.pem", "", token));
    const grpc::Status list = TryList(channel);
    EXPECT_EQ(list.error_code(), grpc::StatusCode::UNAUTHENTICATED) << list.error_message();
    // The message never echoes what was sent.
    if (!token.empty()) EXPECT_EQ(list.error_message().find(token), std::string::npos);

    auto stub = v1::LayerService::NewStub(channel);
    grpc::ClientContext describe_ctx;
    v1::DescribeLayerRequest describe;
    describe.set_name(kLayer);
    v1::LayerInfo info;
    EXPECT_EQ(stub->DescribeLayer(&describe_ctx, describe, &info).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);

    // A Forward stream ends UNAUTHENTICATED without an answer.
    std::mt19937_64 rng(TestSeed());
    const Tensor x = RandomInput(DType::kF16, 2, kK, rng);
    grpc::ClientContext forward_ctx;
    forward_ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto stream = stub->Forward(&forward_ctx);
    stream->Write(MakeRequest(1, kLayer, x.view()));
    stream->WritesDone();
    v1::ForwardResponse answer;
    EXPECT_FALSE(stream->Read(&answer));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
}

TEST_F(TokenTest, EitherAcceptedTokenWorksAndComputesTheReference) {
  for (const std::string& token : {token_a_, token_b_}) {
    EXPECT_TRUE(TryList(SecureChannel(server_->address(), Tls("ca.pem", "", token))).ok());
    absl::StatusOr<double> err = ForwardError(server_->address(), Tls("ca.pem", "", token));
    ASSERT_TRUE(err.ok()) << err.status();
    EXPECT_LT(*err, 4e-3);
  }
}

TEST_F(TokenTest, HealthChecksNeedNoToken) {
  // Kubernetes' gRPC probe sends no credentials.
  auto health = grpc::health::v1::Health::NewStub(SecureChannel(server_->address(), Tls()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s = health->Check(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(ClientSecurityTest, ATokenWithoutTlsIsRefusedNotSentInTheClear) {
  ChannelSecurity plain;
  plain.bearer_token = "secret";
  absl::StatusOr<std::unique_ptr<Client>> client =
      Client::Connect("127.0.0.1:1", {.security = plain});
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client.status().ToString().find("secret"), std::string::npos);
}

}  // namespace
}  // namespace qlayer
