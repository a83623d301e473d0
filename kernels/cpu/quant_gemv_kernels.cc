// The registered W4A16 / W8A16 GEMV kernels for few rows. Each serves M up
// to its max_m, the crossover with onednn_dense measured on the 2-core
// AMD EPYC (Zen 5) CI machine with `qlayer_cpu_linear_bench
// --qlayer_crossover` (BENCHMARKS.md, "CPU linear kernels"); beyond it the
// dequantized GEMM is as fast or faster and takes the rows.
#include "cpu/cpu_features.h"
#include "cpu/quant_gemv_kernel.h"
#include "qlayer/kernels/registry.h"

namespace qlayer {
namespace {

// cpu_avx512_w4a16 against oneDNN bf16, one thread, CPU time: 4.6-5.1x at
// M = 2, 1.3-1.6x at 16, 1.05-1.2x at 32, then parity within noise
// (0.74-1.14x at 48-128, both compute-bound on vdpbf16ps) and 0.81-1.0x at
// 192-256. Past 32 the GEMV kernel no longer pays for itself.
constexpr int64_t kAvx512MaxM = 32;
// cpu_avx512_w8a16 (uint8b128: twice the bytes, and two nibble dot products
// a weight) against the same peer, measured on its own 8-bit layers
// (`--qlayer_crossover --qlayer_w8`, 2026-12-03, the three shapes of the
// table): 2.8-3.7x at M = 2, 1.31-1.57x at 4, 0.86-1.02x at 6, 0.82-1.04x
// at 8, 0.66-0.78x at 16 and 0.53-0.58x at 32. It used to share the 4-bit
// kernel's 32, measured on 4-bit layers only, and lost to oneDNN there.
constexpr int64_t kAvx512W8MaxM = 4;
// cpu_avx2_w4a16 serves an AVX2 CPU, where oneDNN 2.6 has no bf16 matmul
// and onednn_dense runs f32 (measured with ONEDNN_MAX_CPU_ISA=AVX2): 4.3-5.0x
// at M = 2, 0.9-2.0x at 8-16, 1.0-1.5x at 64. Where the hardware has AVX512_BF16
// (the AVX2 kernel then runs only if the AVX-512 one is disabled), oneDNN's
// bf16 matmul overtakes it between M = 1 (1.4-2.7x) and M = 4 (0.6-0.8x).
// On an AVX-512 CPU without AVX512_BF16 the AVX-512 FMA kernel's max_m
// (below) covers these 64 rows: AVX2 runs there only with AVX-512 hidden.
int64_t Avx2MaxM() { return GetCpuFeatures().hw_avx512_bf16 ? 2 : 64; }
// cpu_avx512fma_w4a16 serves an AVX-512 CPU without AVX512_BF16, where
// onednn_dense still picks bf16 weights and oneDNN 2.6 emulates the bf16
// matmul on AVX512_CORE. Measured so (ONEDNN_MAX_CPU_ISA=AVX512_CORE
// QLAYER_CPU_DISABLE=avx512bf16 --qlayer_crossover, one thread, CPU time):
// 8.3-10.1x at M = 2, 3.8-4.3x at 16, 3.2x at 32, 2.8-2.9x at 64 and still
// 2.6-2.9x at 256, the largest M measured: the emulation costs oneDNN more
// than our f32 FMAs. So 256, and oneDNN beyond (unmeasured; an f32 oneDNN
// matmul there would move the crossover down, BENCHMARKS.md).
// Where the hardware has AVX512_BF16 (this kernel reached only with the
// BF16 one hidden or disabled), oneDNN runs native vdpbf16ps: 3.4-3.7x at
// M = 2, 1.6-2.0x at 4, 1.05-1.2x at 8, 0.67-0.73x at 16: 8, below
// kAvx512MaxM, so with the BF16 kernel present this one is never chosen.
int64_t Avx512FmaMaxM() { return GetCpuFeatures().hw_avx512_bf16 ? 8 : 256; }
// cpu_avx512fma_w8a16: where the hardware has AVX512_BF16, at most the BF16
// 8-bit kernel's kAvx512W8MaxM (it does the same work in more instructions),
// so that it is never chosen beside that kernel. Without AVX512_BF16 the
// 4-bit kernel's 256 against emulated bf16 (its own crossover unmeasured).
int64_t Avx512FmaW8MaxM() { return GetCpuFeatures().hw_avx512_bf16 ? kAvx512W8MaxM : 256; }

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
  return GemvFactory("cpu_avx512_w8a16", GemvIsa::kAvx512, 8, 11, kAvx512W8MaxM);
}
// Priorities 12 and 13: after the BF16 kernels (whose max_m covers this
// one's wherever both can run), before AVX2.
KernelFactory CpuAvx512FmaW4A16KernelFactory() {
  return GemvFactory("cpu_avx512fma_w4a16", GemvIsa::kAvx512Fma, 4, 12, Avx512FmaMaxM());
}
KernelFactory CpuAvx512FmaW8A16KernelFactory() {
  return GemvFactory("cpu_avx512fma_w8a16", GemvIsa::kAvx512Fma, 8, 13, Avx512FmaW8MaxM());
}
KernelFactory CpuAvx2W4A16KernelFactory() {
  return GemvFactory("cpu_avx2_w4a16", GemvIsa::kAvx2, 4, 20, Avx2MaxM());
}
KernelFactory CpuAvx2W8A16KernelFactory() {
  return GemvFactory("cpu_avx2_w8a16", GemvIsa::kAvx2, 8, 21, Avx2MaxM());
}

}  // namespace qlayer
