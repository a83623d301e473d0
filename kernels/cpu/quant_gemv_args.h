// The contract between the generic quantized GEMV kernel
// (quant_gemv_kernel.cc: repack, activation prep, threading) and its ISA
// inner loops (avx512/quant_gemv_avx512.cc: AVX512_BF16 dot products,
// avx512/quant_gemv_avx512_fma.cc: AVX-512 F/BW FMA, avx2/quant_gemv_avx2.cc).
//
// Plain structs and free functions only: the ISA files are compiled with
// their own -m flags, so nothing inline with external linkage (std
// containers, absl, qlayer headers) may be instantiated there, or the linker
// could keep an AVX-512 copy for code that runs on any CPU.
//
// Packed weight (built by Prepare, read by the inner loops):
//   The N columns are cut into blocks of block_n (64 for both AVX-512 loops,
//   which read the same layout, 32 for AVX2; the last block zero-padded). Each block is one
//   contiguous run of block_bytes, so a thread streams its blocks front to back. Within a block,
//   per segment (a quantization group, its rows made contiguous and padded
//   to the step size):
//     weights  steps x step_bytes   (layout per ISA, see its file)
//     scales   block_n x {2|4} B    f16 / bf16 / f32 as stored in the checkpoint
//     zeros    block_n x {0|1|2} B  u8 (4-bit) / u16 (8-bit), none if symmetric
//   each part starting on a 64-byte boundary: the scales sit next to the
//   weights they scale and arrive in the same stream.
//
// Math: for row r, segment s with sum xs = sum of r's activations over s,
//   acc = sum_k x[k] * (offset + q[k])       (the inner loop, f32)
//   y  += scale * acc - scale * (offset + zero) * xs
// offset is what the ISA's cheap unpack adds to each q (AVX-512, both loops:
// 16 for 4-bit, 272 for 8-bit; AVX2: 0).
#ifndef QLAYER_KERNELS_CPU_QUANT_GEMV_ARGS_H_
#define QLAYER_KERNELS_CPU_QUANT_GEMV_ARGS_H_

#include <cstdint>

namespace qlayer::gemv {

enum class ScaleKind : uint8_t { kF16, kBF16, kF32 };
enum class ZeroKind : uint8_t { kNone, kU8, kU16 };
enum class OutKind : uint8_t { kF16, kBF16, kF32 };

struct Segment {
  int64_t steps = 0;          // inner-loop steps (k pairs or k words)
  int64_t act_offset = 0;     // first activation of the segment in a row
  int64_t weight_offset = 0;  // bytes from the block start
  int64_t scale_offset = 0;
  int64_t zero_offset = 0;
};

struct Args {
  // Weight.
  const uint8_t* packed = nullptr;
  int64_t block_bytes = 0;
  const Segment* segments = nullptr;
  int64_t num_segments = 0;
  int bits = 4;
  ScaleKind scale_kind = ScaleKind::kF16;
  ZeroKind zero_kind = ZeroKind::kNone;
  float sym_zero = 0;           // zero point when zero_kind == kNone
  float offset = 0;             // see the file comment
  const float* bias = nullptr;  // [blocks * block_n] f32, or null

  // Activations, prepared per call: `rows` rows of act_stride elements
  // (bf16 planes for AVX-512 BF16, f32 for AVX-512 FMA and AVX2), row
  // r = m * planes + plane.
  const void* act = nullptr;
  int64_t act_stride = 0;
  const float* xsum = nullptr;  // [rows][num_segments]
  int64_t rows = 0;
  int planes = 1;  // rows of one input row, summed into one output row

  // Output y [M, N] row-major.
  void* y = nullptr;
  OutKind out = OutKind::kF32;
  int64_t M = 0, N = 0;
};

// Activation prep for one input row: converts it (already in padded row
// order, gathered to f32 when act-order permutes it) into `planes` rows of
// what the inner loop reads, and each one's per-segment sums.
enum class InKind : uint8_t { kF16, kBF16, kF32 };
struct PrepArgs {
  const void* x = nullptr;  // one row of sum(segment rows) elements
  InKind in = InKind::kF32;
  const Segment* segments = nullptr;
  int64_t num_segments = 0;
  int64_t step_rows = 1;  // rows of a segment = steps * step_rows
  int bits = 4;
  int planes = 1;
  void* act = nullptr;  // plane p's row at act + p * act_stride elements
  int64_t act_stride = 0;
  float* xsum = nullptr;  // plane p's sums at xsum + p * num_segments
};
void PrepareRowAvx512(const PrepArgs& p);
void PrepareRowAvx512Fma(const PrepArgs& p);
void PrepareRowAvx2(const PrepArgs& p);

// Computes output columns of blocks [block_begin, block_end). y_tile is
// scratch of rows * block_n floats owned by the calling thread.
void QuantGemvAvx512(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile);
void QuantGemvAvx512Fma(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile);
void QuantGemvAvx2(const Args& a, int64_t block_begin, int64_t block_end, float* y_tile);

}  // namespace qlayer::gemv

#endif  // QLAYER_KERNELS_CPU_QUANT_GEMV_ARGS_H_
