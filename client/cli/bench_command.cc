// bench: latency and throughput of one layer over the real wire, split into
// what the server spent (its reported queue / compute / total) and what the
// transport cost (client latency - server total), optionally beside a plain
// gRPC echo of the same payloads measured in the same run.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/bench_report.h"
#include "client/cli/child_process.h"
#include "client/cli/commands.h"
#include "client/cli/load_run.h"
#include "client/cli/moe_commands.h"
#include "client/cli/random_input.h"
#include "client/cli/tensor_file.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

struct Summary {
  int64_t requests = 0;
  double requests_per_s = 0, rows_per_s = 0;
  int64_t latency_p50 = 0, latency_p99 = 0, latency_mean = 0;
  int64_t total_p50 = 0, total_p99 = 0;
  int64_t compute_p50 = 0, compute_p99 = 0;
  int64_t queue_p50 = 0, queue_p99 = 0;
  int64_t overhead_p50 = 0, overhead_p99 = 0;
  // The service's whole cost beyond the kernel: client latency p50 - server
  // compute p50 (transport, queueing, hand-offs, encoding).
  int64_t beyond_compute_p50 = 0;
  int64_t batch_rows_p50 = 0, batch_rows_max = 0;
  double kernel_rows_per_s = 0;  // rows of a batch / its compute time, p50
};

Summary Summarize(const LoadResult& r, int64_t rows) {
  Summary s;
  s.requests = static_cast<int64_t>(r.samples.size());
  s.requests_per_s = static_cast<double>(s.requests) / r.window_seconds;
  s.rows_per_s = s.requests_per_s * static_cast<double>(rows);
  std::vector<int64_t> lat, total, compute, queue, overhead, batch, kernel_rate;
  int64_t lat_sum = 0;
  for (const LoadSample& x : r.samples) {
    lat.push_back(x.latency_us);
    lat_sum += x.latency_us;
    total.push_back(x.total_us);
    compute.push_back(x.compute_us);
    queue.push_back(x.queue_us);
    // Per request: the server's own clock cannot be compared with ours, but
    // its durations can.
    overhead.push_back(x.latency_us - x.total_us);
    batch.push_back(x.batch_rows);
    if (x.compute_us > 0) kernel_rate.push_back(x.batch_rows * 1000000 / x.compute_us);
  }
  s.latency_p50 = Percentile(lat, 0.5);
  s.latency_p99 = Percentile(lat, 0.99);
  s.latency_mean = s.requests ? lat_sum / s.requests : 0;
  s.total_p50 = Percentile(total, 0.5);
  s.total_p99 = Percentile(total, 0.99);
  s.compute_p50 = Percentile(compute, 0.5);
  s.compute_p99 = Percentile(compute, 0.99);
  s.queue_p50 = Percentile(queue, 0.5);
  s.queue_p99 = Percentile(queue, 0.99);
  s.overhead_p50 = Percentile(overhead, 0.5);
  s.overhead_p99 = Percentile(overhead, 0.99);
  s.beyond_compute_p50 = s.latency_p50 - s.compute_p50;
  s.batch_rows_p50 = Percentile(batch, 0.5);
  s.batch_rows_max = batch.empty() ? 0 : *std::max_element(batch.begin(), batch.end());
  s.kernel_rows_per_s = static_cast<double>(Percentile(kernel_rate, 0.5));
  return s;
}

nlohmann::json ToJson(const Summary& s, const LoadResult& r) {
  nlohmann::json j;
  j["requests"] = s.requests;
  j["requests_per_s"] = s.requests_per_s;
  j["rows_per_s"] = s.rows_per_s;
  j["latency_us"] = {{"p50", s.latency_p50}, {"p99", s.latency_p99}, {"mean", s.latency_mean}};
  j["server_total_us"] = {{"p50", s.total_p50}, {"p99", s.total_p99}};
  j["server_compute_us"] = {{"p50", s.compute_p50}, {"p99", s.compute_p99}};
  j["server_queue_us"] = {{"p50", s.queue_p50}, {"p99", s.queue_p99}};
  j["transport_overhead_us"] = {{"p50", s.overhead_p50}, {"p99", s.overhead_p99}};
  j["latency_minus_compute_p50_us"] = s.beyond_compute_p50;
  j["batch_rows"] = {{"p50", s.batch_rows_p50}, {"max", s.batch_rows_max}};
  j["kernel_rows_per_s_p50"] = s.kernel_rows_per_s;
  j["kernels"] = r.kernels;
  j["errors"] = r.errors;
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

std::string MainKernel(const LoadResult& r) {
  std::string best;
  int64_t count = -1;
  for (const auto& [k, n] : r.kernels) {
    if (n > count) best = k, count = n;
  }
  return best;
}

// Spawns this program's echo-server, runs the same load against it.
absl::StatusOr<LoadResult> RunEchoLoad(const BenchCommand& cmd, const LoadSpec& spec,
                                       const Tensor& x, int64_t out_features) {
  if (cmd.self_path.empty()) return absl::FailedPreconditionError("bench --echo: no self path");
  QLAYER_ASSIGN_OR_RETURN(
      std::unique_ptr<ChildProcess> echo,
      ChildProcess::Spawn({cmd.self_path, "--listen=127.0.0.1:0",
                           absl::StrCat("--out_features=", out_features), "echo-server"}));
  QLAYER_ASSIGN_OR_RETURN(std::string line, echo->WaitForLine("listening on ", absl::Seconds(20)));
  const std::string address = line.substr(line.rfind(' ') + 1);
  QLAYER_ASSIGN_OR_RETURN(std::unique_ptr<Client> client, Client::Connect(address));
  QLAYER_RETURN_IF_ERROR(client->WaitForReady(absl::Seconds(10)));
  return RunLoad(*client, spec, x);
}

}  // namespace

