#include "tests/reliability/reliability_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/sanitizers.h"

namespace qlayer::reliability {
namespace {

namespace fs = std::filesystem;
using testing::RunQuantize;

// One qlayer-quantize run into a scratch directory; its model.safetensors
// becomes `part` of the merged checkpoint. Returns the part's config.json.
bool QuantizePart(const std::string& dir, const std::string& part,
                  const std::vector<std::string>& args, std::string* config) {
  const std::string scratch = dir + "/.part-" + part;
  fs::create_directories(scratch);
  if (!RunQuantize(args, scratch)) return false;
  std::error_code ec;
  fs::rename(scratch + "/model.safetensors", dir + "/part-" + part + ".safetensors", ec);
  if (ec) {
    ADD_FAILURE() << "moving " << part << ": " << ec.message();
    return false;
  }
  std::ifstream in(scratch + "/config.json");
  std::stringstream text;
  text << in.rdbuf();
  *config = text.str();
  fs::remove_all(scratch, ec);
  return true;
}

DType DrawDType(std::mt19937_64& rng) {
  static constexpr DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};
  return kDTypes[std::uniform_int_distribution<int>(0, 2)(rng)];
}

}  // namespace

bool WriteMixedCheckpoint(const std::string& dir, uint64_t seed, MixedModel* out) {
  const auto s = [&](int i) { return absl::StrCat(seed + i); };
  std::string ignored, moe_config;
  const bool ok =
      QuantizePart(
          dir, "a",
          {"--format", "gptq", "--bits", "4", "--group-size", "128", "--seed", s(1), "--shape",
           "model.layers.0.self_attn.q_proj=1024x1024,model.layers.0.mlp.down_proj="
           "512x1536"},
          &ignored) &&
      QuantizePart(dir, "b",
                   {"--format", "gptq", "--bits", "8", "--group-size", "64", "--act-order",
                    "--seed", s(2), "--shape", "model.layers.1.self_attn.o_proj=768x512"},
                   &ignored) &&
      QuantizePart(
          dir, "c",
          {"--format", "gptq", "--bits", "4", "--group-size", "-1", "--sym", "--scale-dtype",
           "bf16", "--seed", s(3), "--shape", "model.layers.2.mlp.up_proj=384x256"},
          &ignored) &&
      QuantizePart(dir, "d",
                   {"--format",       "gptq",    "--bits",       "4", "--group-size", "128",
                    "--moe",          "mixtral", "--layers-moe", "3", "--hidden",     "256",
                    "--intermediate", "128",     "--experts",    "8", "--topk",       "2",
                    "--seed",         s(4)},
                   &moe_config) &&
      QuantizePart(
          dir, "e",
          {"--format", "dense", "--seed", s(5), "--shape", "model.layers.4.mlp.gate_proj=256x512"},
          &ignored);
  if (!ok) return false;
  // The MoE part's config (Mixtral routing keys, GPTQ 4-bit g128 base) plus
  // the per-module rules of the other parts.
  nlohmann::json config = nlohmann::json::parse(moe_config, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("quantization_config")) {
    ADD_FAILURE() << "unexpected MoE config.json: " << moe_config;
    return false;
  }
  config.erase("_qlayer_quantize");
  config["quantization_config"]["dynamic"] = {
      {"+:.*layers\\.1\\..*", {{"bits", 8}, {"group_size", 64}, {"desc_act", true}}},
      {"+:.*layers\\.2\\..*", {{"group_size", -1}, {"sym", true}}},
      {"-:.*layers\\.4\\..*", nlohmann::json::object()},
  };
  std::ofstream(dir + "/config.json") << config.dump(1) << "\n";
  out->dir = dir;
  out->linears = {"model.layers.0.mlp.down_proj", "model.layers.0.self_attn.q_proj",
                  "model.layers.1.self_attn.o_proj", "model.layers.2.mlp.up_proj",
                  "model.layers.4.mlp.gate_proj"};
  out->moe = "model.layers.3.block_sparse_moe";
  return true;
}

MixedReference::MixedReference(const MixedModel& model) {
  std::map<std::string, QuantizedLinear> layers = testing::LoadLayers(model.dir);
  for (const std::string& name : model.linears) {
    auto it = layers.find(name);
    if (it == layers.end()) {
      ADD_FAILURE() << "the checkpoint reader finds no layer " << name;
      return;
    }
    linears_[name] = std::make_unique<testing::Reference>(it->second);
  }
  moe_ = std::make_unique<testing::MoEReference>(model.dir, model.moe);
  ok_ = moe_->ok();
}

