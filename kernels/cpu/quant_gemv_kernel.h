// The quantized GEMV/small-GEMM kernels for few rows (decode), W4A16 and
// W8A16, on AVX-512 with AVX512_BF16 (dot products), AVX-512 without it
// (F/BW unpack, FMA) and AVX2 (FMA). This class holds
// what is ISA-independent and is compiled without ISA flags: the repack at
// Prepare (act-order permutation, N blocks, per-ISA weight interleave,
// scales next to weights), the per-call activation prep, and threading over
// N blocks on the persistent pool. The inner loops live in avx512/ and avx2/
// behind quant_gemv_args.h.
#ifndef QLAYER_KERNELS_CPU_QUANT_GEMV_KERNEL_H_
#define QLAYER_KERNELS_CPU_QUANT_GEMV_KERNEL_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "qlayer/kernels/linear_kernel.h"

namespace qlayer {

// Which inner loop a kernel runs. kAvx512 and kAvx512Fma share the packed
// layout; kAvx512Fma needs no AVX512_BF16.
enum class GemvIsa : uint8_t { kAvx512, kAvx512Fma, kAvx2 };

// A kernel for `bits`-bit weights (4: uint4/uint4b8, 8: uint8/uint8b128).
std::unique_ptr<LinearKernel> MakeQuantGemvKernel(GemvIsa isa, int bits, std::string name);

// OK when the CPU has the ISA and the spec is a `bits`-bit quantized layer.
absl::Status QuantGemvCanImplement(GemvIsa isa, int bits, const LinearSpec& spec,
                                   const Device& device);

}  // namespace qlayer

#endif  // QLAYER_KERNELS_CPU_QUANT_GEMV_KERNEL_H_
