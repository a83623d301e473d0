#include "cpu/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace qlayer {
namespace {

// XGETBV without -mxsave: the instruction is present whenever CPUID says
// OSXSAVE, which is checked first.
uint64_t ReadXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures Detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool fma = c & (1u << 12);
  const bool osxsave = c & (1u << 27);
  const bool f16c = c & (1u << 29);
  if (!osxsave) return f;
  const uint64_t xcr0 = ReadXcr0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17);
  const bool avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool avx512vnni = c & (1u << 11);
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  __cpuid_count(7, 1, a1, b1, c1, d1);
  const bool avx512bf16 = a1 & (1u << 5);

  f.avx2 = os_ymm && avx2 && fma && f16c;
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  f.avx512_bf16 = f.avx512 && avx512bf16;
  f.avx512_vnni = f.avx512 && avx512vnni;
  f.hw_avx512_bf16 = f.avx512_bf16;

  if (const char* env = std::getenv("QLAYER_CPU_DISABLE")) {
    f.disabled_by_env = env;
    std::vector<absl::string_view> unknown;
    for (absl::string_view t : absl::StrSplit(env, ',', absl::SkipWhitespace())) {
      if (t == "avx512") {
        f.avx512 = f.avx512_bf16 = f.avx512_vnni = false;
      } else if (t == "avx512bf16" || t == "avx512_bf16") {
        f.avx512_bf16 = false;
      } else if (t == "avx2") {
        f.avx2 = false;
      } else {
        unknown.push_back(t);
      }
    }
    f.unknown_by_env = absl::StrJoin(unknown, ",");
  }
  return f;
}

}  // namespace

const CpuFeatures& GetCpuFeatures() {
  static const CpuFeatures f = Detect();
  return f;
}

}  // namespace qlayer
