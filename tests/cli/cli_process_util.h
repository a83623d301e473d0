// Test helpers for tests/cli: programs from the build dir, a live
// qlayer-server on a free loopback port, temp dirs and the test seed.
#ifndef QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_
#define QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace qlayer::cli_testing {

// $QLAYER_BUILD_DIR (ctest sets it); empty when unset.
std::string BuildDir();
// Path of a program in the build dir ("server/qlayer-server"); empty if absent.
std::string BuildProgram(const std::string& relative);
// A fresh directory under $TMPDIR (or /tmp), removed by RemoveTree.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& dir);
// $QLAYER_TEST_SEED, else from the clock; the caller prints it.
uint64_t TestSeed();

struct ProgramResult {
  int exit_code = -1;  // 128 + signal when killed; -1 when it could not run
  std::string output;  // stdout and stderr, interleaved
};
// Runs argv to completion (killed after `timeout`).
ProgramResult RunProgram(const std::vector<std::string>& argv,
                         absl::Duration timeout = absl::Seconds(60));

// qlayer-server on `listen` (default a free loopback port), logging to a
// file; Start waits for its "listening on" line.
class ServerProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& model_dir, const std::string& listen = "127.0.0.1:0",
      const std::vector<std::string>& extra_args = {});
  // SIGKILL: the tests here do not depend on a drain, and qlayer-server's
  // orderly exit takes about 2 s (its drain itself is the service tests' job).
  ~ServerProcess();

  const std::string& address() const { return address_; }
  // host:port of the gRPC listener's port only ("127.0.0.1:PORT").
  std::string listen() const { return address_; }
  // Sends `sig` and waits for the exit (SIGKILL after 10 s).
  void Stop(int sig);
  std::string Log() const;

 private:
  ServerProcess() = default;
  pid_t pid_ = -1;
  std::string address_;
  std::string log_path_;
};

// Base of the fixtures that serve one fresh checkpoint: qlayer-quantize
// writes it into a new temp dir, qlayer-server serves it, TearDown kills the
// server and removes the dir. Base: ::testing::Test or a TestWithParam.
template <class Base = ::testing::Test>
class ServedCheckpointTest : public Base {
 protected:
  // Call from SetUp. Skips the test unless qlayer-server, qlayer-quantize
  // and `programs` are built; else picks the seed (printed), makes dir_
  // (named from `prefix`), runs qlayer-quantize with `args` plus
  // --seed=<seed_> and --out=<dir_>/model, and starts server_ on it. After a
  // skip or failure here the test does not run (SetUp returns at once when
  // it checks HasFatalFailure() || IsSkipped()).
  void Serve(const std::string& prefix, const std::vector<std::string>& args,
             const std::vector<std::string>& programs = {}) {
    std::vector<std::string> needed = {"server/qlayer-server", "server/qlayer-quantize"};
    needed.insert(needed.end(), programs.begin(), programs.end());
    for (const std::string& p : needed) {
      if (BuildProgram(p).empty()) GTEST_SKIP() << p << " not built";
    }
    seed_ = TestSeed();
    std::cout << "QLAYER_TEST_SEED=" << seed_ << "\n";
    dir_ = MakeTempDir(prefix);
    std::vector<std::string> argv = {BuildProgram("server/qlayer-quantize")};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(absl::StrCat("--seed=", seed_));
    argv.push_back("--out=" + dir_ + "/model");
    const ProgramResult q = RunProgram(argv);
    ASSERT_EQ(q.exit_code, 0) << q.output;
    auto server = ServerProcess::Start(dir_ + "/model");
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void TearDown() override {
    server_.reset();
    if (!dir_.empty()) RemoveTree(dir_);
  }

  uint64_t seed_ = 0;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
};

// Kills `server` (SIGKILL) and runs `during` here while a new qlayer-server
// on the same address starts 300 ms later (on `model_dir`), as a client sees
// a crash and restart. Once both are done, `server` holds the new process
// (or, if it failed to start, the dead one and the error is returned).
// Returns when the new server was listening.
absl::StatusOr<absl::Time> RestartServerDuring(std::unique_ptr<ServerProcess>& server,
                                               const std::string& model_dir,
                                               const std::function<void()>& during);

}  // namespace qlayer::cli_testing

#endif  // QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_
