// qlayer-cli and the Python client on MoE blocks end to end: qlayer-quantize
// writes a DeepSeek-V3-style block (grouped sigmoid routing, correction bias,
// shared experts), the real qlayer-server serves it, and
//   - qlayer-cli moe with caller top-k ids / weights and with the server's
//     router writes answers that match the float64 family forward
//     (client/cli/moe_reference.h: LoadMoEBlock + Dequant + the router in
//     double, independent of the server's router and experts kernel);
//   - qlayer-cli moe --router-logits (f32 and numpy's default f64 .npy) routes
//     by the caller's logits, not the loaded gate's: the routing and the
//     answer match the service tests' float64 family reference
//     (tests/service/moe_reference_util.h, DeepseekV3TopkRouter written out);
//   - qlayer-cli verify passes on the block and fails against another
//     checkpoint of the same shape;
//   - qlayer-cli bench reports requests, experts touched and a floor;
//   - the Python client's moe_forward gives the same answers.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/moe_reference.h"
#include "client/cli/reference.h"
#include "client/npy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli/cli_process_util.h"
#include "tests/service/moe_reference_util.h"

namespace qlayer {
namespace {

using cli_testing::BuildDir;
using cli_testing::BuildProgram;
using cli_testing::MakeTempDir;
using cli_testing::ProgramResult;
using cli_testing::RemoveTree;
using cli_testing::RunProgram;
using cli_testing::ServerProcess;

constexpr char kBlock[] = "model.layers.1.mlp";
constexpr int64_t kH = 64, kE = 8;
constexpr int kTopK = 2;

bool HavePrograms() {
  return !BuildProgram("server/qlayer-server").empty() &&
         !BuildProgram("server/qlayer-quantize").empty() &&
         !BuildProgram("client/qlayer-cli").empty();
}

ProgramResult Quantize(const std::string& dir, uint64_t seed) {
  return RunProgram({BuildProgram("server/qlayer-quantize"), "--format=gptq", "--group_size=32",
                     "--sym", absl::StrCat("--seed=", seed), "--moe=deepseek_v3", "--layers_moe=1",
                     absl::StrCat("--hidden=", kH), "--intermediate=32",
                     absl::StrCat("--experts=", kE), absl::StrCat("--topk=", kTopK),
                     "--shared_intermediate=32", "--n_group=4", "--topk_group=2", "--out=" + dir});
}

class MoECliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!HavePrograms()) return;
    seed_ = cli_testing::TestSeed();
    std::printf("[ seed ] QLAYER_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed_));
    dir_ = MakeTempDir("qlayer_moe_cli");
    const ProgramResult q = Quantize(dir_ + "/ckpt", seed_);
    ASSERT_EQ(q.exit_code, 0) << q.output;
    auto server = ServerProcess::Start(dir_ + "/ckpt");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    auto ref = MoEReferenceBlock::Load(dir_ + "/ckpt", kBlock);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = ref->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete ref_;
    server_ = nullptr;
    ref_ = nullptr;
    if (!dir_.empty()) RemoveTree(dir_);
  }
  void SetUp() override {
    if (!HavePrograms()) GTEST_SKIP() << "qlayer-server / qlayer-quantize / qlayer-cli not built";
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(ref_, nullptr);
  }

  ProgramResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(),
                {BuildProgram("client/qlayer-cli"), "--server=" + server_->address()});
    return RunProgram(args);
  }
  std::string File(const std::string& name) const { return dir_ + "/" + name; }

  static Tensor RandomX(int64_t T, std::mt19937_64& rng) {
    Tensor x = Tensor::Zeros(DType::kF32, {T, kH});
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < T * kH; ++i) x.as<float>()[i] = u(rng);
    return x;
  }

  static inline uint64_t seed_ = 0;
  static inline std::string dir_;
  static inline ServerProcess* server_ = nullptr;
  static inline MoEReferenceBlock* ref_ = nullptr;
};

