// Where a layer hands batches from one prepared kernel to the next, measured
// on the device at load. A decode kernel's advantage over dequantize + GEMM
// ends at an M that depends on the device (its bandwidth against its matrix
// rate) and on the shape (how well each fills the SMs): on the H200 the
// crossover of cuda_mma_w4a16 was 16 rows on three of four shapes and 32 on
// the fourth, against a fixed 32 measured on an H100 (BENCHMARKS.md). So
// each distinct layer shape is timed once per process on its device, both
// kernels with cold weights, and the result is reused for every layer of
// that shape.
#ifndef QLAYER_KERNELS_CROSSOVER_H_
#define QLAYER_KERNELS_CROSSOVER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qlayer/kernels/linear_kernel.h"

namespace qlayer {

// The row counts timed, ascending.
const std::vector<int64_t>& CrossoverCandidates();

struct Crossover {
  int64_t max_m = 0;  // `small` serves rows up to this
  bool cached = false;
  // Per candidate timed: "M=16 9.1/12.0 us" (small / large), for the log.
  std::string detail;
};

// The largest candidate M in [min_m, max_m] at which `small` is no slower
// than `large`, together with every candidate below it (timing stops at the
// first candidate that `large` wins by more than 3 %, the noise of one
// timing); min_m when `large` already wins at the first. Results are cached
// under `cache_key` for the life of the process. Unimplemented when either
// kernel offers no timing (LinearKernel::MeasureForwardUs).
absl::StatusOr<Crossover> MeasureCrossover(const std::string& cache_key, const LinearKernel& small,
                                           const LinearKernel& large, DType act, int64_t min_m,
                                           int64_t max_m);

// The cache key of a layer: the device and every field of its spec.
std::string CrossoverKey(const LinearSpec& spec, const Device& device, absl::string_view small,
                         absl::string_view large);

// Forgets every cached result (tests).
void ClearCrossoverCache();

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CROSSOVER_H_
