// A timed closed-loop load: `streams` lanes, each keeping `depth` Forward
// calls in flight (a new one is sent as each answer arrives), for a warm-up
// that is not counted and then a measured window. Shared by bench's server
// run and its echo baseline, so both see exactly the same client.
#ifndef QLAYER_CLIENT_CLI_LOAD_RUN_H_
#define QLAYER_CLIENT_CLI_LOAD_RUN_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"

namespace qlayer {

struct LoadSample {
  int64_t latency_us;  // client-measured
  int64_t total_us;    // server-reported
  int64_t compute_us;
  int64_t queue_us;
  int64_t batch_rows;
};

struct LoadResult {
  std::vector<LoadSample> samples;  // answers that arrived in the window
  std::map<std::string, int64_t> kernels;
  std::map<std::string, int64_t> errors;  // status code name -> count
  std::string first_error;
  double window_seconds = 0;
};

struct LoadSpec {
  std::string layer;
  int streams = 1;
  int depth = 1;
  absl::Duration warmup;
  absl::Duration window;
  absl::Duration call_timeout = absl::Seconds(30);
};

// Runs the load with `x` as every request's input. A lane stops at its first
// error (recorded); the run fails only when no answer arrived at all.
absl::StatusOr<LoadResult> RunLoad(Client& client, const LoadSpec& spec, const Tensor& x);

// Nearest-rank percentile (p in [0, 1]) of `v`; 0 for an empty vector.
int64_t Percentile(std::vector<int64_t> v, double p);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_LOAD_RUN_H_
