#include "tests/checkpoint/checkpoint_test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "gtest/gtest.h"

namespace qlayer::testing {

uint64_t TestSeed() {
  uint64_t seed;
  const char* env = std::getenv("QLAYER_TEST_SEED");
  if (env != nullptr && *env != '\0') {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = std::random_device{}() ^
           static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::cout << "[ seed     ] " << (info ? info->name() : "?") << ": QLAYER_TEST_SEED=" << seed
            << std::endl;
  return seed;
}

TempDir::TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/qlayer_ckpt_XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << tmpl << " failed";
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string RawSafetensors(const std::string& header, const std::string& buffer,
                           std::optional<uint64_t> header_len) {
  uint64_t n = header_len.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i, n >>= 8) out[i] = static_cast<char>(n & 0xff);
  return out + header + buffer;
}

Tensor RandomTensor(DType dtype, Shape shape, std::mt19937_64& rng) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  const int64_t n = t.numel();
  std::uniform_real_distribution<double> uni(-2.0, 2.0);
  auto* bytes = static_cast<unsigned char*>(t.data());
  switch (dtype) {
    case DType::kF16:
    case DType::kBF16:
    case DType::kF32:
    case DType::kF64:
      for (int64_t i = 0; i < n; ++i) {
        double v = uni(rng);
        if (v == 0) v = 0.5;
        StoreFromDouble(t.data(), dtype, i, v);
      }
      break;
    default:
      for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] = static_cast<unsigned char>(rng() | 1);
      if (dtype == DType::kBool) {
        for (size_t i = 0; i < t.nbytes(); ++i) bytes[i] &= 1;
      }
  }
  return t;
}

CommandResult RunCommand(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const std::string& a : argv) {
    // Single-quote each argument for /bin/sh.
    std::string q = "'";
    for (char c : a) {
      if (c == '\'') {
        q += "'\\''";
      } else {
        q += c;
      }
    }
    cmd += q + "' ";
  }
  cmd += "2>&1";
  CommandResult r;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, got);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string QuantizeBinary() {
  const char* dir = std::getenv("QLAYER_BUILD_DIR");
  if (dir != nullptr && *dir != '\0') return std::string(dir) + "/server/qlayer-quantize";
  // Run by hand: <build>/tests/qlayer_checkpoint_tests -> <build>/server/.
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return (self.parent_path().parent_path() / "server" / "qlayer-quantize").string();
}

}  // namespace qlayer::testing