TEST_F(MoECliTest, MoeCommandWithCallerTopkAndServerRouting) {
  std::mt19937_64 rng(seed_ + 1);
  const int64_t T = 7;
  const Tensor x = RandomX(T, rng);
  // Caller top-k: i64 ids (numpy's default integers), f32 weights.
  Tensor ids = Tensor::Zeros(DType::kI64, {T, kTopK});
  Tensor w = Tensor::Zeros(DType::kF32, {T, kTopK});
  std::vector<int32_t> ids32;
  std::vector<double> w64;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t a = static_cast<int64_t>(rng() % kE);
    const int64_t b = (a + 1 + static_cast<int64_t>(rng() % (kE - 1))) % kE;
    for (int64_t id : {a, b}) {
      const int64_t i = static_cast<int64_t>(ids32.size());
      ids.as<int64_t>()[i] = id;
      w.as<float>()[i] = 0.25f + 0.5f * static_cast<float>(i % 3);
      ids32.push_back(static_cast<int32_t>(id));
      w64.push_back(w.as<float>()[i]);
    }
  }
  ASSERT_TRUE(WriteNpy(File("x.npy"), x.view()).ok());
  ASSERT_TRUE(WriteNpy(File("ids.npy"), ids.view()).ok());
  ASSERT_TRUE(WriteNpy(File("w.npy"), w.view()).ok());

  ProgramResult r = Cli({"moe", absl::StrCat("--layer=", kBlock), "--input=" + File("x.npy"),
                         "--topk-ids=" + File("ids.npy"), "--topk-weights=" + File("w.npy"),
                         "--output=" + File("y.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "caller top-k")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "cpu_moe_grouped")) << r.output;
  auto y = ReadNpy(File("y.npy"));
  ASSERT_TRUE(y.ok()) << y.status();
  const Tensor want = ref_->Forward(x.view(), ids32, w64);
  EXPECT_LT(RelativeError(y->view(), want.view()), 1e-2);

  // The server's router: the routing it used is written and is the family's.
  r = Cli({"moe", absl::StrCat("--layer=", kBlock), "--input=" + File("x.npy"),
           "--output=" + File("y2.npy"), "--topk-ids-out=" + File("ids_out.npy"),
           "--topk-weights-out=" + File("w_out.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "server router")) << r.output;
  auto got_ids = ReadNpy(File("ids_out.npy"));
  auto got_w = ReadNpy(File("w_out.npy"));
  auto y2 = ReadNpy(File("y2.npy"));
  ASSERT_TRUE(got_ids.ok() && got_w.ok() && y2.ok());
  ASSERT_EQ(got_ids->dtype(), DType::kI32);
  ASSERT_EQ(got_ids->shape(), (Shape{T, kTopK}));
  const std::vector<double> logits = ref_->Logits(x.view());
  ReferenceRouting route = ref_->Route(logits, T);
  for (int64_t t = 0; t < T; ++t) {
    if (route.near_tie[t]) continue;
    for (int j = 0; j < kTopK; ++j) {
      EXPECT_EQ(got_ids->as<int32_t>()[t * kTopK + j], route.ids[t * kTopK + j]) << t;
      EXPECT_NEAR(got_w->as<float>()[t * kTopK + j], route.weights[t * kTopK + j], 1e-4);
    }
  }
  std::vector<int32_t> used(got_ids->as<int32_t>(), got_ids->as<int32_t>() + T * kTopK);
  std::vector<double> used_w;
  for (int64_t i = 0; i < T * kTopK; ++i) used_w.push_back(got_w->as<float>()[i]);
  EXPECT_LT(RelativeError(y2->view(), ref_->Forward(x.view(), used, used_w).view()), 1e-2);

  // Ids without weights: refused before anything is sent.
  r = Cli({"moe", absl::StrCat("--layer=", kBlock), "--input=" + File("x.npy"),
           "--topk-ids=" + File("ids.npy"), "--output=" + File("y3.npy")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.output, "go together")) << r.output;
  // A server-side error names the problem (ids beyond E).
  ids.as<int64_t>()[3] = kE;
  ASSERT_TRUE(WriteNpy(File("bad_ids.npy"), ids.view()).ok());
  r = Cli({"moe", absl::StrCat("--layer=", kBlock), "--input=" + File("x.npy"),
           "--topk-ids=" + File("bad_ids.npy"), "--topk-weights=" + File("w.npy"),
           "--output=" + File("y4.npy")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.output, "INVALID_ARGUMENT")) << r.output;
}

TEST_F(MoECliTest, MoeCommandWithCallerRouterLogits) {
  std::mt19937_64 rng(seed_ + 3);
  const int64_t T = 16;
  const Tensor x = RandomX(T, rng);
  // Caller logits unrelated to x's own (x gate^T): the server must route by
  // these. N(0, 2): sigmoid scores spread over (0, 1), few near ties.
  Tensor logits = Tensor::Zeros(DType::kF32, {T, kE});
  Tensor logits64 = Tensor::Zeros(DType::kF64, {T, kE});
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<double> l64(static_cast<size_t>(T * kE));
  for (int64_t i = 0; i < T * kE; ++i) {
    logits.as<float>()[i] = d(rng);
    l64[i] = logits64.as<double>()[i] = logits.as<float>()[i];
  }
  ASSERT_TRUE(WriteNpy(File("rx.npy"), x.view()).ok());
  ASSERT_TRUE(WriteNpy(File("logits.npy"), logits.view()).ok());
  ASSERT_TRUE(WriteNpy(File("logits64.npy"), logits64.view()).ok());

  testing::MoEReference family(dir_ + "/ckpt", kBlock);
  ASSERT_TRUE(family.ok());
  ASSERT_EQ(family.family(), "deepseek_v3");
  ASSERT_EQ(family.E(), kE);
  const testing::RefRouting want = family.Route(l64, T);
  // The caller's logits must route differently from the gate the server
  // loaded, or this would not tell them apart.
  const testing::RefRouting own = family.Route(family.Logits(x.view()), T);
  int differ = 0;
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < kTopK; ++j) differ += want.ids[t * kTopK + j] != own.ids[t * kTopK + j];
  }
  ASSERT_GT(differ, 0) << "caller logits route like the loaded gate: pick another seed";

  std::vector<int32_t> first_ids;
  std::vector<double> first_y;
  for (const char* file : {"logits.npy", "logits64.npy"}) {
    SCOPED_TRACE(file);
    ProgramResult r =
        Cli({"moe", absl::StrCat("--layer=", kBlock), "--input=" + File("rx.npy"),
             "--router-logits=" + File(file), "--output=" + File("ry.npy"),
             "--topk-ids-out=" + File("rids.npy"), "--topk-weights-out=" + File("rw.npy")});
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "caller router logits")) << r.output;
    auto y = ReadNpy(File("ry.npy"));
    auto ids = ReadNpy(File("rids.npy"));
    auto w = ReadNpy(File("rw.npy"));
    ASSERT_TRUE(y.ok() && ids.ok() && w.ok());
    ASSERT_EQ(y->shape(), (Shape{T, kH}));
    ASSERT_EQ(ids->dtype(), DType::kI32);
    ASSERT_EQ(ids->shape(), (Shape{T, kTopK}));
    ASSERT_EQ(w->dtype(), DType::kF32);
    // The routing the server used is the family's for the caller's logits; a
    // near-tie token (f32 vs f64 may pick either) keeps the server's ids,
    // weighted the family's way.
    std::vector<int32_t> used(ids->as<int32_t>(), ids->as<int32_t>() + T * kTopK);
    std::vector<double> used_w(static_cast<size_t>(T * kTopK));
    int ties = 0;
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> fw = family.WeightsFor(l64.data() + t * kE, &used[t * kTopK]);
      ties += want.ambiguous[t];
      for (int j = 0; j < kTopK; ++j) {
        const int64_t i = t * kTopK + j;
        if (!want.ambiguous[t]) EXPECT_EQ(used[i], want.ids[i]) << "token " << t << " slot " << j;
        EXPECT_NEAR(w->as<float>()[i], fw[j], 1e-4 * std::max(1.0, std::fabs(fw[j])))
            << "token " << t << " slot " << j;
        used_w[i] = fw[j];
      }
    }
    EXPECT_LE(ties, 2) << "near ties should be rare for N(0, 2) logits";
    const std::vector<double> ref = family.Forward(x.view(), used, used_w);
    double num = 0, den = 0;
    std::vector<double> got(static_cast<size_t>(T * kH));
    for (int64_t i = 0; i < T * kH; ++i) {
      got[i] = y->as<float>()[i];
      num += (got[i] - ref[i]) * (got[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-2);
    // f64 logits are converted to f32 by the CLI: the same request, the
    // same routing and answer.
    if (first_ids.empty()) {
      first_ids = used;
      first_y = got;
    } else {
      EXPECT_EQ(used, first_ids);
      for (int64_t i = 0; i < T * kH; ++i) ASSERT_NEAR(got[i], first_y[i], 1e-6) << i;
    }
  }
}

TEST_F(MoECliTest, VerifyPassesAndCatchesAnotherCheckpoint) {
  ProgramResult r = Cli({"verify", absl::StrCat("--layer=", kBlock), "--model=" + dir_ + "/ckpt",
                         "--rows=9", "--dtype=bf16", absl::StrCat("--seed=", seed_)});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PASS")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "server router")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "caller top-k")) << r.output;

  // Same shapes, other weights: the answers cannot match.
  ProgramResult q = Quantize(dir_ + "/other", seed_ + 12345);
  ASSERT_EQ(q.exit_code, 0) << q.output;
  r = Cli({"verify", absl::StrCat("--layer=", kBlock), "--model=" + dir_ + "/other"});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "FAIL")) << r.output;
}

