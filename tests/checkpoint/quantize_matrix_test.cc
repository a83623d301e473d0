// The end-to-end matrix (issue 3 "Tests"): for every format x bits x group
// size (incl. -1) x sym/asym x act-order the format allows, the real
// qlayer-quantize binary writes a checkpoint; Checkpoint::Open +
// ListLinearLayers + LoadLinearLayer read it back; then
//   1. the loaded canonical equals, tensor for tensor, what the tool handed
//      the encoder (its --dump-canonical file): decoder == encoder^-1;
//   2. the canonical dequantizes to within one scale step of the dense
//      weights the tool started from (the quantizer did quantize them);
//   3. every registered CPU kernel that accepts the layer matches a float64
//      reference y = x W^T + b on random x, M in {1, 3, 16, 67}, for f16,
//      bf16 and f32 activations, without writing outside y.
// Shapes keep K and N off multiples of 256 (and N odd where the format does
// not pack along N) and small, so the whole matrix runs in seconds.
#include <cmath>
#include <cstring>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/registry.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/safetensors.h"
#include "server/tools/quantize_tool.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RunCommand;
using ::qlayer::testing::TempDir;

struct MatrixCase {
  std::string format;
  int bits = 4;
  int64_t group = 32;
  bool sym = false;
  bool act_order = false;
  DType scale_dtype = DType::kF16;
  bool bias = false;
  bool sharded = false;
};

std::string CaseName(const ::testing::TestParamInfo<MatrixCase>& info) {
  const MatrixCase& c = info.param;
  std::string f = c.format;
  for (char& ch : f) {
    if (ch == '-') ch = '_';
  }
  if (c.format == "dense") return absl::StrCat(f, "_", DTypeName(c.scale_dtype));
  return absl::StrCat(f, "_b", c.bits, "_g", c.group < 0 ? "ch" : std::to_string(c.group),
                      c.sym ? "_sym" : "_asym", c.act_order ? "_act" : "", "_s",
                      DTypeName(c.scale_dtype), c.bias ? "_bias" : "", c.sharded ? "_sharded" : "");
}

void PrintTo(const MatrixCase& c, std::ostream* os) {
  *os << CaseName(::testing::TestParamInfo<MatrixCase>(c, 0));
}

std::vector<MatrixCase> AllCases() {
  struct FormatRule {
    const char* name;
    std::vector<int> bits;
    bool act_order;  // the format can express act-order
  };
  const FormatRule rules[] = {
      {"gptq", {4, 8}, true},
      {"gptq_v2", {4, 8}, true},
      {"compressed-tensors", {4, 8}, true},
      {"compressed-tensors-int", {4, 8}, true},
      {"awq", {4}, false},
      {"auto-round-gptq", {4, 8}, false},
      {"auto-round-awq", {4}, false},
  };
  const DType scale_dtypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  std::vector<MatrixCase> cases;
  int i = 0;
  for (const FormatRule& r : rules) {
    for (int bits : r.bits) {
      for (int64_t group : {int64_t{32}, int64_t{128}, int64_t{-1}}) {
        for (bool sym : {true, false}) {
          for (bool act : {false, true}) {
            if (act && !r.act_order) continue;
            MatrixCase c;
            c.format = r.name;
            c.bits = bits;
            c.group = group;
            c.sym = sym;
            c.act_order = act;
            // Spread scale dtypes, bias and sharding over the matrix rather
            // than multiplying it.
            c.scale_dtype = scale_dtypes[i % 3];
            c.bias = (i / 3) % 2 == 0;
            c.sharded = i % 4 == 1;
            cases.push_back(c);
            ++i;
          }
        }
      }
    }
  }
  for (DType d : scale_dtypes) {
    MatrixCase c;
    c.format = "dense";
    c.scale_dtype = d;
    c.bias = d != DType::kBF16;
    c.sharded = d == DType::kF32;
    cases.push_back(c);
  }
  return cases;
}

