// bench on an MoE block: S streams, each keeping D MoEForward requests in
// flight (server routing, routing returned; 32 distinct seeded inputs
// cycled), for a warm-up and a measured window. Beside the server's compute
// time it prints each request's floor: the bytes of the experts its tokens
// touched (4- or 8-bit weights, scales, packed zeros; plus the shared expert)
// over the read bandwidth measured in this process (or --bandwidth-gbs) --
// the decode bound of DESIGN.md's performance model. With one
// stream and depth 1 a batch is one request, so compute / floor is the
// experts kernel's distance from the bound (when the server runs here).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/bench_report.h"
#include "client/cli/load_run.h"
#include "client/cli/moe_commands.h"
#include "client/cli/random_input.h"
#include "client/cli/tensor_file.h"
#include "client/moe_stream.h"
#include "nlohmann/json.hpp"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

struct MoESample {
  int64_t latency_us, total_us, compute_us, queue_us, batch_rows, experts;
};

// Read bandwidth of this machine in bytes/s: a 1 GiB buffer (far larger than
// any LLC) read in 64 MiB slices, every hardware thread summing its part of
// a slice; the best slice over two passes counts, since on a shared machine
// other processes only ever slow a slice down.
double MeasureReadBandwidth() {
  constexpr size_t kBytes = size_t{1} << 30, kSlice = size_t{64} << 20;
  std::vector<uint64_t> buf(kBytes / sizeof(uint64_t));
  std::memset(buf.data(), 1, kBytes);
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t words = kSlice / sizeof(uint64_t), per = words / threads;
  double best = 0;
  std::atomic<uint64_t> sink{0};
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t slice = 0; slice + words <= buf.size(); slice += words) {
      const absl::Time start = absl::Now();
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          uint64_t a = 0, b = 0, c = 0, d = 0;
          const uint64_t* p = buf.data() + slice + t * per;
          for (size_t i = 0; i + 4 <= per; i += 4) {
            a += p[i];
            b += p[i + 1];
            c += p[i + 2];
            d += p[i + 3];
          }
          sink += a + b + c + d;
        });
      }
      for (auto& th : pool) th.join();
      best =
          std::max(best, static_cast<double>(kSlice) / absl::ToDoubleSeconds(absl::Now() - start));
    }
  }
  return sink.load() == 42 ? best + 1 : best;  // keeps the sums alive
}

// Bytes of one gated MLP (w13 K=H N=2I, w2 K=I N=H) as a checkpoint stores
// them: bits per weight, a scale per group and column, packed zero points.
double MlpBytes(int64_t H, int64_t I, const v1::LayerInfo& info) {
  if (I <= 0) return 0;
  const double bits = info.bits();
  if (info.weight_type() == "dense") return 3.0 * static_cast<double>(H * I) * bits / 8;
  const int64_t G = info.group_size() > 0 ? info.group_size() : H;
  const double scale_bytes = info.scale_dtype() == "f32" ? 4 : 2;
  const double weights = 3.0 * static_cast<double>(H * I);
  // Groups along K: H/G groups of w13's 2I columns, I/G of w2's H columns.
  const double groups = static_cast<double>(H / std::max<int64_t>(G, 1) * 2 * I) +
                        static_cast<double>(std::max<int64_t>(I / std::max<int64_t>(G, 1), 1) * H);
  return weights * bits / 8 + groups * (scale_bytes + (info.zero_points() ? bits / 8 : 0));
}

}  // namespace

