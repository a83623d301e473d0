// End to end, per checkpoint format: qlayer-quantize writes a fresh
// checkpoint, the real qlayer-server serves it on a free loopback port, and
// over the real wire ListLayers / DescribeLayer describe it and Forward's
// outputs match a float64 reference computed here from the same checkpoint
// (decoded in-process, dequantized in double).
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using namespace ::qlayer::testing;  // NOLINT(build/namespaces)

struct FormatCase {
  const char* format;
  int bits;
  int group;
  bool sym;
  bool act_order;
  const char* scale_dtype;
  const char* expect_format;       // LayerSummary.format
  const char* expect_weight_type;  // LayerSummary.weight_type
};

std::string CaseName(const ::testing::TestParamInfo<FormatCase>& info) {
  std::string s =
      absl::StrCat(info.param.format, "_", info.param.bits, "bit_g",
                   info.param.group < 0 ? std::string("chan") : absl::StrCat(info.param.group),
                   info.param.sym ? "_sym" : "_asym", info.param.act_order ? "_actorder" : "", "_",
                   info.param.scale_dtype);
  for (char& c : s) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

// Relative-error bound by activation dtype. Measured worst cases over these
// formats: ~2.6e-3 (onednn_dense, which dequantizes the weight to 16 bits
// before its GEMM; bf16 outputs round at 2^-9), ~2e-4 for the AVX-512 GEMV
// kernels with f16. The bounds leave ~1.5x headroom; a wrong group, zero
// point or packing order gives errors of 0.1 or more.
double Tolerance(DType act) { return act == DType::kBF16 ? 6e-3 : 4e-3; }

class FormatE2E : public ::testing::TestWithParam<FormatCase> {};

TEST_P(FormatE2E, ServesTheCheckpointAndMatchesTheFloat64Reference) {
  const FormatCase& c = GetParam();
  const uint64_t seed = TestSeed();
  TempDir dir;
  // Two layers: K off the 128 tile and N off 64, act-order on demand, bias.
  std::vector<std::string> args = {"--format",      c.format,
                                   "--bits",        absl::StrCat(c.bits),
                                   "--group-size",  absl::StrCat(c.group),
                                   "--scale-dtype", c.scale_dtype,
                                   "--seed",        absl::StrCat(seed),
                                   "--shape",       "model.layers.0.self_attn.q_proj=96x192",
                                   "--shape",       "model.layers.0.mlp.down_proj=160x64",
                                   "--bias"};
  if (c.sym) args.push_back("--sym");
  if (c.act_order) args.push_back("--act-order");
  ASSERT_TRUE(RunQuantize(args, dir.path()));
  std::map<std::string, QuantizedLinear> layers = LoadLayers(dir.path());
  ASSERT_EQ(layers.size(), 2u);

  ServerProcess server(dir.path(), {"--workers", "2"});
  ASSERT_TRUE(server.ok());
  auto stub = server.Stub();

  v1::ListLayersResponse list;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub->ListLayers(&ctx, v1::ListLayersRequest(), &list);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  ASSERT_EQ(list.layers_size(), 2);
  for (const v1::LayerSummary& l : list.layers()) {
    SCOPED_TRACE(l.name());
    ASSERT_TRUE(layers.count(l.name()));
    const QuantizedLinear& w = layers.at(l.name());
    EXPECT_EQ(l.kind(), "linear");
    EXPECT_EQ(l.in_features(), w.K);
    EXPECT_EQ(l.out_features(), w.N);
    EXPECT_EQ(l.format(), c.expect_format);
    EXPECT_EQ(l.weight_type(), c.expect_weight_type);
    EXPECT_EQ(l.device(), "cpu");
    EXPECT_FALSE(l.kernels().empty());

    v1::DescribeLayerRequest req;
    req.set_name(l.name());
    v1::LayerInfo info;
    grpc::ClientContext ctx;
    grpc::Status s = stub->DescribeLayer(&ctx, req, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const bool dense = std::string(c.format) == "dense";
    EXPECT_EQ(info.bits(), !dense ? c.bits : (std::string(c.scale_dtype) == "f32" ? 32 : 16));
    EXPECT_EQ(info.group_size(), dense ? 0 : (c.group < 0 ? w.K : c.group));
    EXPECT_EQ(info.has_bias(), true);
    EXPECT_EQ(info.act_order(), c.act_order);
    EXPECT_EQ(info.zero_points(), HasZeroPoints(w.wtype));
    EXPECT_EQ(info.weight_bytes(), w.weight_bytes());
    EXPECT_GT(info.prepared_bytes(), 0);
    ASSERT_GT(info.kernels_size(), 0);
    EXPECT_EQ(info.kernels(info.kernels_size() - 1).max_rows(), 0);  // last one unbounded
    for (const v1::KernelRejection& r : info.rejected()) {
      EXPECT_FALSE(r.kernel().empty());
      EXPECT_FALSE(r.reason().empty()) << r.kernel();
    }
  }

  // Every layer x activation dtype x M (1: decode; 5; 48: past the usual
  // GEMV/GEMM crossover), pipelined on one stream.
  std::mt19937_64 rng(seed);
  std::map<uint64_t, std::pair<std::string, Tensor>> sent;
  std::vector<v1::ForwardRequest> requests;
  uint64_t id = 1;
  for (const auto& [name, w] : layers) {
    for (DType dt : {DType::kF16, DType::kBF16, DType::kF32}) {
      for (int64_t m : {1, 5, 48}) {
        Tensor x = RandomInput(dt, m, w.K, rng);
        requests.push_back(MakeRequest(id, name, x.view()));
        sent.emplace(id++, std::make_pair(name, std::move(x)));
      }
    }
  }
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  std::thread writer([&] {
    for (const auto& r : requests) stream->Write(r);
    stream->WritesDone();
  });
  std::map<std::string, Reference> refs;
  for (const auto& [name, w] : layers) refs.emplace(name, Reference(w));
  int answered = 0;
  v1::ForwardResponse r;
  while (stream->Read(&r)) {
    ++answered;
    auto it = sent.find(r.request_id());
    ASSERT_NE(it, sent.end()) << "unknown id " << r.request_id();
    const auto& [name, x] = it->second;
    SCOPED_TRACE(absl::StrCat(name, " ", DTypeName(x.dtype()), " M=", x.dim(0)));
    ASSERT_EQ(r.error().code(), 0) << r.error().message();
    EXPECT_FALSE(r.kernel().empty());
    EXPECT_GE(r.batch_rows(), x.dim(0));
    EXPECT_GE(r.timing().total_us(), r.timing().compute_us());
    ConstTensorView y = OutputView(r);
    ASSERT_FALSE(y.empty());
    EXPECT_EQ(y.dtype, x.dtype());
    ASSERT_EQ(y.shape, (Shape{x.dim(0), refs.at(name).N()}));
    const double err = RelativeError(y, refs.at(name).Forward(x.view()));
    EXPECT_LT(err, Tolerance(x.dtype())) << "kernel " << r.kernel();
  }
  writer.join();
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(answered, static_cast<int>(requests.size()));
  EXPECT_EQ(server.Terminate(20), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, FormatE2E,
    ::testing::Values(
        FormatCase{"awq", 4, 32, false, false, "f16", "awq", "uint4"},
        FormatCase{"gptq", 4, 32, true, true, "f16", "gptq", "uint4b8"},
        FormatCase{"gptq", 8, 64, false, false, "bf16", "gptq", "uint8"},
        FormatCase{"gptq_v2", 4, 32, false, false, "f16", "gptq_v2", "uint4"},
        FormatCase{"compressed-tensors", 4, 32, true, false, "bf16", "compressed-tensors",
                   "uint4b8"},
        FormatCase{"compressed-tensors", 8, -1, true, false, "f16", "compressed-tensors",
                   "uint8b128"},
        FormatCase{"compressed-tensors-int", 8, 32, false, true, "bf16", "compressed-tensors",
                   "uint8"},
        FormatCase{"compressed-tensors-int", 4, -1, true, false, "f16", "compressed-tensors",
                   "uint4b8"},
        FormatCase{"auto-round-gptq", 4, 32, true, false, "f16", "auto-round:auto_gptq", "uint4b8"},
        FormatCase{"auto-round-awq", 4, 32, false, false, "f16", "auto-round:auto_awq", "uint4"},
        FormatCase{"dense", 4, 32, false, false, "bf16", "dense", "dense"}),
    CaseName);

}  // namespace
}  // namespace qlayer
