// The device side of the CUDA kernels, as plain launch functions over POD
// arguments. The .cu files that implement them include no Abseil header (nvcc
// only sees CUDA and the standard library); the .cc files turn the returned
// cudaError_t into absl::Status with the shapes named.
#ifndef QLAYER_KERNELS_CUDA_DEVICE_OPS_H_
#define QLAYER_KERNELS_CUDA_DEVICE_OPS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace qlayer::cuda {

// How scales are stored in the per-tile records and in the canonical tensor.
enum ScaleKind : int { kScaleF16 = 0, kScaleBf16 = 1, kScaleF32 = 2 };

// ---------------------------------------------------------------------------
// The mma layout (see mma_decode.cu for the picture).
//
// K' (Kp) is K padded to the 64-wide k chunk, after the act-order permutation;
// N' (NT * 16) is N padded to the 16-row tile. Tile (nt, c) of the packed
// weight covers output rows 16nt..16nt+15 and permuted input rows 64c..64c+63.
// Tiles come in groups of kMmaGroupTiles along n: tile (nt, c) is tile number
// ((nt / 16) * C + c) * 16 + nt % 16, so that a block's copies of one chunk
// are a few runs of 8 KB or more, and the chunks of a group follow each
// other: DRAM sees long sequential runs (tiles of one nt laid end to end along
// K left a 512-byte piece per DRAM row opened, and ~40 % of the bandwidth).
struct MmaLayoutArgs {
  int K = 0, N = 0;  // canonical
  int Kp = 0;        // padded, permuted K (multiple of 64)
  int NT = 0;        // n16 tiles
  int C = 0;         // 64-wide k chunks = Kp / 64
  int bits = 4;      // 4 or 8
  int geff = 0;      // rows per scale group in the permuted order (multiple of 32), 0 = one group
  int ngroups = 1;   // scale groups (records per n16 tile)
  int scale_kind = kScaleF16;
  bool zeros = false;  // records carry zero points
  int rec_bytes = 0;   // bytes of one (group, n16 tile) record
};

constexpr int kMmaGroupTiles = 16;
// n16 tiles of the packed weight: NT rounded up to the widest block of the
// decode kernel (32 tiles), zero-filled, so that its copies need no bounds
// predicate; times C.
constexpr int kMmaPaddedTiles = 32;
inline int64_t MmaPackedTiles(const MmaLayoutArgs& l) {
  return static_cast<int64_t>((l.NT + kMmaPaddedTiles - 1) / kMmaPaddedTiles) * kMmaPaddedTiles *
         l.C;
}

// Packs the canonical qweight [K/pack, N] int32 (device) into mma tiles.
// perm[k'] is the canonical row feeding permuted row k' (-1 = padding, packed
// as 0); nullptr means identity for k' < K.
cudaError_t LaunchRepackMmaWeights(const MmaLayoutArgs& l, const int32_t* qweight,
                                   const int32_t* perm, void* packed, cudaStream_t stream);
// Writes the (group, n16 tile) records: 16 scales (as stored: f16/bf16/f32),
// then, with zero points, 16 int16 zeros. scales/zeros are canonical
// [ngroups, N] device tensors; zeros may be nullptr when !l.zeros.
cudaError_t LaunchBuildMmaRecords(const MmaLayoutArgs& l, const void* scales, const int32_t* zeros,
                                  void* records, cudaStream_t stream);
// out[m][k'] = perm[k'] >= 0 ? x[m][perm[k']] : 0 for 16-bit elements.
cudaError_t LaunchGatherColumns(const uint16_t* x, int ldx, const int32_t* perm, int Kp, int M,
                                uint16_t* out, cudaStream_t stream);

