// Test helpers for tests/cli: programs from the build dir, a live
// qlayer-server on a free loopback port, temp dirs and the test seed.
#ifndef QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_
#define QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

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

}  // namespace qlayer::cli_testing

#endif  // QLAYER_TESTS_CLI_CLI_PROCESS_UTIL_H_
