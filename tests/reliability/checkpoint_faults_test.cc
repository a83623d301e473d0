// Checkpoint files that change or do not fit: a .safetensors file truncated,
// overwritten or replaced under a running server (which keeps serving the
// weights it loaded: it holds no mapping of the file once loaded), a server
// started on such a file (refused with a message, no signal), and a
// checkpoint larger than the address space the server may use (a clean error
// exit, not a crash).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"
#include "server/checkpoint/safetensors.h"
#include "tests/common/sanitizers.h"
#include "tests/reliability/reliability_util.h"

namespace qlayer::reliability {
namespace {

using testing::MakeRequest;
using testing::OutputView;
using testing::RelativeError;

constexpr char kLayer[] = "model.layers.0.self_attn.o_proj";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The server as a plain program that is expected not to start.
ProgramResult RunServer(const std::string& model, const std::vector<std::string>& prefix = {},
                        double timeout_s = 60, const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = prefix;
  argv.insert(argv.end(), {testing::BuildDir() + "/server/qlayer-server", "--model", model,
                           "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  return RunProgram(argv, timeout_s, env);
}

void WriteRandomBytes(const std::string& path, size_t n, std::mt19937_64& rng, int flags) {
  const int fd = ::open(path.c_str(), O_WRONLY | flags);
  ASSERT_GE(fd, 0) << path;
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(rng());
  ASSERT_EQ(::write(fd, bytes.data(), n), static_cast<ssize_t>(n));
  ::close(fd);
}

TEST(CheckpointFaults, FileTruncatedOverwrittenOrReplacedWhileServedChangesNothing) {
  const uint64_t seed = testing::TestSeed();
  testing::TempDir dir;
  ASSERT_TRUE(
      testing::RunQuantize({"--format", "gptq", "--bits", "4", "--group-size", "128", "--seed",
                            absl::StrCat(seed), "--shape", absl::StrCat(kLayer, "=1024x1024")},
                           dir.path()));
  auto layers = testing::LoadLayers(dir.path());
  ASSERT_EQ(layers.size(), 1u);
  const testing::Reference ref(layers.begin()->second);
  const std::string file = dir.path() + "/model.safetensors";
  const size_t file_size = std::filesystem::file_size(file);
  testing::ServerProcess server(dir.path(), {});
  ASSERT_TRUE(server.ok());

  // Loaded means copied: no mapping of the checkpoint is left in the server.
  const std::string maps = ReadAll(absl::StrCat("/proc/", server.pid(), "/maps"));
  EXPECT_FALSE(absl::StrContains(maps, ".safetensors")) << maps;

  // A client keeps calling while the file is changed under the server.
  std::atomic<bool> stop{false};
  int64_t sent = 0, correct = 0;
  std::string problem;
  std::thread client([&] {
    std::mt19937_64 rng(seed + 1);
    auto stub = server.Stub();
    grpc::ClientContext ctx;
    auto stream = stub->Forward(&ctx);
    while (!stop.load()) {
      const CheckedRequest r = RandomLinearRequest(ref, 1 + sent % 8, rng);
      ++sent;
      v1::ForwardResponse a;
      if (!stream->Write(MakeRequest(static_cast<uint64_t>(sent), kLayer, r.x.view())) ||
          !stream->Read(&a)) {
        problem = "stream ended";
        break;
      }
      const ConstTensorView y = OutputView(a);
      if (a.error().code() == 0 && !y.empty() &&
          RelativeError(y, r.expected) < Tolerance(r.x.dtype())) {
        ++correct;
      } else if (problem.empty()) {
        problem = absl::StrCat("answer ", a.error().code(), " ", a.error().message());
      }
    }
    stream->WritesDone();
    (void)stream->Finish();
  });
  std::mt19937_64 rng(seed + 2);
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  pause();
  // 1. Truncated to a few bytes (a mapping of it would SIGBUS on access).
  ASSERT_EQ(::truncate(file.c_str(), 16), 0);
  pause();
  // 2. Overwritten in place with garbage of the original size.
  WriteRandomBytes(file, file_size, rng, O_TRUNC);
  pause();
  // 3. Replaced (rename) by another checkpoint's weights, as a deploy would.
  {
    testing::TempDir other;
    ASSERT_TRUE(testing::RunQuantize(
        {"--format", "gptq", "--bits", "4", "--group-size", "128", "--seed", absl::StrCat(seed + 3),
         "--shape", absl::StrCat(kLayer, "=1024x1024")},
        other.path()));
    std::filesystem::copy_file(other.path() + "/model.safetensors", file + ".new");
    std::filesystem::rename(file + ".new", file);
  }
  pause();
  // 4. Deleted.
  std::filesystem::remove(file);
  pause();
  stop = true;
  client.join();
  EXPECT_TRUE(server.Alive()) << "qlayer-server died while its checkpoint changed";
  EXPECT_GT(sent, 10);
  EXPECT_EQ(correct, sent) << problem;
  std::printf(
      "[ ckpt ] truncated, overwritten, replaced and deleted under the server: %lld "
      "requests, all answered from the loaded weights\n",
      static_cast<long long>(sent));

  // A server started on a damaged file refuses with a message naming it.
  for (int damage = 0; damage < 3; ++damage) {
    if (damage == 0) {
      WriteRandomBytes(file, file_size, rng, O_CREAT | O_TRUNC);  // garbage
    } else if (damage == 1) {
      WriteRandomBytes(file, 0, rng, O_CREAT | O_TRUNC);  // empty
    } else {
      // A valid header whose data was cut short: keep the first half.
      testing::TempDir good;
      ASSERT_TRUE(testing::RunQuantize({"--format", "gptq", "--bits", "4", "--seed", "7", "--shape",
                                        absl::StrCat(kLayer, "=1024x1024")},
                                       good.path()));
      std::filesystem::copy_file(good.path() + "/model.safetensors", file,
                                 std::filesystem::copy_options::overwrite_existing);
      ASSERT_EQ(::truncate(file.c_str(), static_cast<off_t>(file_size / 2)), 0);
    }
    ::chmod(file.c_str(), 0644);
    const ProgramResult r = RunServer(dir.path());
    EXPECT_EQ(r.term_signal, 0) << "damage " << damage << ": killed by signal\n" << r.output;
    EXPECT_EQ(r.exit_code, 1) << "damage " << damage << "\n" << r.output;
    EXPECT_TRUE(absl::StrContains(r.output, "model.safetensors")) << r.output;
    std::printf("[ ckpt ] damage %d at start: exit %d: %s", damage, r.exit_code,
                r.output.substr(r.output.rfind('\n', r.output.size() - 2) + 1).c_str());
  }
}

// VmPeak of `pid` in KiB; -1 when unknown.
int64_t VmPeakKiB(pid_t pid) {
  std::istringstream status(ReadAll(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmPeak:")) return std::atoll(line.c_str() + 7);
  }
  return -1;
}

// A dense f16 checkpoint of one [N, K] layer, written directly (no
// quantization to wait for); the values are small finite halves.
void WriteDenseCheckpoint(const std::string& dir, int64_t N, int64_t K) {
  Tensor w = Tensor::Zeros(DType::kF16, {N, K});
  uint16_t* h = static_cast<uint16_t*>(w.data());
  for (int64_t i = 0; i < N * K; ++i)
    h[i] = static_cast<uint16_t>(0x2000 + (i * 2654435761u) % 0x1000);
  NamedTensors tensors;
  tensors.emplace("model.layers.0.mlp.up_proj.weight", std::move(w));
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", tensors).ok());
  std::ofstream(dir + "/config.json") << "{\"torch_dtype\": \"float16\"}\n";
}

// The one window the server reads its checkpoint file: the load, through a
// mapping. A file truncated in place then makes those reads fault (SIGBUS);
// qlayer-server must say so and exit 1, not die of the signal. Truncated at
// 50..250 ms after the start of a 128 MiB dense layer's load: the truncation
// lands before the open (the reader's "file truncated?" error), during the
// load (the SIGBUS message), or, on a fast machine, after it (the server runs
// on the copies it made and is stopped by the timeout).
TEST(CheckpointFaults, FileTruncatedWhileLoadingFailsCleanly) {
  testing::TempDir dir;
  const std::string file = dir.path() + "/model.safetensors";
  int during_load = 0, before_open = 0, served = 0;
  constexpr int kAttempts = 3;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    WriteDenseCheckpoint(dir.path(), 8192, 8192);
    ProgramResult r;
    std::thread server([&] { r = RunServer(dir.path(), {}, 15); });
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + 100 * attempt));
    EXPECT_EQ(::truncate(file.c_str(), 1000000), 0);  // no ASSERT: the thread must be joined
    server.join();
    if (r.timed_out) {
      ++served;
      continue;
    }
    EXPECT_EQ(r.term_signal, 0) << "attempt " << attempt << ": killed by signal\n" << r.output;
    EXPECT_EQ(r.exit_code, 1) << r.output;
    if (absl::StrContains(r.output, "SIGBUS")) {
      ++during_load;
    } else {
      EXPECT_TRUE(absl::StrContains(r.output, "file truncated?")) << r.output;
      ++before_open;
    }
  }
  std::printf(
      "[ ckpt ] truncated while loading, %d attempts: %d during the load (exit 1, SIGBUS "
      "message), %d before the open (exit 1, reader error), %d after (served)\n",
      kAttempts, during_load, before_open, served);
}

// The server may use the address space a running server on a small
// checkpoint needs plus 16 MiB; the checkpoint is a 128 MiB dense layer
// (mapped, decoded and prepared: ~3x that). Loading must fail with a message
// and exit 1, before anything listens -- not die of std::bad_alloc (SIGABRT,
// as it did before Model::Load caught it) or of a thread it could not start.
// Under ASan the limit is the same RLIMIT_AS: the baseline then includes the
// ~20 TiB of shadow and allocator space ASan reserves at start (VmPeak), and
// the margin is still 16 MiB. ASan's allocator reports a failed allocation as
// a fatal error ("allocator is out of memory") unless allocator_may_return_null
// is set; with it, aligned_alloc returns null as glibc's does, and the server
// takes the same path (Tensor::Zeros throws std::bad_alloc, Model::Load names
// the layer). A failed operator new would still be fatal under ASan (it never
// throws); the weights' buffers do not come from it.
TEST(CheckpointFaults, MoreWeightsThanTheMemoryLimitFailCleanly) {
  // Per-thread malloc arenas (64 MiB of address space each) would make the
  // baseline depend on how many threads allocated; two keep it stable.
  ::setenv("MALLOC_ARENA_MAX", "2", 1);
  std::vector<std::string> server_env;
  if (test_common::kAddressSanitizer) {
    server_env.push_back(test_common::AsanOptionsWith("allocator_may_return_null=1"));
  }
  testing::TempDir small, big;
  ASSERT_TRUE(testing::RunQuantize({"--format", "gptq", "--bits", "4", "--seed", "11", "--shape",
                                    absl::StrCat(kLayer, "=256x256")},
                                   small.path()));
  int64_t baseline_kib = -1;
  {
    testing::ServerProcess server(small.path(), {}, server_env);
    ASSERT_TRUE(server.ok());
    auto stub = server.Stub();  // a request, so the serving threads exist
    grpc::ClientContext ctx;
    auto stream = stub->Forward(&ctx);
    std::mt19937_64 rng(1);
    const Tensor x = testing::RandomInput(DType::kF16, 1, 256, rng);
    v1::ForwardResponse a;
    ASSERT_TRUE(stream->Write(MakeRequest(1, kLayer, x.view())) && stream->Read(&a));
    stream->WritesDone();
    (void)stream->Finish();
    baseline_kib = VmPeakKiB(server.pid());
  }
  ASSERT_GT(baseline_kib, 0);
  WriteDenseCheckpoint(big.path(), 8192, 8192);
  const int64_t limit = (baseline_kib + 16 * 1024) * 1024;
  const ProgramResult r =
      RunServer(big.path(), {"/usr/bin/prlimit", absl::StrCat("--as=", limit)}, 120, server_env);
  ::unsetenv("MALLOC_ARENA_MAX");
  std::printf(
      "[ ckpt ] 128 MiB dense layer under RLIMIT_AS %lld MiB (baseline %lld MiB): exit "
      "%d signal %d: %s",
      static_cast<long long>(limit >> 20), static_cast<long long>(baseline_kib >> 10), r.exit_code,
      r.term_signal, r.output.substr(r.output.rfind('\n', r.output.size() - 2) + 1).c_str());
  EXPECT_FALSE(r.timed_out) << r.output;
  EXPECT_EQ(r.term_signal, 0) << r.output;
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "qlayer-server: ")) << r.output;
  EXPECT_FALSE(absl::StrContains(r.output, "listening on")) << r.output;
  // Not ASan's own out-of-memory report (exit code 1 too).
  EXPECT_FALSE(absl::StrContains(r.output, "ERROR: AddressSanitizer")) << r.output;
}

}  // namespace
}  // namespace qlayer::reliability
