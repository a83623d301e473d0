// qlayer-cli and qlayer::Client end to end: qlayer-quantize writes a fresh
// checkpoint per format, the real qlayer-server serves it on a free loopback
// port, and the real qlayer-cli talks to it. Answers are checked against a
// float64 reference computed here from the same checkpoint (decoded with the
// checkpoint reader and dequantized element by element).
#include <signal.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/random_input.h"
#include "client/cli/reference.h"
#include "client/client.h"
#include "client/npy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/checkpoint/safetensors.h"
#include "tests/cli/cli_process_util.h"

namespace qlayer {
namespace {

using cli_testing::BuildProgram;
using cli_testing::ProgramResult;
using cli_testing::RunProgram;
using cli_testing::ServerProcess;

constexpr char kQProj[] = "model.layers.0.self_attn.q_proj";
constexpr char kDownProj[] = "model.layers.0.mlp.down_proj";

struct FormatCase {
  const char* format;
  int bits;
  int64_t group_size;
  bool sym;
  bool act_order;
  bool bias;
};

// Readable in ctest's test names (gtest_discover_tests prints GetParam()).
void PrintTo(const FormatCase& c, std::ostream* os) {
  *os << c.format << " " << c.bits << "-bit g" << c.group_size << (c.sym ? " sym" : " asym")
      << (c.act_order ? " act-order" : "") << (c.bias ? " bias" : "");
}

std::string CaseName(const ::testing::TestParamInfo<FormatCase>& info) {
  std::string name = absl::StrCat(
      info.param.format, "_", info.param.bits, "bit_g",
      info.param.group_size < 0 ? std::string("ch") : absl::StrCat(info.param.group_size),
      info.param.sym ? "_sym" : "_asym", info.param.act_order ? "_actorder" : "",
      info.param.bias ? "_bias" : "");
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

// qlayer-quantize's flags for a two-layer checkpoint in `c`'s format.
std::vector<std::string> QuantizeArgs(const FormatCase& c) {
  std::vector<std::string> args = {
      absl::StrCat("--format=", c.format), absl::StrCat("--bits=", c.bits),
      absl::StrCat("--group_size=", c.group_size),
      absl::StrCat("--shape=", kQProj, "=96x256,", kDownProj, "=64x128")};
  if (c.sym) args.push_back("--sym");
  if (c.act_order) args.push_back("--act_order");
  if (c.bias) args.push_back("--bias");
  return args;
}

// Writes that checkpoint into `dir` (the fixtures' own come from Serve).
ProgramResult Quantize(const FormatCase& c, const std::string& dir, uint64_t seed) {
  std::vector<std::string> argv = QuantizeArgs(c);
  argv.insert(argv.begin(), BuildProgram("server/qlayer-quantize"));
  argv.push_back(absl::StrCat("--seed=", seed));
  argv.push_back("--out=" + dir);
  return RunProgram(argv);
}

ProgramResult Cli(const std::string& server, std::vector<std::string> args) {
  std::vector<std::string> argv = {BuildProgram("client/qlayer-cli"), "--server=" + server};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProgram(argv, absl::Seconds(60));
}

class CliFormatTest
    : public cli_testing::ServedCheckpointTest<::testing::TestWithParam<FormatCase>> {
 protected:
  void SetUp() override {
    Serve("qlayer_cli_e2e_", QuantizeArgs(GetParam()), {"client/qlayer-cli"});
  }
};

// One server start per format (the costly part): verify in each dtype (and
// on a second layer), then forward with .npy files against the reference.
TEST_P(CliFormatTest, VerifyPassesAndForwardGivesTheReferenceAnswer) {
  const std::pair<const char*, const char*> runs[] = {
      {kQProj, "f16"}, {kQProj, "bf16"}, {kQProj, "f32"}, {kDownProj, "f16"}};
  for (const auto& [layer, dtype] : runs) {
    {
      const ProgramResult r = Cli(
          server_->address(), {"verify", "--layer", layer, "--model", dir_ + "/model", "--rows=5",
                               absl::StrCat("--dtype=", dtype), absl::StrCat("--seed=", seed_)});
      EXPECT_EQ(r.exit_code, 0) << layer << " " << dtype << "\n" << r.output << server_->Log();
      EXPECT_TRUE(absl::StrContains(r.output, "PASS")) << r.output;
    }
  }

  auto w = LoadReferenceLayer(dir_ + "/model", kQProj);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor x = RandomActivations(DType::kF16, 3, w->K, seed_);
  ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x.view()).ok());
  // Poison: a stale output file must be replaced, not reused.
  ASSERT_TRUE(WriteNpy(dir_ + "/y.npy", Tensor::Zeros(DType::kF16, {3, w->N}).view()).ok());
  const ProgramResult r = Cli(server_->address(), {"forward", "--layer", kQProj, "--input",
                                                   dir_ + "/x.npy", "--output", dir_ + "/y.npy"});
  ASSERT_EQ(r.exit_code, 0) << r.output << server_->Log();
  EXPECT_TRUE(absl::StrContains(r.output, "kernel")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "compute")) << r.output;
  auto y = ReadNpy(dir_ + "/y.npy");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->dtype(), DType::kF16);
  auto ref = ReferenceForward(*w, x.view());
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_LT(RelativeError(y->view(), ref->view()), 5e-3) << r.output;
}

