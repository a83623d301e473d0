#include "tests/service/service_test_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/checkpoint/checkpoint.h"
#include "server/checkpoint/layer_catalog.h"
#include "server/checkpoint/quant_config.h"

extern char** environ;

namespace qlayer::testing {
namespace {

// A gRPC C++ client whose channel is idle reads its socket only from the
// backup poller, every 5 s by default. A draining server's graceful GOAWAY
// waits for the client's PING ack, so an idle test channel would stretch
// every server shutdown to 5 s. Set before gRPC initialises (first channel).
const bool kFastBackupPoll = [] {
  ::setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "50", /*overwrite=*/0);
  // In-process model loads log per layer; keep test output to failures.
  ::setenv("QLAYER_LOG_LEVEL", "warning", /*overwrite=*/0);
  return true;
}();

}  // namespace

uint64_t TestSeed() {
  static const uint64_t seed = [] {
    uint64_t s =
        static_cast<uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    if (const char* env = std::getenv("QLAYER_TEST_SEED")) {
      s = std::strtoull(env, nullptr, 10);
    }
    std::printf("[ seed ] QLAYER_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
    return s;
  }();
  return seed;
}

std::string BuildDir() {
  if (const char* env = std::getenv("QLAYER_BUILD_DIR")) return env;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return exe.parent_path().parent_path().string();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = absl::StrCat(base ? base : "/tmp", "/qlayer-svc-XXXXXX");
  if (::mkdtemp(templ.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  path_ = templ;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<std::string> EnvironmentWith(const std::vector<std::string>& extra_env) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const absl::string_view entry(*e);
    const absl::string_view name = entry.substr(0, entry.find('=') + 1);  // "NAME="
    if (std::none_of(extra_env.begin(), extra_env.end(),
                     [&](const std::string& x) { return absl::StartsWith(x, name); })) {
      env.emplace_back(entry);
    }
  }
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  return env;
}

namespace {

// fork + exec, with only async-signal-safe calls in the child (this
// process already runs gRPC threads). The child gets SIGKILL when this test
// process dies, so a crashed or killed test never leaves a server behind.
pid_t Spawn(const std::vector<std::string>& argv, int stdout_fd,
            const std::vector<std::string>& extra_env = {}) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Quieter children unless the caller asked for a log level.
  std::vector<std::string> env_store = EnvironmentWith(extra_env);
  if (std::getenv("QLAYER_LOG_LEVEL") == nullptr) env_store.push_back("QLAYER_LOG_LEVEL=warning");
  std::vector<char*> env;
  for (std::string& e : env_store) env.push_back(e.data());
  env.push_back(nullptr);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;  // parent (or -1)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
  if (stdout_fd >= 0) ::dup2(stdout_fd, STDOUT_FILENO);
  ::execve(args[0], args.data(), env.data());
  ::_exit(127);
}

int WaitExit(pid_t pid, double timeout_s) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() > until) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

bool RunQuantize(const std::vector<std::string>& args, const std::string& out_dir) {
  const std::string tool = BuildDir() + "/server/qlayer-quantize";
  if (!std::filesystem::exists(tool)) {
    ADD_FAILURE() << tool << " does not exist (build the qlayer-quantize target)";
    return false;
  }
  std::vector<std::string> argv = {tool};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--out");
  argv.push_back(out_dir);
  // Its progress lines go to /dev/null; a failure is reported by exit code.
  const int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  const pid_t pid = Spawn(argv, devnull);
  ::close(devnull);
  if (pid < 0) {
    ADD_FAILURE() << "cannot start " << tool;
    return false;
  }
  const int status = WaitExit(pid, 60);
  if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string cmd;
    for (const std::string& a : argv) absl::StrAppend(&cmd, a, " ");
    ADD_FAILURE() << "qlayer-quantize failed (status " << status << "): " << cmd;
    return false;
  }
  return true;
}

