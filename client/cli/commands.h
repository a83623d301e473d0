// The qlayer-cli subcommands, as functions of a connected Client so that
// qlayer_cli_main.cc is only flag parsing (and the tests can call them).
// Human-readable output goes to `out`; a command returns a non-OK status for
// failures of its own (bad file, unknown layer, server error).
#ifndef QLAYER_CLIENT_CLI_COMMANDS_H_
#define QLAYER_CLIENT_CLI_COMMANDS_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace qlayer {

// list [--glob G] [--json]: one line per layer.
absl::Status RunList(Client& client, const std::string& glob, bool json, std::ostream& out);
// describe LAYER [--json]: shapes, format, kernels and every rejected kernel.
absl::Status RunDescribe(Client& client, const std::string& layer, bool json, std::ostream& out);

struct ForwardCommand {
  std::string layer;
  std::string input;       // .npy or .safetensors
  std::string input_name;  // tensor in a .safetensors input; empty = the only one
  std::string output;      // .npy or .safetensors
  std::string dtype;       // f16|bf16|f32 on the wire; empty = the input's (f64 -> f32)
  absl::Duration timeout = absl::Seconds(60);
};
// Sends the input, writes the answer, prints the kernel and the timings.
absl::Status RunForward(Client& client, const ForwardCommand& cmd, std::ostream& out);
// The last lines forward and moe print: the server's and the client's
// timings of the answer, and the file it went to (`note`: how it was
// written, from WriteAnswerFile).
void PrintAnswerTimings(int64_t queue_us, int64_t compute_us, int64_t total_us, int64_t latency_us,
                        const std::string& output, const std::string& note, std::ostream& out);

struct VerifyCommand {
  std::string layer;
  std::string model_dir;  // the checkpoint the server loaded
  int64_t rows = 4;
  std::string dtype = "f16";
  uint64_t seed = 0;     // 0 = from the clock (printed either way)
  double tolerance = 0;  // <= 0: the dtype's default
  absl::Duration timeout = absl::Seconds(60);
};
// The end-to-end check: random inputs, the server's answer against a local
// float64 reference from the same checkpoint. Returns false (after printing
// FAIL and the error) when the answer is off; PASS prints true.
absl::StatusOr<bool> RunVerify(Client& client, const VerifyCommand& cmd, std::ostream& out);
// Default tolerance on ||y - ref|| / ||ref|| for answers in `dtype` ("f16", ...).
double DefaultVerifyTolerance(const std::string& dtype);

struct BenchCommand {
  std::string layer;
  int64_t rows = 1;
  int streams = 1;
  int depth = 1;  // requests in flight per stream
  double seconds = 5;
  double warmup_seconds = -1;  // < 0: min(1 s, seconds / 5); not counted
  std::string dtype = "f16";
  bool json = false;
  // Also run the same load against a plain gRPC echo server (a child
  // process: this program's echo-server command) and report it beside.
  bool echo = false;
  std::string self_path;  // this program, for spawning the echo server
  uint64_t seed = 0;
  // MoE blocks: the server's memory read bandwidth for the floor, bytes/s
  // (0: measure this machine's, right for a server on the same host).
  double read_bandwidth = 0;
};
absl::Status RunBench(Client& client, const BenchCommand& cmd, std::ostream& out);

// echo-server --listen ADDR --out-features N: answers every Forward request
// at once with an [M, N] tensor of the request's dtype (zeros) and its own
// timing, and nothing else. Prints "qlayer-cli echo-server listening on
// HOST:PORT", then serves until its standard input closes (the bench that
// spawned it exits or is done) or it gets SIGINT/SIGTERM.
absl::Status RunEchoServer(const std::string& listen, int64_t out_features, std::ostream& out);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_COMMANDS_H_