// Independent expectations for a case.
CheckpointFormat ExpectedFormat(const std::string& f) {
  if (f == "gptq" || f == "auto-round-gptq") return CheckpointFormat::kGptq;
  if (f == "gptq_v2") return CheckpointFormat::kGptqV2;
  if (f == "awq" || f == "auto-round-awq") return CheckpointFormat::kAwq;
  if (f == "compressed-tensors") return CheckpointFormat::kCtPackQuantized;
  if (f == "compressed-tensors-int") return CheckpointFormat::kCtIntQuantized;
  return CheckpointFormat::kDense;
}

WeightType ExpectedWType(const MatrixCase& c) {
  if (c.format == "dense") return WeightType::kDense;
  if (c.bits == 4) return c.sym ? WeightType::kUint4b8 : WeightType::kUint4;
  return c.sym ? WeightType::kUint8b128 : WeightType::kUint8;
}

struct LayerShape {
  std::string name;
  int64_t N, K;
};

// Two layers per checkpoint. K: a multiple of the group and the pack factor,
// not of 256. N: a multiple of 8 where the format packs along N (GPTQ qzeros,
// AWQ), odd otherwise.
std::vector<LayerShape> ShapesFor(const MatrixCase& c) {
  const bool packs_n = !absl::StartsWith(c.format, "compressed-tensors") && c.format != "dense";
  int64_t k2 = 200;
  if (c.group == 32) k2 = 224;
  if (c.group == 128) k2 = 640;
  if (c.format == "dense")
    return {{"model.layers.0.mlp.down_proj", 45, 77}, {"model.layers.0.self_attn.q_proj", 67, 129}};
  return {{"model.layers.0.mlp.down_proj", packs_n ? 40 : 45, k2},
          {"model.layers.0.self_attn.q_proj", packs_n ? 72 : 67, 384}};
}

// Error allowed for one kernel's output, measured as ||y - round(ref)|| over
// ||ref||: round(ref) is what an exact kernel writes in the output dtype, so
// only the kernel's own arithmetic counts. A kernel that keeps its weight in
// bf16 (onednn_dense: 8 significant bits per weight) and rounds activations
// to bf16 gets the per-product bound instead: the numerator over
// ||sum_k |x||w| + |b|||.
struct Bound {
  double tol;
  bool per_weight;
};
Bound BoundFor(absl::string_view kernel, DType act, const QuantizedLinear& w) {
  const DType weight_dtype = w.wtype == WeightType::kDense ? w.dense.dtype() : w.scales.dtype();
  if (absl::StrContains(kernel, "onednn") && weight_dtype != DType::kF32) return {4e-3, true};
  // A kernel whose float sum lands a hair off the exact one may round an
  // output to the neighbouring value: one bf16 ulp is 2^-8 of it, and in these
  // 40-row layers one such output alone reached 2.16e-3 of ||ref||
  // (cpu_reference, compressed-tensors 8-bit, seed 8756533739096).
  if (act == DType::kBF16) return {4e-3, false};
  return {act == DType::kF32 ? 1e-4 : 2e-3, false};
}

double RoundTo(DType t, double v) {
  uint64_t storage = 0;
  StoreFromDouble(&storage, t, 0, v);
  return LoadAsDouble(&storage, t, 0);
}

class QuantizeMatrixTest : public ::testing::TestWithParam<MatrixCase> {};