// One launch of the decode kernel for M <= 64 rows.
struct MmaDecodeArgs {
  const void* w = nullptr;       // packed tiles
  const void* rec = nullptr;     // records
  const void* x = nullptr;       // [M][ldx] f16/bf16, ldx % 8 == 0, Kp columns readable
  void* y = nullptr;             // [M][ldy] f16/bf16
  float* ws = nullptr;           // [64][ws_ld] fp32, zero between calls (split-K sums)
  unsigned* counters = nullptr;  // MmaDecodeCounters(NT), zero between calls
  const float* bias = nullptr;   // [N] or nullptr
  int M = 0, ldx = 0, ldy = 0, ws_ld = 0;
  // Set by LaunchMmaDecode: the schedule, and the work queue (the counter
  // after the n-block counters: units taken).
  // Split sp takes unit_chunks chunks, one more when sp < unit_extra.
  int splits = 0, n_blocks = 0, unit_chunks = 0, unit_extra = 0;
  double inv_splits = 0, inv_geff = 0;  // 1 / splits, 1 / rows per group
  unsigned* queue = nullptr;
  MmaLayoutArgs layout;
  bool bf16 = false;
};
// Launch facts, for benchmarks and DescribeLayer-style reports.
struct MmaDecodeLaunchInfo {
  int m_tiles = 0, warp_n_tiles = 0, n_blocks = 0, splits = 0, chunks_per_split = 0;
  int blocks_per_sm = 0, smem_bytes = 0, grid = 0;
};
cudaError_t LaunchMmaDecode(const MmaDecodeArgs& a, cudaStream_t stream,
                            MmaDecodeLaunchInfo* info = nullptr);
// An upper bound on the n blocks of any configuration (8 tiles per block;
// the narrowest has 16), and the counters the decode kernel needs
// for a layer of NT tiles (one per n block, then the queue).
int MmaDecodeMaxNBlocks(int NT);
int MmaDecodeCounters(int NT);

// ---------------------------------------------------------------------------
// Dequantize + dense GEMM path.
struct DequantArgs {
  const int32_t* qweight = nullptr;  // [K/pack, N]
  const void* scales = nullptr;      // [K/G, N]
  int scale_kind = kScaleF16;
  const int32_t* zeros = nullptr;  // [K/G, N] or nullptr (symmetric)
  int sym_zero = 8;
  const int32_t* g_idx = nullptr;  // [K] or nullptr
  int K = 0, N = 0, bits = 4, group_size = 0;
};
// dense[n][k] = (q - z) * s as f16 (bf16 when `bf16`), rounded once.
cudaError_t LaunchDequantToDense(const DequantArgs& a, bool bf16, void* dense, cudaStream_t stream);
// y[m][n] += bias[n] for 16-bit y.
cudaError_t LaunchAddBias(void* y, int M, int N, const float* bias, bool bf16, cudaStream_t stream);

// ---------------------------------------------------------------------------
// The GEMV layout (see gemv_decode.cu): for M <= 2, where a tensor-core tile
// would be mostly padding. Weights row-major per output n along the permuted
// K' (Kp, a multiple of 32): word j of row n holds K' rows j*pack .. j*pack +
// pack-1 at bits*i (the canonical packing, transposed); scales [N][ngroups]
// as stored (f16/bf16/f32); zero points [N][ngroups] uint8.
struct GemvLayoutArgs {
  int K = 0, N = 0;  // canonical
  int Kp = 0;        // permuted, padded K (multiple of 32)
  int bits = 4;
  int geff = 0;  // rows per scale group in the permuted order, 0 = one group
  int ngroups = 1;
  int scale_kind = kScaleF16;
  bool zeros = false;
  int sym_zero = 8;  // the zero point of a symmetric type (8 or 128)
};
cudaError_t LaunchRepackGemv(const GemvLayoutArgs& l, const int32_t* qweight, const int32_t* perm,
                             const void* scales, const int32_t* zeros, uint32_t* packed,
                             void* scales_t, uint16_t* zeros_t, cudaStream_t stream);
struct GemvArgs {
  const uint32_t* w = nullptr;
  const void* scales = nullptr;     // [N][ngroups]
  const uint16_t* zeros = nullptr;  // [N][ngroups] or nullptr; 16 bits: GPTQ v1 zeros reach 2^bits
  const void* x = nullptr;          // [M][ldx] f16/bf16, Kp columns readable
  void* y = nullptr;                // [M][ldy]
  const float* bias = nullptr;
  int M = 0, ldx = 0, ldy = 0;
  GemvLayoutArgs layout;
  bool bf16 = false;
};
// Largest K' one launch takes (longer rows would need more registers).
int GemvMaxKp(int bits);
// y = x W^T for any M (rows go in launches of at most 2).
cudaError_t LaunchGemv(const GemvArgs& a, int sms, cudaStream_t stream);

}  // namespace qlayer::cuda

#endif  // QLAYER_KERNELS_CUDA_DEVICE_OPS_H_