TEST_F(MoECliTest, BenchReportsExpertsAndFloor) {
  ProgramResult r = Cli({"bench", absl::StrCat("--layer=", kBlock), "--rows=4", "--seconds=0.5",
                         "--warmup=0.1", "--bandwidth-gbs=20", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const size_t brace = r.output.find('{');
  ASSERT_NE(brace, std::string::npos) << r.output;
  nlohmann::json j = nlohmann::json::parse(r.output.substr(brace), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.output;
  EXPECT_EQ(j["kind"], "moe");
  EXPECT_GT(j["requests"].get<int64_t>(), 0);
  const int64_t touched = j["experts_touched_p50"].get<int64_t>();
  EXPECT_GE(touched, 1);
  EXPECT_LE(touched, kE);
  EXPECT_GT(j["floor_bytes_p50"].get<double>(), 0);
  EXPECT_EQ(j["read_bandwidth_bytes_per_s"].get<double>(), 20e9);
  EXPECT_NEAR(j["floor_us_p50"].get<double>(), j["floor_bytes_p50"].get<double>() / 20e3, 1.0);
  EXPECT_TRUE(j["errors"].empty()) << j.dump();
}

TEST_F(MoECliTest, PythonClientMoeForward) {
  if (std::system("/usr/bin/python3 -c 'import grpc, numpy' 2>/dev/null") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no grpc / numpy";
  }
  const std::string source = QLAYER_SOURCE_DIR;
  const std::string desc = BuildDir() + "/client/python/qlayer_v1.desc";
  std::mt19937_64 rng(seed_ + 2);
  const int64_t T = 5;
  const Tensor x = RandomX(T, rng);
  ASSERT_TRUE(WriteNpy(File("px.npy"), x.view()).ok());
  const std::string script = absl::StrCat(
      "import numpy as np, qlayer\n"
      "c = qlayer.Client('",
      server_->address(), "')\n", "x = np.load('", File("px.npy"), "')\n",
      "y, info = c.moe_forward('", kBlock, "', x, return_routing=True, timeout=30)\n", "np.save('",
      File("py_y.npy"), "', y)\n", "np.save('", File("py_ids.npy"),
      "', np.asarray(info.topk_ids, np.int32))\n", "np.save('", File("py_w.npy"),
      "', np.asarray(info.topk_weights, np.float32))\n", "ids = np.array([[0, 5]] * ", T,
      ", np.int64)\n", "y2, _ = c.moe_forward('", kBlock,
      "', x, topk_ids=ids, topk_weights=np.full((", T, ", 2), 0.5, np.float32), timeout=30)\n",
      "np.save('", File("py_y2.npy"), "', y2)\n", "c.close()\n");
  ProgramResult r =
      RunProgram({"/usr/bin/env", "PYTHONPATH=" + source + "/client/python",
                  "QLAYER_PROTO_DESCRIPTORS=" + desc, "/usr/bin/python3", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto y = ReadNpy(File("py_y.npy"));
  auto ids = ReadNpy(File("py_ids.npy"));
  auto w = ReadNpy(File("py_w.npy"));
  auto y2 = ReadNpy(File("py_y2.npy"));
  ASSERT_TRUE(y.ok() && ids.ok() && w.ok() && y2.ok());
  ASSERT_EQ(ids->shape(), (Shape{T, kTopK}));
  std::vector<int32_t> used(ids->as<int32_t>(), ids->as<int32_t>() + T * kTopK);
  std::vector<double> used_w;
  for (int64_t i = 0; i < T * kTopK; ++i) used_w.push_back(w->as<float>()[i]);
  const ReferenceRouting route = ref_->Route(ref_->Logits(x.view()), T);
  for (int64_t t = 0; t < T; ++t) {
    if (!route.near_tie[t]) {
      EXPECT_EQ(used[t * kTopK], route.ids[t * kTopK]) << t;
      EXPECT_EQ(used[t * kTopK + 1], route.ids[t * kTopK + 1]) << t;
    }
  }
  EXPECT_LT(RelativeError(y->view(), ref_->Forward(x.view(), used, used_w).view()), 1e-2);
  std::vector<int32_t> fixed;
  for (int64_t t = 0; t < T; ++t) fixed.insert(fixed.end(), {0, 5});
  EXPECT_LT(RelativeError(y2->view(),
                          ref_->Forward(x.view(), fixed, std::vector<double>(T * 2, 0.5)).view()),
            1e-2);
}

}  // namespace
}  // namespace qlayer
