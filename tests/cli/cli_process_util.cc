#include "tests/cli/cli_process_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

extern char** environ;

namespace qlayer::cli_testing {
namespace {

// Spawns argv with stdout and stderr appended to `log_path`.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Waits up to `timeout` for pid; returns the exit code (128+signal), or -1
// on timeout (pid still running).
int WaitFor(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1;
    if (absl::Now() > deadline) return -1;
    absl::SleepFor(absl::Milliseconds(5));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string BuildDir() {
  const char* d = std::getenv("QLAYER_BUILD_DIR");
  return d == nullptr ? "" : d;
}

std::string BuildProgram(const std::string& relative) {
  if (BuildDir().empty()) return "";
  const std::string path = BuildDir() + "/" + relative;
  return access(path.c_str(), X_OK) == 0 ? path : "";
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(base ? base : "/tmp", "/", prefix, "XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) return "";
  return templ;
}

void RemoveTree(const std::string& dir) {
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);
}

uint64_t TestSeed() {
  uint64_t seed = 0;
  const char* env = std::getenv("QLAYER_TEST_SEED");
  if (env != nullptr && absl::SimpleAtoi(env, &seed)) return seed;
  return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) %
         1000000007ull;
}

ProgramResult RunProgram(const std::vector<std::string>& argv, absl::Duration timeout) {
  ProgramResult result;
  const std::string dir = MakeTempDir("qlayer_cli_run_");
  const std::string log = dir + "/output.txt";
  const pid_t pid = SpawnLogged(argv, log);
  if (pid < 0) {
    result.output = absl::StrCat("cannot run ", argv[0]);
    RemoveTree(dir);
    return result;
  }
  result.exit_code = WaitFor(pid, timeout);
  if (result.exit_code < 0) {
    kill(pid, SIGKILL);
    WaitFor(pid, absl::Seconds(10));
    result.exit_code = 128 + SIGKILL;
    result.output = absl::StrCat("[killed after ", absl::FormatDuration(timeout), "]\n");
  }
  result.output += ReadWhole(log);
  RemoveTree(dir);
  return result;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& model_dir, const std::string& listen,
    const std::vector<std::string>& extra_args) {
  const std::string program = BuildProgram("server/qlayer-server");
  if (program.empty()) return absl::NotFoundError("no server/qlayer-server in QLAYER_BUILD_DIR");
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->log_path_ =
      model_dir + "/server-" + std::to_string(absl::ToUnixMicros(absl::Now())) + ".log";
  std::vector<std::string> argv = {program, "--model",          model_dir,    "--listen",
                                   listen,  "--metrics-listen", "127.0.0.1:0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  server->pid_ = SpawnLogged(argv, server->log_path_);
  if (server->pid_ < 0) return absl::InternalError(absl::StrCat("cannot run ", program));
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  const std::string marker = "listening on ";
  while (absl::Now() < deadline) {
    const std::string log = server->Log();
    const size_t at = log.find(marker);
    if (at != std::string::npos) {
      const size_t begin = at + marker.size();
      const size_t end = log.find_first_of(" \n", begin);
      if (end != std::string::npos) {
        server->address_ = log.substr(begin, end - begin);
        return server;
      }
    }
    if (waitpid(server->pid_, nullptr, WNOHANG) == server->pid_) {
      server->pid_ = -1;
      return absl::UnavailableError(absl::StrCat("qlayer-server exited at start:\n", log));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat("qlayer-server printed no '", marker, "' in 60 s:\n", server->Log()));
}

void ServerProcess::Stop(int sig) {
  if (pid_ <= 0) return;
  kill(pid_, sig);
  if (WaitFor(pid_, absl::Seconds(10)) < 0) {
    kill(pid_, SIGKILL);
    WaitFor(pid_, absl::Seconds(10));
  }
  pid_ = -1;
}

ServerProcess::~ServerProcess() { Stop(SIGKILL); }

std::string ServerProcess::Log() const { return ReadWhole(log_path_); }

absl::StatusOr<absl::Time> RestartServerDuring(std::unique_ptr<ServerProcess>& server,
                                               const std::string& model_dir,
                                               const std::function<void()>& during) {
  const std::string address = server->address();
  server->Stop(SIGKILL);
  absl::StatusOr<std::unique_ptr<ServerProcess>> again = absl::UnknownError("not started");
  absl::Time listening;
  std::thread restart([&] {
    absl::SleepFor(absl::Milliseconds(300));
    again = ServerProcess::Start(model_dir, address);
    listening = absl::Now();
  });
  during();
  restart.join();
  if (!again.ok()) return again.status();
  server = *std::move(again);
  return listening;
}

}  // namespace qlayer::cli_testing
