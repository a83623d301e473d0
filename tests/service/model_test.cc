// server/model: loading a checkpoint directory with a layer glob, device
// choice, forced and disabled kernels, and the errors a user sees when a
// flag is wrong.
#include "server/model/model.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "qlayer/kernels/registry.h"
#include "server/model/device_choice.h"
#include "tests/service/service_test_util.h"

namespace qlayer {
namespace {

using ::qlayer::testing::RunQuantize;
using ::qlayer::testing::TempDir;
using ::qlayer::testing::TestSeed;

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(RunQuantize(
        {"--format", "gptq", "--bits", "4", "--group-size", "32", "--sym", "--seed",
         absl::StrCat(TestSeed()), "--shape", "model.layers.0.self_attn.q_proj=64x128", "--shape",
         "model.layers.0.mlp.up_proj=96x64", "--shape", "model.layers.1.mlp.up_proj=96x64"},
        dir_.path()));
  }
  ModelOptions Options() {
    ModelOptions o;
    o.dir = dir_.path();
    o.device = "cpu";
    return o;
  }
  TempDir dir_;
};

TEST_F(ModelTest, LoadsTheLayersTheGlobSelects) {
  ModelOptions o = Options();
  o.layers = "*.mlp.*";
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->linears().size(), 2u);
  EXPECT_EQ((*model)->linears()[0]->name(), "model.layers.0.mlp.up_proj");
  EXPECT_EQ((*model)->FindLinear("model.layers.0.self_attn.q_proj"), nullptr);
  const LoadedLinear* l = (*model)->FindLinear("model.layers.1.mlp.up_proj");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->K(), 64);
  EXPECT_EQ(l->N(), 96);
  EXPECT_EQ(l->scheme().origin, "gptq");
  EXPECT_EQ(l->device().ToString(), "cpu");
  ASSERT_FALSE(l->kernels().empty());
  EXPECT_EQ(l->kernels().back().max_m, kUnboundedM);
  // Rows pick the first kernel whose max_m covers them.
  for (int64_t rows : {1, 7, 33, 1000}) {
    const int i = l->KernelIndexFor(rows);
    EXPECT_GE(l->kernels()[static_cast<size_t>(i)].max_m, rows);
    if (i > 0) {
      EXPECT_LT(l->kernels()[static_cast<size_t>(i - 1)].max_m, rows);
    }
  }
}

TEST_F(ModelTest, AGlobMatchingNothingNamesWhatIsThere) {
  ModelOptions o = Options();
  o.layers = "*.k_proj";
  auto model = Model::Load(o);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(model.status().message().find("model.layers.0.self_attn.q_proj"),
            absl::string_view::npos)
      << model.status();
}

TEST_F(ModelTest, ForcedKernelIsUsedOrLoadFailsClearly) {
  ModelOptions o = Options();
  o.forced_kernel = "cpu_reference";
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& l : (*model)->linears()) {
    ASSERT_EQ(l->kernels().size(), 1u);
    EXPECT_EQ(l->kernels()[0].name, "cpu_reference");
  }
  o.forced_kernel = "no_such_kernel";
  model = Model::Load(o);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("no_such_kernel"), absl::string_view::npos);
  EXPECT_NE(model.status().message().find("layer model.layers."), absl::string_view::npos)
      << model.status();
}

TEST_F(ModelTest, DisabledKernelsAreRejectedWithTheReason) {
  ModelOptions o = Options();
  auto model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string first = (*model)->linears()[0]->kernels()[0].name;
  o.disabled_kernels = {first};
  model = Model::Load(o);
  ASSERT_TRUE(model.ok()) << model.status();
  const LoadedLinear& l = *(*model)->linears()[0];
  for (const PreparedKernel& k : l.kernels()) EXPECT_NE(k.name, first);
  bool listed = false;
  for (const Rejection& r : l.rejected()) {
    if (r.kernel == first) listed = !r.why.message().empty();
  }
  EXPECT_TRUE(listed) << first << " not among the rejections";
}

TEST(DeviceChoice, SpellingsAndErrors) {
  auto cpu = ChooseDevice("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ(cpu->device.backend, Backend::kCpu);
  auto autod = ChooseDevice("auto");
  ASSERT_TRUE(autod.ok());
  EXPECT_FALSE(autod->why.empty());
  if (UsableCudaDevices() == 0) {
    EXPECT_EQ(autod->device.backend, Backend::kCpu);
    EXPECT_EQ(ChooseDevice("cuda:0").status().code(), absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(ChooseDevice("cuda:99").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ChooseDevice("gpu").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ChooseDevice("cuda:x").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qlayer