// AWQ is asymmetric 4-bit only; GPTQ v1 and the rest take both; act-order
// (g_idx) exists for GPTQ and compressed-tensors.
INSTANTIATE_TEST_SUITE_P(
    Formats, CliFormatTest,
    ::testing::Values(FormatCase{"awq", 4, 64, false, false, false},
                      FormatCase{"gptq", 4, 64, true, false, false},
                      FormatCase{"gptq", 4, 32, false, true, true},
                      FormatCase{"gptq", 8, 64, true, false, false},
                      FormatCase{"gptq_v2", 4, 64, false, false, false},
                      FormatCase{"compressed-tensors", 4, 64, true, false, false},
                      FormatCase{"compressed-tensors", 8, -1, true, false, false},
                      FormatCase{"compressed-tensors", 4, 32, false, true, false},
                      FormatCase{"auto-round-gptq", 4, 64, true, false, false},
                      FormatCase{"auto-round-awq", 4, 64, false, false, false},
                      FormatCase{"dense", 4, 64, false, false, true}),
    CaseName);

// One server on a GPTQ checkpoint for the remaining tests.
class CliServerTest : public cli_testing::ServedCheckpointTest<> {
 protected:
  void SetUp() override {
    Serve("qlayer_cli_srv_", QuantizeArgs({"gptq", 4, 64, true, false, false}),
          {"client/qlayer-cli"});
  }
};

TEST_F(CliServerTest, ListAndDescribeNameTheLayersAndKernels) {
  ProgramResult r = Cli(server_->address(), {"list"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, kQProj)) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, kDownProj)) << r.output;
  r = Cli(server_->address(), {"describe", kQProj, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j.value("in_features", ""), "256");  // int64 is a JSON string in proto3 JSON
  EXPECT_EQ(j.value("out_features", ""), "96");
  EXPECT_FALSE(j["kernels"].empty()) << r.output;
  r = Cli(server_->address(), {"describe", "no.such.layer"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.output, "NOT_FOUND")) << r.output;
}

TEST_F(CliServerTest, VerifyFailsAgainstADifferentCheckpoint) {
  // Same shapes and format, other random weights: verify must say FAIL.
  const ProgramResult q = Quantize({"gptq", 4, 64, true, false, false}, dir_ + "/other", seed_ + 1);
  ASSERT_EQ(q.exit_code, 0) << q.output;
  const ProgramResult r = Cli(
      server_->address(), {"verify", "--layer", kQProj, "--model", dir_ + "/other", "--rows=2"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "FAIL")) << r.output;
}

