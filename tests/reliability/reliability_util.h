// Helpers for the load and fault tests: a checkpoint mixing formats, bit
// widths, group sizes, a dense layer and an MoE block (written by the real
// qlayer-quantize, merged into one directory); one request of any hosted
// layer checked against its float64 reference; the server's resident memory;
// latency percentiles; and a program runner for servers expected to fail.
// The server process, the float64 linear reference and request builders come
// from tests/service/service_test_util.h, the MoE reference from
// tests/service/moe_reference_util.h.
#ifndef QLAYER_TESTS_RELIABILITY_RELIABILITY_UTIL_H_
#define QLAYER_TESTS_RELIABILITY_RELIABILITY_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/layer_service.grpc.pb.h"
#include "tests/service/moe_reference_util.h"
#include "tests/service/service_test_util.h"

namespace qlayer::reliability {

// One checkpoint directory, GPTQ with per-module "dynamic" overrides, so one
// server hosts several schemes at once:
//   layers.0.*  uint4 asymmetric, group 128 (the base scheme), two shapes
//   layers.1.*  uint8 group 64 with act-order (g_idx)
//   layers.2.*  uint4b8 symmetric, one group per output channel, bf16 scales
//   layers.3    a Mixtral MoE block (8 experts, top-2, H 256, I 128)
//   layers.4.*  dense f16 (a "-:" rule keeps it unquantized)
// Each part is a separate qlayer-quantize run; their .safetensors files sit
// side by side (no index: the reader opens every file) under one config.json.
struct MixedModel {
  std::string dir;
  std::vector<std::string> linears;  // sorted
  std::string moe;                   // the MoE block's name
};
// Writes the checkpoint into `dir` (which must exist and be empty); fails the
// test and returns false when a step fails.
bool WriteMixedCheckpoint(const std::string& dir, uint64_t seed, MixedModel* out);

// The float64 references of every layer of a mixed checkpoint.
class MixedReference {
 public:
  explicit MixedReference(const MixedModel& model);
  bool ok() const { return ok_; }
  const testing::Reference& linear(const std::string& name) const { return *linears_.at(name); }
  const testing::MoEReference& moe() const { return *moe_; }

 private:
  bool ok_ = false;
  std::map<std::string, std::unique_ptr<testing::Reference>> linears_;
  std::unique_ptr<testing::MoEReference> moe_;
};

// A random Forward request on `layer` (M rows, dtype drawn from f16 / bf16 /
// f32) and its float64 reference answer.
struct CheckedRequest {
  Tensor x;
  std::vector<double> expected;
};
CheckedRequest RandomLinearRequest(const testing::Reference& ref, int64_t M, std::mt19937_64& rng);
// A random MoE request: T tokens routed by the caller (distinct top-k ids,
// positive weights), so the reference needs no router tie-breaking.
struct CheckedMoERequest {
  Tensor x;
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<double> expected;
};
CheckedMoERequest RandomMoERequest(const testing::MoEReference& ref, int64_t T,
                                   std::mt19937_64& rng);
v1::MoEForwardRequest MakeMoERequest(uint64_t id, const std::string& block,
                                     const CheckedMoERequest& r);
// The answer's output viewed as a tensor ("" when it carries none).
ConstTensorView MoEOutputView(const v1::MoEForwardResponse& r);

// Tolerance of an answer's relative error vs the float64 reference: the
// output is rounded to the request's dtype (bf16: 8 bits of mantissa).
double Tolerance(DType dtype);

// The environment entries of a qlayer-server whose RSS a test bounds: none
// in a plain build. Under ASan every freed block waits in a quarantine (256
// MiB by default, plus 1 MiB per thread) before it is reused, so a server's
// RSS climbs by up to that much under any churn of allocations and is flat
// only once it is full. Such a server gets an 8 MiB quarantine and 64 KiB per
// thread instead (still a use-after-free window of hundreds of requests'
// buffers), and its allocator keeps the pages it has (no release to the OS
// every 5 s, which made RSS drop and climb back by up to 20 MiB between two
// samples), so that the bounds of a plain build hold (RELIABILITY.md,
// Sanitizers).
std::vector<std::string> FlatRssServerEnv();

// VmRSS of `pid` in KiB (/proc/PID/status); -1 when it cannot be read.
int64_t RssKiB(pid_t pid);

// The p-quantile (0..1) of `values` (nearest rank); 0 for none.
double Quantile(std::vector<double> values, double p);

struct ProgramResult {
  int exit_code = -1;   // when it exited
  int term_signal = 0;  // when a signal ended it
  bool timed_out = false;
  std::string output;  // stdout and stderr
};
// Runs argv to completion, SIGKILLed after `timeout_s`. `extra_env` entries
// ("NAME=value") replace NAME in the environment it inherits (or are added).
ProgramResult RunProgram(const std::vector<std::string>& argv, double timeout_s,
                         const std::vector<std::string>& extra_env = {});

}  // namespace qlayer::reliability

#endif  // QLAYER_TESTS_RELIABILITY_RELIABILITY_UTIL_H_