absl::Status RunBench(Client& client, const BenchCommand& cmd, std::ostream& out) {
  if (cmd.layer.empty()) return absl::InvalidArgumentError("bench needs --layer");
  if (cmd.rows < 1 || cmd.seconds <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bench needs --rows >= 1 and --seconds > 0 (got ", cmd.rows, ", ", cmd.seconds, ")"));
  }
  QLAYER_ASSIGN_OR_RETURN(DType dtype, ParseActivationDType(cmd.dtype));
  QLAYER_ASSIGN_OR_RETURN(v1::LayerInfo info, client.DescribeLayer(cmd.layer));
  if (info.kind() == "moe") return RunMoEBench(client, cmd, info, out);
  if (info.kind() != "linear") {
    return absl::UnimplementedError(
        absl::StrCat("bench drives Forward on linear layers; ", cmd.layer, " is ", info.kind()));
  }
  const uint64_t seed = cmd.seed != 0 ? cmd.seed : ClockSeed();
  const Tensor x = RandomActivations(dtype, cmd.rows, info.in_features(), seed);
  LoadSpec spec;
  spec.layer = cmd.layer;
  spec.streams = cmd.streams;
  spec.depth = cmd.depth;
  spec.window = absl::Seconds(cmd.seconds);
  spec.warmup = cmd.warmup_seconds >= 0 ? absl::Seconds(cmd.warmup_seconds)
                                        : std::min(absl::Seconds(1), spec.window / 5);
  QLAYER_ASSIGN_OR_RETURN(LoadResult run, RunLoad(client, spec, x));
  const Summary s = Summarize(run, cmd.rows);

  std::optional<LoadResult> echo;
  std::optional<Summary> es;
  if (cmd.echo) {
    QLAYER_ASSIGN_OR_RETURN(echo, RunEchoLoad(cmd, spec, x, info.out_features()));
    es = Summarize(*echo, cmd.rows);
  }
  const double ratio = es && es->overhead_p50 > 0 ? static_cast<double>(s.overhead_p50) /
                                                        static_cast<double>(es->overhead_p50)
                                                  : 0;
  // The echo computes nothing: its latency is all overhead.
  const double beyond_ratio = es && es->beyond_compute_p50 > 0
                                  ? static_cast<double>(s.beyond_compute_p50) /
                                        static_cast<double>(es->beyond_compute_p50)
                                  : 0;

  if (cmd.json) {
    nlohmann::json j = ToJson(s, run);
    AddBenchSettings(cmd, seed, j);
    j["kernel"] = MainKernel(run);
    j["device"] = info.device();
    j["format"] = info.format();
    j["in_features"] = info.in_features();
    j["out_features"] = info.out_features();
    j["seconds"] = cmd.seconds;
    j["warmup_seconds"] = absl::ToDoubleSeconds(spec.warmup);
    if (echo) {
      j["echo"] = ToJson(*es, *echo);
      j["overhead_vs_echo_p50"] = ratio;
      j["latency_minus_compute_vs_echo_p50"] = beyond_ratio;
    }
    out << j.dump(2) << "\n";
    return absl::OkStatus();
  }
  out << absl::StrFormat(
      "bench %s: %s, K=%d N=%d on %s; rows %d, %d streams x depth %d, %s, %.1f s "
      "(after %.1f s warm-up)\n",
      cmd.layer, info.format(), info.in_features(), info.out_features(), info.device(), cmd.rows,
      cmd.streams, cmd.depth, cmd.dtype, cmd.seconds, absl::ToDoubleSeconds(spec.warmup));
  for (const auto& [k, n] : run.kernels) {
    out << absl::StrFormat("  kernel          %s (%.0f%% of answers)\n", k,
                           100.0 * static_cast<double>(n) / static_cast<double>(s.requests));
  }
  out << absl::StrFormat("  throughput      %.1f requests/s, %.1f rows/s (%d answers)\n",
                         s.requests_per_s, s.rows_per_s, s.requests)
      << absl::StrFormat("  latency         p50 %d us, p99 %d us, mean %d us\n", s.latency_p50,
                         s.latency_p99, s.latency_mean)
      << absl::StrFormat(
             "  server          total p50 %d us; compute p50 %d us (p99 %d); queue p50 %d us\n",
             s.total_p50, s.compute_p50, s.compute_p99, s.queue_p50)
      << absl::StrFormat("  transport       p50 %d us, p99 %d us (client latency - server total)\n",
                         s.overhead_p50, s.overhead_p99)
      << absl::StrFormat("  beyond compute  %d us (client latency p50 - server compute p50)\n",
                         s.beyond_compute_p50)
      << absl::StrFormat(
             "  batches         p50 %d rows, max %d; kernel alone ~%.0f rows/s at those\n",
             s.batch_rows_p50, s.batch_rows_max, s.kernel_rows_per_s);
  if (es) {
    out << absl::StrFormat(
               "  echo baseline   latency p50 %d us, p99 %d us; transport p50 %d us; %.1f "
               "requests/s\n",
               es->latency_p50, es->latency_p99, es->overhead_p50, es->requests_per_s)
        << absl::StrFormat("  overhead / echo %.2fx transport p50; %.2fx latency - compute p50\n",
                           ratio, beyond_ratio);
  }
  PrintBenchErrors(run.errors, run.first_error, out);
  return absl::OkStatus();
}

}  // namespace qlayer
