// Checkpoint directories: writer -> reader round trips (single file and
// sharded), the index's containment rules, and side quantization configs.
#include "server/checkpoint/checkpoint.h"

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/checkpoint/quant_config.h"
#include "server/checkpoint/safetensors.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace qlayer {
namespace {

namespace fs = std::filesystem;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::WriteFile;
using ::testing::HasSubstr;

NamedTensors RandomTensors(std::mt19937_64& rng, int count) {
  const DType dtypes[] = {DType::kF16, DType::kBF16, DType::kF32, DType::kI32,
                          DType::kI8,  DType::kU8,   DType::kI64};
  NamedTensors t;
  for (int i = 0; i < count; ++i) {
    const DType d = dtypes[rng() % std::size(dtypes)];
    Shape shape = {static_cast<int64_t>(1 + rng() % 40), static_cast<int64_t>(1 + rng() % 24)};
    t.emplace("model.layers." + std::to_string(i) + ".w", testing::RandomTensor(d, shape, rng));
  }
  return t;
}

void ExpectSameTensors(const Checkpoint& ckpt, const NamedTensors& t) {
  std::vector<std::string> want;
  for (const auto& [name, tensor] : t) want.push_back(name);
  EXPECT_EQ(ckpt.TensorNames(), want);
  for (const auto& [name, tensor] : t) {
    const ConstTensorView* v = ckpt.Find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_TRUE(SameTensor(*v, tensor.view())) << name;
  }
}

TEST(CheckpointRoundTripTest, SingleFile) {
  std::mt19937_64 rng(testing::TestSeed());
  TempDir dir;
  const NamedTensors t = RandomTensors(rng, 9);
  const nlohmann::json config = {{"torch_dtype", "float16"}, {"hidden_size", 64}};
  ASSERT_TRUE(WriteCheckpoint(dir.path(), config, t).ok());
  EXPECT_TRUE(fs::exists(dir.file("model.safetensors")));
  EXPECT_FALSE(fs::exists(dir.file("model.safetensors.index.json")));
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->config(), config);
  EXPECT_EQ((*ckpt)->WeightFiles().size(), 1u);
  ExpectSameTensors(**ckpt, t);
  auto f = SafetensorsFile::Open(dir.file("model.safetensors"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->metadata().at("format"), "pt") << "transformers requires format metadata";
}

TEST(CheckpointRoundTripTest, ShardedWithIndex) {
  std::mt19937_64 rng(testing::TestSeed());
  TempDir dir;
  const NamedTensors t = RandomTensors(rng, 23);
  uint64_t total = 0, largest = 0;
  for (const auto& [name, tensor] : t) {
    total += tensor.nbytes();
    largest = std::max<uint64_t>(largest, tensor.nbytes());
  }
  const int64_t shard_bytes = static_cast<int64_t>(std::max(total / 4, largest));
  ASSERT_TRUE(WriteCheckpoint(dir.path(), nlohmann::json::object(), t, shard_bytes).ok());
  EXPECT_FALSE(fs::exists(dir.file("model.safetensors")));

  const nlohmann::json index =
      nlohmann::json::parse(testing::ReadFile(dir.file("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
  std::set<std::string> files;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    files.insert(it->get<std::string>());
  }
  EXPECT_EQ(index["weight_map"].size(), t.size());
  ASSERT_GE(files.size(), 4u);
  const size_t n = files.size();
  size_t i = 1;
  for (const std::string& name : files) {  // sorted: 00001 ... 0000n
    char want[64];
    std::snprintf(want, sizeof(want), "model-%05zu-of-%05zu.safetensors", i++, n);
    EXPECT_EQ(name, want);
    auto f = SafetensorsFile::Open(dir.file(name));
    ASSERT_TRUE(f.ok()) << f.status();
    uint64_t bytes = 0;
    for (const std::string& tn : (*f)->TensorNames()) {
      bytes += (*f)->Find(tn)->nbytes();
      EXPECT_EQ(index["weight_map"][tn], name);
    }
    EXPECT_LE(bytes, static_cast<uint64_t>(shard_bytes));
  }
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->WeightFiles().size(), n);
  ExpectSameTensors(**ckpt, t);

  // Rewriting as one file removes the shards, so nothing stale shadows it.
  const NamedTensors t2 = RandomTensors(rng, 3);
  ASSERT_TRUE(WriteCheckpoint(dir.path(), nlohmann::json::object(), t2).ok());
  EXPECT_FALSE(fs::exists(dir.file("model.safetensors.index.json")));
  auto again = Checkpoint::Open(dir.path());
  ASSERT_TRUE(again.ok()) << again.status();
  ExpectSameTensors(**again, t2);
}

// A directory with two valid shards a/b and an index the test writes.
class IndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(testing::TestSeed());
    NamedTensors a, b;
    a.emplace("x", testing::RandomTensor(DType::kF32, {3, 4}, rng));
    b.emplace("y", testing::RandomTensor(DType::kI32, {5}, rng));
    ASSERT_TRUE(WriteSafetensors(dir_.file("a.safetensors"), a).ok());
    ASSERT_TRUE(WriteSafetensors(dir_.file("b.safetensors"), b).ok());
  }
  absl::Status OpenWithIndex(const std::string& index_json) {
    WriteFile(dir_.file("model.safetensors.index.json"), index_json);
    return Checkpoint::Open(dir_.path()).status();
  }
  void ExpectError(const std::string& index_json, absl::StatusCode code,
                   const std::string& substr) {
    const absl::Status s = OpenWithIndex(index_json);
    EXPECT_EQ(s.code(), code) << s;
    EXPECT_THAT(s.message(), HasSubstr(substr));
  }
  TempDir dir_;
};