ServerProcess::ServerProcess(const std::string& model_dir,
                             const std::vector<std::string>& extra_args,
                             const std::vector<std::string>& extra_env) {
  const std::string bin = BuildDir() + "/server/qlayer-server";
  if (!std::filesystem::exists(bin)) {
    ADD_FAILURE() << bin << " does not exist (build the qlayer-server target)";
    return;
  }
  std::vector<std::string> argv = {bin,           "--model",          model_dir,    "--listen",
                                   "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe failed";
    return;
  }
  pid_ = Spawn(argv, fds[1], extra_env);
  ::close(fds[1]);
  if (pid_ < 0) {
    ::close(fds[0]);
    ADD_FAILURE() << "cannot start " << bin;
    return;
  }
  // Wait for "qlayer-server listening on 127.0.0.1:P metrics 127.0.0.1:Q".
  std::string out;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < until) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[256];
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;  // exited before listening
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  const std::string line = out.substr(0, out.find('\n'));
  std::vector<std::string> words = absl::StrSplit(line, ' ');
  if (words.size() != 6 || words[1] != "listening" || words[4] != "metrics") {
    ADD_FAILURE() << "qlayer-server did not report its ports; stdout: '" << out << "'";
    return;
  }
  auto port_of = [](const std::string& hostport) {
    int p = 0;
    (void)absl::SimpleAtoi(hostport.substr(hostport.rfind(':') + 1), &p);
    return p;
  };
  grpc_port_ = port_of(words[3]);
  metrics_port_ = port_of(words[5]);
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && Alive()) {
    ::kill(pid_, SIGKILL);
    WaitExit(pid_, 10);
  }
}

bool ServerProcess::Alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return false;
  }
  return r == 0;
}

int ServerProcess::Terminate(double timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  const int status = WaitExit(pid_, timeout_s);
  if (status < 0) {
    ::kill(pid_, SIGKILL);
    WaitExit(pid_, 10);
  }
  pid_ = -1;
  return status;
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

std::shared_ptr<grpc::Channel> ServerProcess::Channel() const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A separate connection per channel (tests open several on purpose).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<v1::LayerService::Stub> ServerProcess::Stub() const {
  return v1::LayerService::NewStub(Channel());
}

std::map<std::string, QuantizedLinear> LoadLayers(const std::string& dir) {
  std::map<std::string, QuantizedLinear> out;
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    ADD_FAILURE() << ckpt.status();
    return out;
  }
  auto config = QuantConfig::Parse((*ckpt)->config());
  if (!config.ok()) {
    ADD_FAILURE() << config.status();
    return out;
  }
  auto entries = ListLinearLayers(**ckpt, *config);
  if (!entries.ok()) {
    ADD_FAILURE() << entries.status();
    return out;
  }
  for (const LinearLayerEntry& e : *entries) {
    auto w = LoadLinearLayer(**ckpt, e);
    if (!w.ok()) {
      ADD_FAILURE() << w.status();
      continue;
    }
    out.emplace(e.name, std::move(*w));
  }
  return out;
}

Tensor RandomInput(DType dtype, int64_t M, int64_t K, std::mt19937_64& rng) {
  Tensor x = Tensor::Zeros(dtype, {M, K});
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (int64_t i = 0; i < M * K; ++i) StoreFromDouble(x.data(), dtype, i, u(rng));
  return x;
}

Reference::Reference(const QuantizedLinear& w) : K_(w.K), N_(w.N) {
  w_kn_.resize(static_cast<size_t>(K_ * N_));
  for (int64_t k = 0; k < K_; ++k) {
    for (int64_t n = 0; n < N_; ++n) w_kn_[k * N_ + n] = w.Dequant(k, n);
  }
  if (!w.bias.empty()) {
    for (int64_t n = 0; n < N_; ++n)
      bias_.push_back(LoadAsDouble(w.bias.data(), w.bias.dtype(), n));
  }
}