absl::Status RunMoEBench(Client& client, const BenchCommand& cmd, const v1::LayerInfo& info,
                         std::ostream& out) {
  QLAYER_ASSIGN_OR_RETURN(DType dtype, ParseActivationDType(cmd.dtype));
  if (cmd.streams < 1 || cmd.depth < 1) {
    return absl::InvalidArgumentError("bench needs --streams >= 1 and --depth >= 1");
  }
  const uint64_t seed = cmd.seed != 0 ? cmd.seed : ClockSeed();
  const int64_t H = info.in_features();
  // Distinct inputs, cycled: each routes to its own experts, as successive
  // decode steps do, so one request's experts are not the cached ones of
  // the request before (the same input every time would re-read the same
  // experts, partly from the LLC).
  std::vector<Tensor> inputs;
  for (uint64_t i = 0; i < 32; ++i)
    inputs.push_back(RandomActivations(dtype, cmd.rows, H, seed + i));
  std::atomic<uint64_t> next_input{0};
  auto next_x = [&]() { return inputs[next_input.fetch_add(1) % inputs.size()].view(); };
  const absl::Duration window = absl::Seconds(cmd.seconds);
  const absl::Duration warmup = cmd.warmup_seconds >= 0 ? absl::Seconds(cmd.warmup_seconds)
                                                        : std::min(absl::Seconds(1), window / 5);
  const bool measured = cmd.read_bandwidth <= 0;
  const double bandwidth = measured ? MeasureReadBandwidth() : cmd.read_bandwidth;

  std::mutex mu;
  std::vector<MoESample> samples;
  std::map<std::string, int64_t> kernels;
  std::map<std::string, int64_t> errors;
  std::string first_error;
  const absl::Time measure_from = absl::Now() + warmup;
  const absl::Time end = measure_from + window;
  std::vector<std::thread> lanes;
  for (int s = 0; s < cmd.streams; ++s) {
    lanes.emplace_back([&] {
      auto fail = [&](const absl::Status& st) {
        std::lock_guard<std::mutex> lock(mu);
        ++errors[std::string(absl::StatusCodeToString(st.code()))];
        if (first_error.empty()) first_error = st.ToString();
      };
      absl::StatusOr<std::unique_ptr<MoEStream>> stream = MoEStream::Open(
          client.address(), absl::Seconds(30), absl::InfiniteDuration(), client.options().security);
      if (!stream.ok()) return fail(stream.status());
      MoERoutingInput routing;
      routing.return_routing = true;
      int inflight = 0;
      for (; inflight < cmd.depth; ++inflight) {
        absl::Status sent = (*stream)->Send(cmd.layer, next_x(), routing).status();
        if (!sent.ok()) return fail(sent);
      }
      while (inflight > 0) {
        absl::StatusOr<MoEResult> r = (*stream)->Read();
        --inflight;
        if (!r.ok()) return fail(r.status());
        if (!r->status.ok()) return fail(r->status);
        const absl::Time now = absl::Now();
        if (now >= measure_from && now < end) {
          std::set<int32_t> touched(r->topk_ids.as<int32_t>(),
                                    r->topk_ids.as<int32_t>() + r->topk_ids.numel());
          std::lock_guard<std::mutex> lock(mu);
          samples.push_back({r->latency_us, r->total_us, r->compute_us, r->queue_us, r->batch_rows,
                             static_cast<int64_t>(touched.size())});
          for (const std::string& k : r->kernels) ++kernels[k];
        }
        if (now < end) {
          absl::Status sent = (*stream)->Send(cmd.layer, next_x(), routing).status();
          if (!sent.ok()) return fail(sent);
          ++inflight;
        }
      }
      (void)(*stream)->Close();
    });
  }
  for (auto& t : lanes) t.join();
  if (samples.empty()) {
    return absl::UnavailableError(absl::StrCat("bench ", cmd.layer, ": no answer in the window",
                                               first_error.empty() ? "" : ": ", first_error));
  }

  const v1::MoEInfo& m = info.moe();
  const double expert_bytes = MlpBytes(H, m.intermediate_size(), info);
  const double shared_bytes = MlpBytes(H, m.shared_intermediate_size(), info);
  std::vector<int64_t> lat, total, compute, queue, batch, experts, floor_us, ratio_x100;
  for (const MoESample& s : samples) {
    lat.push_back(s.latency_us);
    total.push_back(s.total_us);
    compute.push_back(s.compute_us);
    queue.push_back(s.queue_us);
    batch.push_back(s.batch_rows);
    experts.push_back(s.experts);
    const double f =
        (static_cast<double>(s.experts) * expert_bytes + shared_bytes) / bandwidth * 1e6;
    floor_us.push_back(static_cast<int64_t>(f + 0.5));
    if (f > 0) ratio_x100.push_back(static_cast<int64_t>(100.0 * s.compute_us / f));
  }
  const double window_s = absl::ToDoubleSeconds(window);
  const double rps = static_cast<double>(samples.size()) / window_s;
  const int64_t experts_p50 = Percentile(experts, 0.5);
  const double floor_bytes = static_cast<double>(experts_p50) * expert_bytes + shared_bytes;

  if (cmd.json) {
    nlohmann::json j;
    AddBenchSettings(cmd, seed, j);
    j["kind"] = "moe";
    j["family"] = m.family();
    j["num_experts"] = m.num_experts();
    j["top_k"] = m.top_k();
    j["hidden"] = H;
    j["intermediate"] = m.intermediate_size();
    j["format"] = info.format();
    j["device"] = info.device();
    j["requests"] = samples.size();
    j["requests_per_s"] = rps;
    j["latency_us"] = {{"p50", Percentile(lat, 0.5)}, {"p99", Percentile(lat, 0.99)}};
    j["server_total_us"] = {{"p50", Percentile(total, 0.5)}, {"p99", Percentile(total, 0.99)}};
    j["server_compute_us"] = {{"p10", Percentile(compute, 0.1)},
                              {"p50", Percentile(compute, 0.5)},
                              {"p99", Percentile(compute, 0.99)}};
    j["batch_rows"] = {{"p50", Percentile(batch, 0.5)}};
    j["experts_touched_p50"] = experts_p50;
    j["floor_bytes_p50"] = floor_bytes;
    j["read_bandwidth_bytes_per_s"] = bandwidth;
    j["read_bandwidth_measured"] = measured;
    j["floor_us_p50"] = Percentile(floor_us, 0.5);
    j["compute_over_floor_p10"] = Percentile(ratio_x100, 0.1) / 100.0;
    j["compute_over_floor_p50"] = Percentile(ratio_x100, 0.5) / 100.0;
    j["kernels"] = kernels;
    j["errors"] = errors;
    if (!first_error.empty()) j["first_error"] = first_error;
    out << j.dump(2) << "\n";
    return absl::OkStatus();
  }
  out << absl::StrFormat(
      "bench %s: MoE %s, %d experts top-%d, H=%d I=%d%s, %s %s g%d on %s; rows %d, %d streams x "
      "depth %d, %s, %.1f s (after %.1f s warm-up)\n",
      cmd.layer, m.family(), m.num_experts(), m.top_k(), H, m.intermediate_size(),
      m.shared_intermediate_size() > 0 ? absl::StrCat(" shared ", m.shared_intermediate_size())
                                       : "",
      info.format(), info.weight_type(), info.group_size(), info.device(), cmd.rows, cmd.streams,
      cmd.depth, cmd.dtype, cmd.seconds, absl::ToDoubleSeconds(warmup));
  for (const auto& [k, n] : kernels) out << "  kernel          " << k << " (" << n << " answers)\n";
  if (cmd.echo) out << "  echo baseline   not run: --echo compares Forward payloads only\n";
  out << absl::StrFormat("  throughput      %.1f requests/s, %.1f tokens/s (%d answers)\n", rps,
                         rps * static_cast<double>(cmd.rows), samples.size())
      << absl::StrFormat("  latency         p50 %d us, p99 %d us\n", Percentile(lat, 0.5),
                         Percentile(lat, 0.99))
      << absl::StrFormat(
             "  server          total p50 %d us; compute p10 %d us, p50 %d us (p99 %d); queue "
             "p50 %d us; batches p50 %d rows\n",
             Percentile(total, 0.5), Percentile(compute, 0.1), Percentile(compute, 0.5),
             Percentile(compute, 0.99), Percentile(queue, 0.5), Percentile(batch, 0.5))
      << absl::StrFormat(
             "  floor           %d of %d experts touched (p50): %.0f bytes / %.1f GB/s read "
             "(%s) = %d us; compute / floor p10 %.2fx, p50 %.2fx\n",
             experts_p50, m.num_experts(), floor_bytes, bandwidth / 1e9,
             measured ? "measured here" : "--bandwidth-gbs", Percentile(floor_us, 0.5),
             Percentile(ratio_x100, 0.1) / 100.0, Percentile(ratio_x100, 0.5) / 100.0);
  PrintBenchErrors(errors, first_error, out);
  return absl::OkStatus();
}

}  // namespace qlayer
