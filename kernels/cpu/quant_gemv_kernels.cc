// The registered W4A16 / W8A16 GEMV kernels for few rows. Each serves M up
// to its max_m, the crossover with onednn_dense measured on the 2-core
// AMD EPYC (Zen 5) CI machine by kernels/cpu/bench (BENCHMARKS.md, "CPU
// linear kernels"); beyond it the dequantized bf16 GEMM wins.
#include "cpu/quant_gemv_kernel.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {
namespace {

// Rows up to which the GEMV kernels beat onednn_dense (see file comment).
constexpr int64_t kAvx512MaxM = 32;
constexpr int64_t kAvx2MaxM = 16;

KernelFactory GemvFactory(const char* name, GemvIsa isa, int bits, int priority, int64_t max_m) {
  KernelFactory f;
  f.name = name;
  f.backend = Backend::kCpu;
  f.priority = priority;  // below onednn_dense's 100: tried first, for M <= max_m
  f.max_m = max_m;
  f.can_implement = [isa, bits](const LinearSpec& spec, const Device& device) {
    return QuantGemvCanImplement(isa, bits, spec, device);
  };
  const std::string n = name;
  f.create = [isa, bits, n] { return MakeQuantGemvKernel(isa, bits, n); };
  return f;
}

}  // namespace

KernelFactory CpuAvx512W4A16KernelFactory() {
  return GemvFactory("cpu_avx512_w4a16", GemvIsa::kAvx512, 4, 10, kAvx512MaxM);
}
KernelFactory CpuAvx512W8A16KernelFactory() {
  return GemvFactory("cpu_avx512_w8a16", GemvIsa::kAvx512, 8, 11, kAvx512MaxM);
}
KernelFactory CpuAvx2W4A16KernelFactory() {
  return GemvFactory("cpu_avx2_w4a16", GemvIsa::kAvx2, 4, 20, kAvx2MaxM);
}
KernelFactory CpuAvx2W8A16KernelFactory() {
  return GemvFactory("cpu_avx2_w8a16", GemvIsa::kAvx2, 8, 21, kAvx2MaxM);
}

}  // namespace qlayer
