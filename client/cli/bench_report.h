// What bench's two reports (a linear layer: bench_command.cc, an MoE block:
// moe_bench.cc) print the same way.
#ifndef QLAYER_CLIENT_CLI_BENCH_REPORT_H_
#define QLAYER_CLIENT_CLI_BENCH_REPORT_H_

#include <cstdint>
#include <map>
#include <ostream>
#include <string>

#include "client/cli/commands.h"
#include "nlohmann/json.hpp"

namespace qlayer {

// The run's settings in --json output: layer, rows, streams, depth, dtype,
// seed.
void AddBenchSettings(const BenchCommand& cmd, uint64_t seed, nlohmann::json& j);

// One line per error code (status code name -> count) and the first error;
// nothing when there were none.
void PrintBenchErrors(const std::map<std::string, int64_t>& errors, const std::string& first_error,
                      std::ostream& out);

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CLI_BENCH_REPORT_H_