TEST_F(IndexTest, GoodIndexOpens) {
  ASSERT_TRUE(OpenWithIndex(R"({"metadata": {"total_size": 68},
                        "weight_map": {"x": "a.safetensors", "y": "b.safetensors"}})")
                  .ok());
  auto ckpt = Checkpoint::Open(dir_.path());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_NE((*ckpt)->Find("x"), nullptr);
  EXPECT_NE((*ckpt)->Find("y"), nullptr);
  EXPECT_EQ((*ckpt)->Find("z"), nullptr);
}

TEST_F(IndexTest, RejectsDotDot) {
  fs::create_directory(dir_.file("sub"));
  ExpectError(R"({"weight_map": {"x": "sub/../../a.safetensors"}})",
              absl::StatusCode::kInvalidArgument, "uses '..'");
  ExpectError(R"({"weight_map": {"x": "../a.safetensors"}})", absl::StatusCode::kInvalidArgument,
              "uses '..'");
}

TEST_F(IndexTest, RejectsAbsolutePath) {
  ExpectError(R"({"weight_map": {"x": ")" + dir_.file("a.safetensors") + R"("}})",
              absl::StatusCode::kInvalidArgument, "absolute path");
}

TEST_F(IndexTest, RejectsSymlinkOut) {
  TempDir outside;
  NamedTensors t;
  std::mt19937_64 rng(1);
  t.emplace("x", testing::RandomTensor(DType::kF32, {2}, rng));
  ASSERT_TRUE(WriteSafetensors(outside.file("evil.safetensors"), t).ok());
  fs::create_symlink(outside.file("evil.safetensors"), dir_.file("link.safetensors"));
  ExpectError(R"({"weight_map": {"x": "link.safetensors"}})", absl::StatusCode::kInvalidArgument,
              "outside the checkpoint directory");
  // A symlink that stays inside is fine.
  fs::create_symlink("a.safetensors", dir_.file("alias.safetensors"));
  EXPECT_TRUE(OpenWithIndex(R"({"weight_map": {"x": "alias.safetensors"}})").ok());
}

