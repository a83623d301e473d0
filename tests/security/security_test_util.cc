#include "tests/security/security_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/service/service_test_util.h"

namespace qlayer::security_testing {
namespace {

// Forks argv with stdout and stderr on one pipe.
pid_t Spawn(const std::vector<std::string>& argv, int* out_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return -1;
  }
  *out_fd = fds[0];
  return pid;
}

}  // namespace

const std::string& CertDir() {
  static testing::TempDir* dir = [] {
    auto* d = new testing::TempDir();
    const std::string script =
        std::string(QLAYER_SOURCE_DIR) + "/tests/security/make_test_certs.sh";
    const ProgramResult r = RunProgram({"/bin/sh", script, d->path()}, 60);
    if (r.exit_code != 0) {
      ADD_FAILURE() << script << " failed (is the openssl command installed? scripts/deps.sh "
                    << "installs it): " << r.output;
    }
    // Removed at exit: the keys are throwaway, but do not leave them around.
    std::atexit([] { delete dir; });
    return d;
  }();
  return dir->path();
}

const std::string& ModelDir() {
  static testing::TempDir* dir = [] {
    auto* d = new testing::TempDir();
    EXPECT_TRUE(testing::RunQuantize(
        {"--format", "awq", "--bits", "4", "--group-size", "128", "--seed",
         absl::StrCat(testing::TestSeed()), "--shape", absl::StrCat(kLayer, "=", kN, "x", kK)},
        d->path()));
    std::atexit([] { delete dir; });
    return d;
  }();
  return dir->path();
}

std::string Cert(const std::string& name) { return CertDir() + "/" + name; }

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WriteSecret(const std::string& dir, const std::string& name,
                        const std::string& contents) {
  const std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  EXPECT_TRUE(out.good()) << "cannot write " << path;
  ::chmod(path.c_str(), 0600);
  return path;
}

ChannelSecurity Tls(const std::string& ca, const std::string& client, const std::string& token) {
  ChannelSecurity s;
  s.tls = true;
  s.root_certs_pem = ReadFileOrDie(Cert(ca));
  if (!client.empty()) {
    s.cert_chain_pem = ReadFileOrDie(Cert(client + ".pem"));
    s.private_key_pem = ReadFileOrDie(Cert(client + ".key"));
  }
  s.bearer_token = token;
  return s;
}

std::shared_ptr<grpc::Channel> SecureChannel(const std::string& address,
                                             const ChannelSecurity& security) {
  grpc::ChannelArguments args;
  // Each test's channel is its own connection (no subchannel sharing), so a
  // refused handshake on one cannot be masked by another's.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateSecureChannel(address, args, security);
  EXPECT_TRUE(channel.ok()) << channel.status();
  return channel.ok() ? *channel : nullptr;
}

ProgramResult RunProgram(const std::vector<std::string>& argv, double timeout_s) {
  ProgramResult result;
  int fd = -1;
  const pid_t pid = Spawn(argv, &fd);
  if (pid < 0) return result;
  const auto until = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  bool killed = false;
  for (;;) {
    if (!killed && std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    result.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

HttpResponse HttpGet(int port, const std::string& path, const std::string& authorization) {
  HttpResponse response;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return response;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    if (!authorization.empty()) absl::StrAppend(&req, "Authorization: ", authorization, "\r\n");
    absl::StrAppend(&req, "Connection: close\r\n\r\n");
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        raw.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  // "HTTP/1.1 200 OK\r\n...\r\n\r\nbody"
  const std::vector<std::string> status_line = absl::StrSplit(raw.substr(0, raw.find("\r\n")), ' ');
  if (status_line.size() < 2 || !absl::SimpleAtoi(status_line[1], &response.status)) return {};
  const size_t body = raw.find("\r\n\r\n");
  if (body != std::string::npos) response.body = raw.substr(body + 4);
  return response;
}

}  // namespace qlayer::security_testing