std::vector<double> Reference::Forward(const ConstTensorView& x) const {
  const int64_t M = x.dim(0);
  std::vector<double> y(static_cast<size_t>(M * N_), 0.0);
  for (int64_t m = 0; m < M; ++m) {
    double* yr = y.data() + m * N_;
    for (int64_t k = 0; k < K_; ++k) {
      const double xv = LoadAsDouble(x.data, x.dtype, m * K_ + k);
      const double* wr = w_kn_.data() + k * N_;
      for (int64_t n = 0; n < N_; ++n) yr[n] += xv * wr[n];
    }
    for (size_t n = 0; n < bias_.size(); ++n) yr[n] += bias_[n];
  }
  return y;
}

double RelativeError(const ConstTensorView& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = LoadAsDouble(y.data, y.dtype, static_cast<int64_t>(i)) - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

v1::Tensor ToWire(const ConstTensorView& x) {
  v1::Tensor t;
  switch (x.dtype) {
    case DType::kF16:
      t.set_dtype(v1::DTYPE_F16);
      break;
    case DType::kBF16:
      t.set_dtype(v1::DTYPE_BF16);
      break;
    case DType::kF32:
      t.set_dtype(v1::DTYPE_F32);
      break;
    case DType::kI32:
      t.set_dtype(v1::DTYPE_I32);
      break;
    case DType::kI64:
      t.set_dtype(v1::DTYPE_I64);
      break;
    default:
      ADD_FAILURE() << "ToWire: unsupported dtype " << DTypeName(x.dtype);
  }
  for (int64_t d : x.shape) t.add_shape(d);
  t.set_data(x.data, x.nbytes());
  return t;
}

v1::Tensor ToWire(DType dtype, const Shape& shape, const void* data) {
  return ToWire(ConstTensorView{dtype, shape, data});
}

v1::ForwardRequest MakeRequest(uint64_t id, const std::string& layer, const ConstTensorView& x) {
  v1::ForwardRequest r;
  r.set_request_id(id);
  r.set_layer(layer);
  *r.mutable_input() = ToWire(x);
  return r;
}

ConstTensorView WireView(const v1::Tensor& t) {
  ConstTensorView v;
  switch (t.dtype()) {
    case v1::DTYPE_F16:
      v.dtype = DType::kF16;
      break;
    case v1::DTYPE_BF16:
      v.dtype = DType::kBF16;
      break;
    case v1::DTYPE_F32:
      v.dtype = DType::kF32;
      break;
    case v1::DTYPE_I32:
      v.dtype = DType::kI32;
      break;
    case v1::DTYPE_I64:
      v.dtype = DType::kI64;
      break;
    default:
      return {};
  }
  for (int64_t d : t.shape()) v.shape.push_back(d);
  if (t.data().size() != v.nbytes()) return {};
  v.data = t.data().data();
  return v;
}

ConstTensorView OutputView(const v1::ForwardResponse& r) {
  const ConstTensorView v = WireView(r.output());
  return IsFloatActivation(v.dtype) ? v : ConstTensorView{};
}

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string req =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof(buf));
        if (n <= 0) break;
        response.append(buf, static_cast<size_t>(n));
      }
    }
  }
  ::close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.") || body == std::string::npos) return "";
  return response.substr(body + 4);
}

double MetricValue(const std::string& exposition, const std::string& metric,
                   const std::map<std::string, std::string>& labels) {
  double total = 0;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(exposition, '\n')) {
    if (!absl::ConsumePrefix(&line, metric)) continue;
    if (line.empty() || (line[0] != '{' && line[0] != ' ')) continue;  // a longer name
    absl::string_view label_text;
    if (line[0] == '{') {
      const size_t close = line.find('}');
      if (close == absl::string_view::npos) continue;
      label_text = line.substr(1, close - 1);
      line.remove_prefix(close + 1);
    }
    bool match = true;
    for (const auto& [name, value] : labels) {
      if (!absl::StrContains(label_text, absl::StrCat(name, "=\"", value, "\""))) match = false;
    }
    if (!match) continue;
    double v = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(line), &v)) continue;
    total += v;
    found = true;
  }
  return found ? total : -1;
}

}  // namespace qlayer::testing