TEST_F(IndexTest, RejectsMissingTensorAndFile) {
  ExpectError(R"({"weight_map": {"x": "a.safetensors", "ghost": "a.safetensors"}})",
              absl::StatusCode::kInvalidArgument, "maps tensor 'ghost' to a.safetensors");
  ExpectError(R"({"weight_map": {"y": "a.safetensors", "x": "a.safetensors"}})",
              absl::StatusCode::kInvalidArgument, "maps tensor 'y'");
  ExpectError(R"({"weight_map": {"x": "gone.safetensors"}})", absl::StatusCode::kNotFound,
              "does not exist");
}

TEST_F(IndexTest, RejectsDuplicateAcrossShards) {
  std::mt19937_64 rng(2);
  NamedTensors c;
  c.emplace("x", testing::RandomTensor(DType::kF32, {1}, rng));
  ASSERT_TRUE(WriteSafetensors(dir_.file("c.safetensors"), c).ok());
  ExpectError(R"({"weight_map": {"x": "a.safetensors", "y": "c.safetensors"}})",
              absl::StatusCode::kInvalidArgument, "tensor 'x' is stored twice");
}

TEST_F(IndexTest, RejectsMalformedIndex) {
  ExpectError("{\"weight_map\": [", absl::StatusCode::kInvalidArgument, "not valid JSON");
  ExpectError(R"({"weight_map": ["a.safetensors"]})", absl::StatusCode::kInvalidArgument,
              "no \"weight_map\" object");
  ExpectError(R"({"weight_map": {"x": 7}})", absl::StatusCode::kInvalidArgument,
              "'x' is not a file name");
  ExpectError(R"({"weight_map": {}})", absl::StatusCode::kInvalidArgument, "weight_map is empty");
  ExpectError(R"({"metadata": 3, "weight_map": {"x": "a.safetensors"}})",
              absl::StatusCode::kInvalidArgument, "\"metadata\" is not an object");
  // A hostile shard is reported through the index too.
  WriteFile(dir_.file("bad.safetensors"), testing::RawSafetensors("{}", "", 99));
  ExpectError(R"({"weight_map": {"x": "bad.safetensors"}})", absl::StatusCode::kInvalidArgument,
              "past the end of the file");
}

// Regression (fuzz/regressions/index/deep-weight-map-entry): an index whose
// weight_map value nests 200000 deep overflowed the stack in the error
// message's dump(); a config.json as deep overflowed copying the
// quantization_config. Both are refused when read.
TEST_F(IndexTest, RejectsDeeplyNestedJson) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  ExpectError(R"({"weight_map": {"x": )" + deep + "}}", absl::StatusCode::kInvalidArgument,
              "nests deeper than 128 levels");
}

TEST(CheckpointOpenTest, RejectsDeeplyNestedConfig) {
  TempDir dir;
  WriteFile(dir.file("model.safetensors"), testing::RawSafetensors("{}", ""));
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  WriteFile(dir.file("config.json"),
            R"({"quantization_config": {"quant_method": "gptq", "x": )" + deep + "}}");
  auto bad = Checkpoint::Open(dir.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("config.json nests deeper than 128 levels"));
}

TEST(CheckpointOpenTest, ClearErrors) {
  TempDir dir;
  auto missing = Checkpoint::Open(dir.file("nope"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);

  auto empty = Checkpoint::Open(dir.path());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(empty.status().message(), HasSubstr("no model.safetensors"));

  WriteFile(dir.file("model.safetensors"), testing::RawSafetensors("{}", ""));
  WriteFile(dir.file("config.json"), "{\"a\": ");
  auto bad = Checkpoint::Open(dir.path());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("config.json is not valid JSON"));

  WriteFile(dir.file("config.json"), "[1]");
  bad = Checkpoint::Open(dir.path());
  EXPECT_THAT(bad.status().message(), HasSubstr("config.json is not a JSON object"));

  WriteFile(dir.file("config.json"), "{}");
  EXPECT_TRUE(Checkpoint::Open(dir.path()).ok());

  auto file_as_dir = Checkpoint::Open(dir.file("config.json"));
  EXPECT_THAT(file_as_dir.status().message(), HasSubstr("is not a directory"));
}