TEST_F(CliServerTest, BenchJsonParsesAndReportsTheServerAndTheEcho) {
  const ProgramResult r =
      Cli(server_->address(), {"bench", "--layer", kQProj, "--rows=2", "--streams=2",
                               "--seconds=0.4", "--warmup=0.1", "--json", "--echo"});
  ASSERT_EQ(r.exit_code, 0) << r.output << server_->Log();
  const size_t brace = r.output.find('{');
  ASSERT_NE(brace, std::string::npos) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(brace), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_GT(j["requests"].get<int64_t>(), 0);
  EXPECT_GT(j["requests_per_s"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(j["rows_per_s"].get<double>(), 2 * j["requests_per_s"].get<double>());
  EXPECT_GT(j["latency_us"]["p50"].get<int64_t>(), 0);
  EXPECT_GE(j["latency_us"]["p99"].get<int64_t>(), j["latency_us"]["p50"].get<int64_t>());
  EXPECT_GE(j["server_compute_us"]["p50"].get<int64_t>(), 0);
  EXPECT_FALSE(j["kernel"].get<std::string>().empty());
  EXPECT_TRUE(j["errors"].empty()) << r.output;
  EXPECT_GT(j["echo"]["requests"].get<int64_t>(), 0);
  EXPECT_EQ(j["echo"]["kernels"].begin().key(), "echo");
  EXPECT_GT(j["overhead_vs_echo_p50"].get<double>(), 0);
}

TEST_F(CliServerTest, ForwardWritesBf16AsSafetensorsAndWidensItForNpy) {
  auto w = LoadReferenceLayer(dir_ + "/model", kDownProj);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor x = RandomActivations(DType::kF32, 2, w->K, seed_);
  ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x.view()).ok());
  ProgramResult r =
      Cli(server_->address(), {"forward", "--layer", kDownProj, "--input", dir_ + "/x.npy",
                               "--output", dir_ + "/y.safetensors", "--dtype=bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto file = SafetensorsFile::Open(dir_ + "/y.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const ConstTensorView* y = (*file)->Find("output");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->dtype, DType::kBF16);
  // The reference sees the input as the server did: rounded to bf16.
  auto x_bf16 = Tensor::Zeros(DType::kBF16, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    StoreFromDouble(x_bf16.data(), DType::kBF16, i, LoadAsDouble(x.data(), x.dtype(), i));
  }
  auto ref = ReferenceForward(*w, x_bf16.view());
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_LT(RelativeError(*y, ref->view()), 1e-2);
  // The same answer into .npy comes back as f32, exactly the bf16 values.
  r = Cli(server_->address(), {"forward", "--layer", kDownProj, "--input", dir_ + "/y.safetensors",
                               "--output", dir_ + "/z.npy"});
  EXPECT_NE(r.exit_code, 0) << "y has N columns, not K: " << r.output;  // wrong K is refused
  r = Cli(server_->address(), {"forward", "--layer", kDownProj, "--input", dir_ + "/x.npy",
                               "--output", dir_ + "/z.npy", "--dtype=bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "widened")) << r.output;
  auto z = ReadNpy(dir_ + "/z.npy");
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->dtype(), DType::kF32);
  EXPECT_LT(RelativeError(z->view(), ref->view()), 1e-2);
}

TEST_F(CliServerTest, ForwardOfAnUnknownLayerFails) {
  const Tensor x = RandomActivations(DType::kF32, 1, 256, seed_);
  ASSERT_TRUE(WriteNpy(dir_ + "/x.npy", x.view()).ok());
  const ProgramResult r = Cli(server_->address(), {"forward", "--layer", "no.such.layer", "--input",
                                                   dir_ + "/x.npy", "--output", dir_ + "/y.npy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(r.output, "NOT_FOUND")) << r.output;
}

TEST_F(CliServerTest, ClientDeadlineAndStreamSurvival) {
  auto client = *Client::Connect(server_->address());
  auto w = LoadReferenceLayer(dir_ + "/model", kQProj);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor x = RandomActivations(DType::kF16, 2, w->K, seed_);
  // A deadline nobody can meet ends the call with DEADLINE_EXCEEDED (from
  // the client's timer or the server's queue, whichever is first) ...
  CallOptions hurried;
  hurried.timeout = absl::Microseconds(1);
  EXPECT_EQ(client->Forward(kQProj, x.view(), hurried).get().status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // ... and the stream stays usable.
  CallOptions patient;
  patient.timeout = absl::Seconds(30);
  auto r = client->Forward(kQProj, x.view(), patient).get();
  ASSERT_TRUE(r.ok()) << r.status();
  auto ref = ReferenceForward(*w, x.view());
  EXPECT_LT(RelativeError(r->output.view(), ref->view()), 5e-3);
  EXPECT_FALSE(r->kernel.empty());
  EXPECT_GE(r->latency_us, r->total_us);
  EXPECT_EQ(client->streams_opened(), 1);
}

TEST_F(CliServerTest, ClientReconnectsAfterServerRestart) {
  auto client = *Client::Connect(server_->address());
  auto w = LoadReferenceLayer(dir_ + "/model", kDownProj);
  ASSERT_TRUE(w.ok()) << w.status();
  const Tensor x = RandomActivations(DType::kF16, 1, w->K, seed_);
  auto ref = ReferenceForward(*w, x.view());
  CallOptions options;
  options.timeout = absl::Seconds(30);
  auto first = client->Forward(kDownProj, x.view(), options).get();
  ASSERT_TRUE(first.ok()) << first.status();
  // The server dies (no drain): the open stream breaks; calls fail fast.
  const std::string address = server_->address();
  server_->Stop(SIGKILL);
  auto down = client->Forward(kDownProj, x.view(), options).get();
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable) << down.status();
  // A new server on the same port: the next calls open a new stream.
  auto again = ServerProcess::Start(dir_ + "/model", address);
  ASSERT_TRUE(again.ok()) << again.status();
  server_ = *std::move(again);
  absl::StatusOr<ForwardResult> r = absl::UnknownError("no try");
  for (int i = 0; i < 100 && !r.ok(); ++i) {
    r = client->Forward(kDownProj, x.view(), options).get();
    if (!r.ok()) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(RelativeError(r->output.view(), ref->view()), 5e-3);
  EXPECT_GE(client->streams_opened(), 2);
}

}  // namespace
}  // namespace qlayer