TEST_P(QuantizeMatrixTest, WriteLoadCompute) {
  const MatrixCase& c = GetParam();
  const uint64_t seed = testing::TestSeed();
  std::mt19937_64 rng(seed);
  TempDir dir;
  const std::string ckpt_dir = dir.file("ckpt");
  const std::string dump = dir.file("canonical.safetensors");
  const std::vector<LayerShape> shapes = ShapesFor(c);

  // 1. The real tool writes the checkpoint.
  std::vector<std::string> argv = {testing::QuantizeBinary(),
                                   "--format",
                                   c.format,
                                   "--bits",
                                   std::to_string(c.bits),
                                   "--group-size",
                                   std::to_string(c.group),
                                   "--scale-dtype",
                                   std::string(DTypeName(c.scale_dtype)),
                                   "--seed",
                                   std::to_string(seed),
                                   "--out",
                                   ckpt_dir,
                                   "--dump-canonical",
                                   dump};
  if (c.sym) argv.push_back("--sym");
  if (c.act_order) argv.push_back("--act-order");
  if (c.bias) argv.push_back("--bias");
  if (c.sharded) argv.insert(argv.end(), {"--shard-bytes", "3000"});
  for (const LayerShape& s : shapes) {
    argv.insert(argv.end(), {"--shape", absl::StrCat(s.name, "=", s.N, "x", s.K)});
  }
  const testing::CommandResult run = RunCommand(argv);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_THAT(run.output, ::testing::HasSubstr(absl::StrCat("seed ", seed)));

  // 2. Load it the way the server does.
  auto ckpt = Checkpoint::Open(ckpt_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  if (c.sharded) {
    EXPECT_GT((*ckpt)->WeightFiles().size(), 1u);
  }
  auto qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  auto layers = ListLinearLayers(**ckpt, *qc);
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), shapes.size());

  auto canon = SafetensorsFile::Open(dump);
  ASSERT_TRUE(canon.ok()) << canon.status();

  for (size_t li = 0; li < shapes.size(); ++li) {
    const LayerShape& shape = shapes[li];
    const LinearLayerEntry& entry = (*layers)[li];
    SCOPED_TRACE(shape.name);
    ASSERT_EQ(entry.name, shape.name);
    EXPECT_EQ(entry.scheme.format, ExpectedFormat(c.format));
    if (c.format != "dense") {
      EXPECT_EQ(entry.scheme.bits, c.bits);
      EXPECT_EQ(entry.scheme.group_size, c.group);
      EXPECT_EQ(entry.scheme.sym, c.sym);
      EXPECT_EQ(entry.scheme.act_order, c.act_order);
    }
    auto loaded = LoadLinearLayer(**ckpt, entry);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const QuantizedLinear& w = *loaded;
    ASSERT_TRUE(w.Validate().ok()) << w.Validate();
    EXPECT_EQ(w.K, shape.K);
    EXPECT_EQ(w.N, shape.N);
    EXPECT_EQ(w.wtype, ExpectedWType(c));
    if (w.wtype != WeightType::kDense) {
      EXPECT_EQ(w.group_size, c.group == -1 ? shape.K : c.group);
      EXPECT_EQ(w.scales.dtype(), c.scale_dtype);
    } else {
      EXPECT_EQ(w.dense.dtype(), c.scale_dtype);
    }
    EXPECT_EQ(w.bias.empty(), !c.bias);

    // 2a. Exactly the encoder's input.
    auto meta = nlohmann::json::parse((*canon)->metadata().at(CanonicalDumpKey(shape.name)));
    EXPECT_EQ(meta["wtype"], std::string(WeightTypeName(w.wtype)));
    EXPECT_EQ(meta["group_size"], w.group_size);
    auto same = [&](const char* role, const Tensor& got) {
      const ConstTensorView* want = (*canon)->Find(absl::StrCat(shape.name, ".", role));
      if (want == nullptr) {
        EXPECT_TRUE(got.empty()) << role << " appeared from nowhere";
        return;
      }
      EXPECT_TRUE(SameTensor(got.view(), *want)) << role << " differs from the encoder's input";
    };
    same("qweight", w.qweight);
    same("scales", w.scales);
    same("zeros", w.zeros);
    same("bias", w.bias);
    same("dense", w.dense);
    const ConstTensorView* want_gidx = (*canon)->Find(absl::StrCat(shape.name, ".g_idx"));
    if (want_gidx != nullptr) {
      EXPECT_TRUE(SameTensor(w.g_idx.view(), *want_gidx)) << "g_idx differs";
    } else if (!w.g_idx.empty()) {
      for (int64_t k = 0; k < w.K; ++k) {
        ASSERT_EQ(w.g_idx.as<int32_t>()[k], k / w.group_size) << "g_idx not trivial at " << k;
      }
    }
    // Act-order with more than one group must really scatter rows.
    if (c.act_order && w.group_size < w.K) {
      ASSERT_FALSE(w.g_idx.empty()) << "act-order lost its g_idx";
      bool trivial = true;
      for (int64_t k = 0; k < w.K; ++k) trivial &= w.g_idx.as<int32_t>()[k] == k / w.group_size;
      EXPECT_FALSE(trivial);
    }

    // 2b. Within one quantization step of the source weights.
    const ConstTensorView* original = (*canon)->Find(absl::StrCat(shape.name, ".original"));
    ASSERT_NE(original, nullptr);
    ASSERT_EQ(original->dtype, DType::kF32);
    int64_t far = 0;
    // Relative half-ulp of the scale (or dense weight) dtype.
    const double unit = c.scale_dtype == DType::kBF16  ? 0x1p-8
                        : c.scale_dtype == DType::kF16 ? 0x1p-11
                                                       : 0x1p-24;
    const double maxq = (1 << c.bits) - 1;
    for (int64_t n = 0; n < w.N; ++n) {
      for (int64_t k = 0; k < w.K; ++k) {
        // A view into a .safetensors file is aligned only to the byte: the
        // tensors before it decide its offset (UBSan: misaligned float load).
        float src_f;
        std::memcpy(&src_f, original->as<char>() + (n * w.K + k) * sizeof(float), sizeof(float));
        const double src = src_f;
        const double got = w.Dequant(k, n);
        double bound;
        if (w.wtype == WeightType::kDense) {
          // Half an ulp of the stored dtype, plus f16's subnormal spacing.
          bound = std::fabs(src) * unit + 0x1p-25;
        } else {
          // RTN: half a step from rounding, plus at a range end (where q is
          // clamped) another half step and the scale's own rounding, which
          // maxq steps amplify.
          const double s = LoadAsDouble(w.scales.data(), w.scales.dtype(), w.group_of(k) * w.N + n);
          bound = s * (1.0 + maxq * unit) * (1 + 1e-9);
        }
        if (std::fabs(got - src) > bound && ++far <= 3) {
          ADD_FAILURE() << "w[" << k << "][" << n << "] = " << got << " but source " << src
                        << " (bound " << bound << ")";
        }
      }
    }
    EXPECT_EQ(far, 0);

    // 3. Every CPU kernel against float64: each prepared once, then fed the
    // same x per (activation dtype, M) as the reference.
    std::vector<double> wd(static_cast<size_t>(w.K * w.N));
    for (int64_t k = 0; k < w.K; ++k) {
      for (int64_t n = 0; n < w.N; ++n) wd[k * w.N + n] = w.Dequant(k, n);
    }
    const Device cpu;
    struct Prepared {
      const KernelFactory* factory;
      std::unique_ptr<LinearKernel> kernel;
    };
    std::vector<Prepared> kernels;
    for (const KernelFactory* f : RegisteredLinearKernels()) {
      if (f->backend != Backend::kCpu || absl::StartsWith(f->name, "test_")) continue;
      Prepared p{f, f->create()};
      ASSERT_NE(p.kernel, nullptr) << f->name;
      // A kernel that cannot take the layer may refuse Prepare too; only the
      // ones whose can_implement accepts are run below.
      if (!p.kernel->Prepare(w, cpu).ok()) p.kernel.reset();
      kernels.push_back(std::move(p));
    }
    int ran = 0;
    std::set<std::string> ran_names;
    bool reference_ran = false;
    for (DType act : {DType::kF16, DType::kBF16, DType::kF32}) {
      const LinearSpec spec = LinearSpec::Of(w, act);
      for (int64_t M : {1, 3, 16, 67}) {
        Tensor x = Tensor::Zeros(act, {M, w.K});
        std::uniform_real_distribution<double> uni(-1.0, 1.0);
        std::vector<double> xd(static_cast<size_t>(M * w.K));
        for (int64_t i = 0; i < M * w.K; ++i) {
          StoreFromDouble(x.data(), act, i, uni(rng));
          xd[i] = LoadAsDouble(x.data(), act, i);  // the reference sees x as stored
        }
        std::vector<double> ref(static_cast<size_t>(M * w.N)), mag(ref.size());
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t n = 0; n < w.N; ++n) {
            double r = 0, a = 0;
            if (!w.bias.empty()) {
              r = LoadAsDouble(w.bias.data(), w.bias.dtype(), n);
              a = std::fabs(r);
            }
            for (int64_t k = 0; k < w.K; ++k) {
              const double p = xd[m * w.K + k] * wd[k * w.N + n];
              r += p;
              a += std::fabs(p);
            }
            ref[m * w.N + n] = r;
            mag[m * w.N + n] = a;
          }
        }
        for (Prepared& p : kernels) {
          const absl::Status can = p.factory->can_implement(spec, cpu);
          if (!can.ok()) {
            EXPECT_NE(p.factory->name, "cpu_reference")
                << "cpu_reference must take every layer: " << can;
            continue;
          }
          SCOPED_TRACE(absl::StrCat(p.factory->name, " x ", DTypeName(act), " M=", M));
          ASSERT_NE(p.kernel, nullptr)
              << "accepted the layer but Prepare failed: " << p.factory->create()->Prepare(w, cpu);
          // Output plus guard elements, all poisoned (0xFF.. is NaN in every
          // float type).
          constexpr int64_t kGuard = 64;
          Tensor ybuf = Tensor::Zeros(act, {M * w.N + kGuard});
          std::memset(ybuf.data(), 0xFF, ybuf.nbytes());
          TensorView y{act, {M, w.N}, ybuf.data()};
          ExecContext ctx;
          const absl::Status fwd = p.kernel->Forward(x.view(), y, ctx);
          ASSERT_TRUE(fwd.ok()) << fwd;
          const auto* guard = static_cast<const unsigned char*>(ybuf.data()) +
                              static_cast<size_t>(M * w.N) * DTypeSize(act);
          for (size_t b = 0; b < kGuard * DTypeSize(act); ++b) {
            ASSERT_EQ(guard[b], 0xFF) << "wrote past y";
          }
          const Bound bound = BoundFor(p.factory->name, act, w);
          double num = 0, den = 0;
          for (int64_t i = 0; i < M * w.N; ++i) {
            const double got = LoadAsDouble(y.data, act, i);
            ASSERT_TRUE(std::isfinite(got)) << "y[" << i / w.N << "][" << i % w.N << "]";
            const double d = got - RoundTo(act, ref[i]);
            num += d * d;
            den += bound.per_weight ? mag[i] * mag[i] : ref[i] * ref[i];
          }
          EXPECT_LE(std::sqrt(num / den), bound.tol) << (bound.per_weight ? "(per-weight)" : "");
          ++ran;
          ran_names.insert(p.factory->name);
          reference_ran |= p.factory->name == "cpu_reference";
        }
      }
    }
    EXPECT_GE(ran, 12) << "no kernel computed this layer for every activation dtype and M";
    std::cout << "[ kernels  ] " << shape.name << ": " << absl::StrJoin(ran_names, ", ")
              << std::endl;
    if (FindLinearKernel("cpu_reference") != nullptr) {
      EXPECT_TRUE(reference_ran);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantizeMatrixTest, ::testing::ValuesIn(AllCases()), CaseName);

}  // namespace
}  // namespace qlayer
