// Which x86 vector ISAs this CPU and OS support, from CPUID and XGETBV.
// Compiled without ISA flags: it decides whether an ISA kernel may be
// selected, so it must run on any x86-64.
#ifndef QLAYER_KERNELS_CPU_CPU_FEATURES_H_
#define QLAYER_KERNELS_CPU_CPU_FEATURES_H_

#include <string>

namespace qlayer {

struct CpuFeatures {
  bool avx2 = false;    // with FMA and F16C, and the OS saving ymm state
  bool avx512 = false;  // F, BW, VL, DQ, and the OS saving zmm / opmask state
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  // AVX512_BF16 in hardware, whatever QLAYER_CPU_DISABLE hides from our
  // kernels: it is what oneDNN's bf16 matmul runs on natively (else emulated
  // on AVX-512, or none on AVX2), so it moves our kernels' crossovers.
  bool hw_avx512_bf16 = false;
  // The environment can hide features to exercise fallbacks on a machine
  // that has them: QLAYER_CPU_DISABLE is a comma-separated list of
  //   avx512bf16  AVX512_BF16 only (an AVX-512 CPU like Skylake-SP, Cascade
  //               Lake or Ice Lake: cpu_avx512fma_* instead of cpu_avx512_*)
  //   avx512      all of AVX-512
  //   avx2        AVX2 (with avx512: a CPU for the reference / oneDNN only)
  // Tokens are matched whole ("avx512bf16" does not hide all of AVX-512);
  // unknown ones are kept in unknown_by_env, which rejections name so a typo
  // does not pass for a fallback.
  std::string disabled_by_env;
  std::string unknown_by_env;
};

// Detected once per process.
const CpuFeatures& GetCpuFeatures();

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_CPU_FEATURES_H_