CheckedRequest RandomLinearRequest(const testing::Reference& ref, int64_t M, std::mt19937_64& rng) {
  CheckedRequest r;
  r.x = testing::RandomInput(DrawDType(rng), M, ref.K(), rng);
  r.expected = ref.Forward(r.x.view());
  return r;
}

CheckedMoERequest RandomMoERequest(const testing::MoEReference& ref, int64_t T,
                                   std::mt19937_64& rng) {
  CheckedMoERequest r;
  r.x = testing::RandomInput(DrawDType(rng), T, ref.H(), rng);
  std::vector<int32_t> experts(static_cast<size_t>(ref.E()));
  for (size_t e = 0; e < experts.size(); ++e) experts[e] = static_cast<int32_t>(e);
  std::uniform_real_distribution<float> w(0.05f, 1.0f);
  std::vector<double> weights;
  for (int64_t t = 0; t < T; ++t) {
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int j = 0; j < ref.k(); ++j) {
      r.ids.push_back(experts[static_cast<size_t>(j)]);
      r.weights.push_back(w(rng));
      weights.push_back(r.weights.back());  // the f32 value sent
    }
  }
  r.expected = ref.Forward(r.x.view(), r.ids, weights);
  return r;
}

v1::MoEForwardRequest MakeMoERequest(uint64_t id, const std::string& block,
                                     const CheckedMoERequest& r) {
  v1::MoEForwardRequest req;
  req.set_request_id(id);
  req.set_layer(block);
  *req.mutable_hidden_states() = testing::ToWire(r.x.view());
  const int64_t T = r.x.dim(0);
  const int64_t k = static_cast<int64_t>(r.ids.size()) / T;
  v1::Tensor* ids = req.mutable_topk_ids();
  ids->set_dtype(v1::DTYPE_I32);
  ids->add_shape(T);
  ids->add_shape(k);
  ids->set_data(r.ids.data(), r.ids.size() * sizeof(int32_t));
  v1::Tensor* w = req.mutable_topk_weights();
  w->set_dtype(v1::DTYPE_F32);
  w->add_shape(T);
  w->add_shape(k);
  w->set_data(r.weights.data(), r.weights.size() * sizeof(float));
  return req;
}

ConstTensorView MoEOutputView(const v1::MoEForwardResponse& r) {
  v1::ForwardResponse as_linear;
  *as_linear.mutable_output() = r.output();
  ConstTensorView v = testing::OutputView(as_linear);
  // OutputView points into `as_linear`; re-point at r's own bytes.
  if (!v.empty()) v.data = r.output().data().data();
  return v;
}

double Tolerance(DType dtype) {
  // The MoE path rounds intermediate products to the activation dtype and
  // large batches go through onednn_dense (bf16 internally): the e2e MoE
  // tests measured up to 4.9e-3; a wrong row, expert or weight is off by
  // 0.1 or more.
  return dtype == DType::kBF16 ? 1e-2 : 8e-3;
}

int64_t RssKiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (!absl::StartsWith(line, "VmRSS:")) continue;
    std::istringstream fields(line.substr(6));
    int64_t kib = -1;
    fields >> kib;
    return kib;
  }
  return -1;
}

std::vector<std::string> FlatRssServerEnv() {
  if (!test_common::kAddressSanitizer) return {};
  return {
      test_common::AsanOptionsWith("quarantine_size_mb=8:thread_local_quarantine_size_kb=64:"
                                   "allocator_release_to_os_interval_ms=-1")};
}

double Quantile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

ProgramResult RunProgram(const std::vector<std::string>& argv, double timeout_s,
                         const std::vector<std::string>& extra_env) {
  ProgramResult result;
  char templ[] = "/tmp/qlayer-rel-out-XXXXXX";
  const int out_fd = ::mkstemp(templ);
  if (out_fd < 0) {
    result.output = "mkstemp failed";
    return result;
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_store = testing::EnvironmentWith(extra_env);
  std::vector<char*> env;
  for (std::string& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls: this process runs gRPC threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ::close(out_fd);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  while (pid > 0) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > until) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.term_signal = WTERMSIG(status);
  std::ifstream in(templ);
  std::stringstream text;
  text << in.rdbuf();
  result.output = text.str();
  ::unlink(templ);
  return result;
}

}  // namespace qlayer::reliability
