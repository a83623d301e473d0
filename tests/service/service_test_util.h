// Helpers for the service tests: the run's seed, checkpoints written by the
// real qlayer-quantize, a real qlayer-server child process on free ports, a
// float64 reference from the checkpoint, request builders, and a plain-socket
// HTTP GET for /metrics.
#ifndef QLAYER_TESTS_SERVICE_SERVICE_TEST_UTIL_H_
#define QLAYER_TESTS_SERVICE_SERVICE_TEST_UTIL_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "grpcpp/channel.h"
#include "qlayer/kernels/quantized_linear.h"
#include "qlayer/kernels/tensor.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer::testing {

// $QLAYER_TEST_SEED if set, else from the clock; printed once per run.
uint64_t TestSeed();

// $QLAYER_BUILD_DIR (set by ctest), else the build dir this test binary
// lives in (<build>/tests/qlayer_service_tests).
std::string BuildDir();

// A fresh empty directory under $TMPDIR, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// This process's environment ("NAME=value" entries), where each entry of
// `extra_env` replaces the one of the same NAME (or is added): a child's.
std::vector<std::string> EnvironmentWith(const std::vector<std::string>& extra_env);

// Runs <build>/server/qlayer-quantize with `args` plus --out DIR; fails the
// test (and returns false) when it exits non-zero.
bool RunQuantize(const std::vector<std::string>& args, const std::string& out_dir);

// A qlayer-server child process on 127.0.0.1 port 0 (gRPC and metrics),
// started with `extra_args`; ports parsed from its "listening on" line.
// `extra_env` entries ("NAME=value") replace NAME in the environment the
// child inherits (or are added).
class ServerProcess {
 public:
  ServerProcess(const std::string& model_dir, const std::vector<std::string>& extra_args,
                const std::vector<std::string>& extra_env = {});
  ~ServerProcess();  // SIGKILL if still running
  bool ok() const { return grpc_port_ > 0; }
  std::string address() const;
  int metrics_port() const { return metrics_port_; }
  pid_t pid() const { return pid_; }
  bool Alive();
  // SIGTERM, then waits up to `timeout_s`: the exit status (waitpid's), or
  // -1 on timeout (the process is then killed).
  int Terminate(double timeout_s);
  std::shared_ptr<grpc::Channel> Channel() const;
  std::unique_ptr<v1::LayerService::Stub> Stub() const;

 private:
  pid_t pid_ = -1;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
};

// The canonical weight of each linear layer of a checkpoint, as decoded
// in-process by the checkpoint reader.
std::map<std::string, QuantizedLinear> LoadLayers(const std::string& dir);

// x [M, K] in `dtype` with entries uniform in [-1, 1].
Tensor RandomInput(DType dtype, int64_t M, int64_t K, std::mt19937_64& rng);
// The float64 reference of one layer: its weight dequantized once.
class Reference {
 public:
  explicit Reference(const QuantizedLinear& w);
  int64_t K() const { return K_; }
  int64_t N() const { return N_; }
  // y = x W^T + b in float64, from the exact (already rounded) input values.
  std::vector<double> Forward(const ConstTensorView& x) const;

 private:
  int64_t K_ = 0, N_ = 0;
  std::vector<double> w_kn_;  // [K, N]
  std::vector<double> bias_;  // [N] or empty
};
// ||y - ref|| / ||ref|| with y read in its own dtype.
double RelativeError(const ConstTensorView& y, const std::vector<double>& ref);

// A wire tensor with `data` (little-endian bytes) for x: f16, bf16, f32,
// i32 or i64 (anything else fails the test).
v1::Tensor ToWire(const ConstTensorView& x);
v1::Tensor ToWire(DType dtype, const Shape& shape, const void* data);
// A ForwardRequest carrying x.
v1::ForwardRequest MakeRequest(uint64_t id, const std::string& layer, const ConstTensorView& x);
// A view of a wire tensor's bytes (f16, bf16, f32, i32, i64), or an empty
// view when the dtype is another or the byte count does not match the shape.
ConstTensorView WireView(const v1::Tensor& t);
// The answer's output as a view (into the response's bytes), or an empty
// view if the answer carries no float output.
ConstTensorView OutputView(const v1::ForwardResponse& r);

// GET http://127.0.0.1:port/path over a plain socket; the body, or "" on
// failure.
std::string HttpGet(int port, const std::string& path);
// The value of the sample `metric{labels...}` whose label set contains every
// `name="value"` pair in `labels` (summed over matching samples); -1 when
// none matches.
double MetricValue(const std::string& exposition, const std::string& metric,
                   const std::map<std::string, std::string>& labels);

}  // namespace qlayer::testing

#endif  // QLAYER_TESTS_SERVICE_SERVICE_TEST_UTIL_H_
