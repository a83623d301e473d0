// Helpers shared by the checkpoint tests: seeds, temporary directories, raw
// safetensors bytes, random tensors, and running the qlayer-quantize binary.
#ifndef QLAYER_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
#define QLAYER_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "qlayer/kernels/tensor.h"

namespace qlayer::testing {

// QLAYER_TEST_SEED when set, else drawn per call; printed with the current
// test's name so a failure can be replayed.
uint64_t TestSeed();

// A fresh directory under $TEST_TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, const std::string& bytes);
std::string ReadFile(const std::string& path);

// u64 LE header length (default: header.size()) + header + buffer.
std::string RawSafetensors(const std::string& header, const std::string& buffer,
                           std::optional<uint64_t> header_len = std::nullopt);

// Random contents of any dtype; floats are finite and never all zero.
Tensor RandomTensor(DType dtype, Shape shape, std::mt19937_64& rng);

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};
CommandResult RunCommand(const std::vector<std::string>& argv);

// $QLAYER_BUILD_DIR/server/qlayer-quantize, or found from this test binary.
std::string QuantizeBinary();

}  // namespace qlayer::testing

#endif  // QLAYER_TESTS_CHECKPOINT_CHECKPOINT_TEST_UTIL_H_