TEST(CheckpointOpenTest, SymlinkedSingleFileOutside) {
  TempDir dir, outside;
  WriteFile(outside.file("m.safetensors"), testing::RawSafetensors("{}", ""));
  fs::create_symlink(outside.file("m.safetensors"), dir.file("model.safetensors"));
  auto ckpt = Checkpoint::Open(dir.path());
  EXPECT_EQ(ckpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ckpt.status().message(), HasSubstr("outside the checkpoint directory"));
}

TEST(CheckpointOpenTest, SeveralFilesWithoutIndex) {
  std::mt19937_64 rng(testing::TestSeed());
  TempDir dir;
  NamedTensors a, b;
  a.emplace("p", testing::RandomTensor(DType::kF16, {4, 4}, rng));
  b.emplace("q", testing::RandomTensor(DType::kF16, {2}, rng));
  ASSERT_TRUE(WriteSafetensors(dir.file("one.safetensors"), a).ok());
  ASSERT_TRUE(WriteSafetensors(dir.file("two.safetensors"), b).ok());
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->TensorNames(), (std::vector<std::string>{"p", "q"}));
  ASSERT_TRUE(WriteSafetensors(dir.file("three.safetensors"), b).ok());
  ckpt = Checkpoint::Open(dir.path());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("tensor 'q' is stored twice"));
}

TEST(CheckpointOpenTest, SideQuantConfigs) {
  TempDir dir;
  WriteFile(dir.file("model.safetensors"), testing::RawSafetensors("{}", ""));
  WriteFile(dir.file("config.json"), R"({"torch_dtype": "float16"})");
  // AutoAWQ's own spelling, no quant_method.
  WriteFile(dir.file("quant_config.json"),
            R"({"zero_point": true, "q_group_size": 64, "w_bit": 4, "version": "GEMM"})");
  auto ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ((*ckpt)->quant_config_file(), "quant_config.json");
  auto qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  EXPECT_EQ(qc->quant_method(), "awq");
  auto s = qc->SchemeFor("model.layers.0.mlp.up_proj", true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->format, CheckpointFormat::kAwq);
  EXPECT_EQ(s->group_size, 64);
  EXPECT_FALSE(s->sym);

  // AutoGPTQ's quantize_config.json wins over quant_config.json.
  WriteFile(dir.file("quantize_config.json"),
            R"({"bits": 8, "group_size": 32, "desc_act": true, "sym": true})");
  ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->quant_config_file(), "quantize_config.json");
  qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok()) << qc.status();
  s = qc->SchemeFor("x", true);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->format, CheckpointFormat::kGptq);
  EXPECT_EQ(s->bits, 8);
  EXPECT_TRUE(s->act_order);

  // config.json's own quantization_config wins over both.
  WriteFile(dir.file("config.json"), R"({"quantization_config": {"quant_method": "awq", "bits": 4,
                                          "group_size": 128, "zero_point": false}})");
  ckpt = Checkpoint::Open(dir.path());
  ASSERT_TRUE(ckpt.ok());
  EXPECT_EQ((*ckpt)->quant_config_file(), "config.json");
  qc = QuantConfig::Parse((*ckpt)->config());
  ASSERT_TRUE(qc.ok());
  s = qc->SchemeFor("x", true);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->group_size, 128);
  EXPECT_TRUE(s->sym);

  // A side file that is not JSON is an error naming it.
  fs::remove(dir.file("config.json"));
  WriteFile(dir.file("quantize_config.json"), "bits=4");
  ckpt = Checkpoint::Open(dir.path());
  EXPECT_THAT(ckpt.status().message(), HasSubstr("quantize_config.json is not valid JSON"));
}

}  // namespace
}  // namespace qlayer
