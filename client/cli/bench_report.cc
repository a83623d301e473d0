#include "client/cli/bench_report.h"

namespace qlayer {

void AddBenchSettings(const BenchCommand& cmd, uint64_t seed, nlohmann::json& j) {
  j["layer"] = cmd.layer;
  j["rows"] = cmd.rows;
  j["streams"] = cmd.streams;
  j["depth"] = cmd.depth;
  j["dtype"] = cmd.dtype;
  j["seed"] = seed;
}

void PrintBenchErrors(const std::map<std::string, int64_t>& errors, const std::string& first_error,
                      std::ostream& out) {
  if (errors.empty()) return;
  for (const auto& [code, n] : errors) out << "  errors          " << n << " " << code << "\n";
  out << "  first error     " << first_error << "\n";
}

}  // namespace qlayer
