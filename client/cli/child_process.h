// A child process with a pipe to its stdin and one from its stdout: bench's
// echo server. Closing stdin asks it to exit; the destructor does that and
// reaps it (SIGKILL if it does not exit within 5 s).
#ifndef QLAYER_CLIENT_CLI_CHILD_PROCESS_H_
#define QLAYER_CLIENT_CLI_CHILD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace qlayer {

class ChildProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Reads stdout until a line containing `marker` (returned whole), or
  // DEADLINE_EXCEEDED / UNAVAILABLE (child exited) with what it printed.
  absl::StatusOr<std::string> WaitForLine(const std::string& marker, absl::Duration timeout);

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string name_;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_CHILD_PROCESS_H_
