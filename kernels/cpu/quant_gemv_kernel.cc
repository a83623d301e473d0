#include "cpu/quant_gemv_kernel.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_convert.h"
#include "cpu/cpu_features.h"
#include "cpu/cpu_spec_checks.h"
#include "cpu/quant_gemv_args.h"
#include "cpu/thread_pool.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

constexpr int64_t kAlign = 64;

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// How one ISA lays out a weight block; the inner loops that read it are in
// avx512/quant_gemv_avx512.cc, avx512/quant_gemv_avx512_fma.cc and
// avx2/quant_gemv_avx2.cc.
struct IsaLayout {
  int64_t block_n;      // columns per block
  int64_t step_rows;    // input rows per inner-loop step
  int64_t step_bytes;   // packed bytes per step
  int64_t act_per_row;  // activation elements per input row (AVX-512 BF16 8-bit: 2)
  float offset;         // added to q by the unpack
  int64_t max_steps;    // steps per segment at most (4 KiB of weights per block)
};

bool UsesAvx512Layout(GemvIsa isa) { return isa != GemvIsa::kAvx2; }

IsaLayout LayoutFor(GemvIsa isa, int bits) {
  if (UsesAvx512Layout(isa)) {
    // One 64-byte line per step = 64 columns x 2 rows of nibbles. An 8-bit
    // row is two nibble rows (hi, paired with 16*x, and lo, with x), so one
    // real row per step; the unpack adds 16 to each nibble:
    // 16*(16+hi) + (16+lo) = q + 272. The BF16 loop reads 8-bit activations
    // as the pair (16x, x); the FMA loop forms 16*(16+hi) + (16+lo) itself
    // and reads one f32 per row.
    const int64_t act_per_row = bits == 8 && isa == GemvIsa::kAvx512 ? 2 : 1;
    return bits == 4 ? IsaLayout{64, 2, 64, 1, 16.0f, 64}
                     : IsaLayout{64, 1, 64, act_per_row, 272.0f, 64};
  }
  // One 32-bit word per column holds 8 (4-bit) or 4 (8-bit) consecutive
  // rows, as in the canonical qweight; 32 columns = 128 bytes per step.
  return IsaLayout{32, 32 / bits, 128, 1, 0.0f, 32};
}

// AVX-512 step: 64 bytes = 64 columns x 2 nibble rows. The inner loop turns
// the line into four bf16 vectors with
//   lo = (v << 3) & 0x78 | 0x80,  hi = (v >> 1) & 0x78 | 0x80   (per byte)
//   V0 = unpacklo_epi8(lo, 0x41)  V1 = unpackhi_epi8(lo, 0x41)
//   V2 = unpacklo_epi8(hi, 0x41)  V3 = unpackhi_epi8(hi, 0x41)
// so each 16-bit lane is 0x41:(0x80 | q << 3), the bf16 of 16 + q. Vector V
// holds columns 16V..16V+15, one per dword d, whose two halves are nibble
// rows 2p and 2p+1 (the pair vdpbf16ps multiplies with an activation pair).
// unpack{lo,hi} read bytes 0-7 / 8-15 of 128-bit lane d / 4, hence:
void Avx512Position(int64_t c, int64_t half, int64_t* byte, int* shift) {
  const int64_t v = c / 16, d = c % 16;
  *byte = 16 * (d / 4) + ((v % 2) ? 8 : 0) + 2 * (d % 4) + half;
  *shift = v >= 2 ? 4 : 0;
}

gemv::ScaleKind ScaleKindOf(DType t) {
  switch (t) {
    case DType::kF16:
      return gemv::ScaleKind::kF16;
    case DType::kBF16:
      return gemv::ScaleKind::kBF16;
    default:
      return gemv::ScaleKind::kF32;
  }
}

gemv::OutKind OutKindOf(DType t) {
  switch (t) {
    case DType::kF16:
      return gemv::OutKind::kF16;
    case DType::kBF16:
      return gemv::OutKind::kBF16;
    default:
      return gemv::OutKind::kF32;
  }
}

// " (QLAYER_CPU_DISABLE=...)" when the environment hides features, so a
// rejection says whether the CPU or the switch decided it.
std::string EnvNote(const CpuFeatures& f) {
  if (f.disabled_by_env.empty()) return "";
  return absl::StrCat(" (QLAYER_CPU_DISABLE=", f.disabled_by_env,
                      f.unknown_by_env.empty() ? "" : absl::StrCat("; unknown: ", f.unknown_by_env),
                      ")");
}

// OK when the CPU (and QLAYER_CPU_DISABLE) allow the ISA's inner loop.
absl::Status CheckIsa(GemvIsa isa, int bits) {
  const CpuFeatures& f = GetCpuFeatures();
  switch (isa) {
    case GemvIsa::kAvx512:
      if (!f.avx512) {
        return absl::FailedPreconditionError(
            absl::StrCat("CPU lacks AVX-512 F/BW/VL/DQ with OS zmm state", EnvNote(f)));
      }
      if (!f.avx512_bf16) {
        return absl::FailedPreconditionError(
            absl::StrCat("CPU lacks AVX512_BF16 (vdpbf16ps); cpu_avx512fma_w", bits,
                         "a16 runs the AVX-512 FMA loop instead", EnvNote(f)));
      }
      return absl::OkStatus();
    case GemvIsa::kAvx512Fma:
      if (!f.avx512) {
        return absl::FailedPreconditionError(
            absl::StrCat("CPU lacks AVX-512 F/BW/VL/DQ with OS zmm state", EnvNote(f)));
      }
      return absl::OkStatus();
    case GemvIsa::kAvx2:
      if (!f.avx2) {
        return absl::FailedPreconditionError(
            absl::StrCat("CPU lacks AVX2 + FMA + F16C with OS ymm state", EnvNote(f)));
      }
      return absl::OkStatus();
  }
  return absl::InternalError("unknown GemvIsa");
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Per-thread scratch, grown on first use and then reused: Forward allocates
// nothing once a thread has seen its largest M.
struct CallScratch {
  std::vector<uint8_t> act;
  std::vector<float> xsum;
  std::vector<float> gathered;
};
struct WorkerScratch {
  std::vector<float> y_tile;
};
thread_local CallScratch t_call_scratch;
thread_local WorkerScratch t_worker_scratch;

class QuantGemvKernel final : public LinearKernel {
 public:
  QuantGemvKernel(GemvIsa isa, int bits, std::string name)
      : isa_(isa), bits_(bits), name_(std::move(name)), layout_(LayoutFor(isa, bits)) {}

  absl::string_view name() const override { return name_; }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
    QLAYER_RETURN_IF_ERROR(CheckIsa(isa_, bits_));  // even when created without selection
    QLAYER_RETURN_IF_ERROR(w.Validate());
    if (WeightBits(w.wtype) != bits_) {
      return absl::InvalidArgumentError(
          absl::StrCat(name_, " handles ", bits_, "-bit weights, not ", WeightTypeName(w.wtype)));
    }
    K_ = w.K;
    N_ = w.N;
    BuildSegments(w);
    BuildPacked(w);
    bias_.clear();
    if (!w.bias.empty()) {
      bias_.assign(static_cast<size_t>(blocks_ * layout_.block_n), 0.0f);
      ConvertToF32(w.bias.data(), w.bias.dtype(), N_, bias_.data());
    }
    scale_kind_ = ScaleKindOf(w.scales.dtype());
    zero_kind_ = HasZeroPoints(w.wtype) ? (bits_ == 4 ? gemv::ZeroKind::kU8 : gemv::ZeroKind::kU16)
                                        : gemv::ZeroKind::kNone;
    sym_zero_ = static_cast<float>(SymmetricZero(w.wtype));
    return absl::OkStatus();
  }

  absl::Status Forward(const ConstTensorView& x, const TensorView& y,
                       ExecContext& ctx) const override {
    if (packed_ == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(name_, ": Forward before Prepare"));
    }
    QLAYER_RETURN_IF_ERROR(CheckForwardArgs(x, y, K_, N_));
    const int64_t M = x.dim(0);
    if (M == 0) return absl::OkStatus();

    gemv::Args a;
    a.packed = static_cast<const uint8_t*>(packed_.get());
    a.block_bytes = block_bytes_;
    a.segments = segments_.data();
    a.num_segments = static_cast<int64_t>(segments_.size());
    a.bits = bits_;
    a.scale_kind = scale_kind_;
    a.zero_kind = zero_kind_;
    a.sym_zero = sym_zero_;
    a.offset = layout_.offset;
    a.bias = bias_.empty() ? nullptr : bias_.data();
    a.M = M;
    a.N = N_;
    a.y = y.data;
    a.out = OutKindOf(y.dtype);
    PrepareActivations(x, a);

    CpuThreadPool& pool = CpuThreadPool::Global();
    int threads =
        ctx.num_threads > 0 ? std::min(ctx.num_threads, pool.num_threads()) : pool.num_threads();
    threads = static_cast<int>(std::min<int64_t>(threads, blocks_));
    const int64_t tile_floats = a.rows * layout_.block_n;
    const GemvIsa isa = isa_;
    const int64_t blocks = blocks_;
    pool.Run(threads, [&a, threads, tile_floats, isa, blocks](int t) {
      // +16 floats to align the tile to a 64-byte line for aligned stores.
      std::vector<float>& tile = t_worker_scratch.y_tile;
      if (tile.size() < static_cast<size_t>(tile_floats + 16)) tile.resize(tile_floats + 16);
      float* y_tile = tile.data();
      y_tile += (16 - reinterpret_cast<uintptr_t>(y_tile) / sizeof(float) % 16) % 16;
      const int64_t b0 = blocks * t / threads, b1 = blocks * (t + 1) / threads;
      switch (isa) {
        case GemvIsa::kAvx512:
          gemv::QuantGemvAvx512(a, b0, b1, y_tile);
          break;
        case GemvIsa::kAvx512Fma:
          gemv::QuantGemvAvx512Fma(a, b0, b1, y_tile);
          break;
        case GemvIsa::kAvx2:
          gemv::QuantGemvAvx2(a, b0, b1, y_tile);
          break;
      }
    });
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    return blocks_ * block_bytes_ + static_cast<int64_t>(bias_.size() * sizeof(float)) +
           static_cast<int64_t>(perm_.size() * sizeof(int32_t));
  }

 private:
  // Rows of each group made contiguous (act-order: sorted by g_idx, a
  // stable permutation of K) and padded to whole steps with rows that read
  // activation 0. perm_ maps padded row -> input row (-1: padding); it stays
  // empty when it is the identity.
  void BuildSegments(const QuantizedLinear& w) {
    const int64_t groups = w.num_groups();
    std::vector<std::vector<int32_t>> rows_of(static_cast<size_t>(groups));
    for (int64_t k = 0; k < K_; ++k) rows_of[w.group_of(k)].push_back(static_cast<int32_t>(k));
    segments_.clear();
    seg_group_.clear();
    std::vector<int32_t> perm;
    const int64_t max_rows = layout_.max_steps * layout_.step_rows;
    for (int64_t g = 0; g < groups; ++g) {
      if (rows_of[g].empty()) continue;
      const int64_t padded = RoundUp(static_cast<int64_t>(rows_of[g].size()), layout_.step_rows);
      const int64_t base = static_cast<int64_t>(perm.size());
      perm.insert(perm.end(), rows_of[g].begin(), rows_of[g].end());
      perm.resize(perm.size() + (padded - rows_of[g].size()), -1);
      // Long groups (channel-wise) are cut into segments of at most
      // max_steps, each with its own copy of the group's scales: a segment's
      // weights then stay in L1 while every row tile reads them, and f32
      // accumulators never sum more than max_rows products.
      for (int64_t start = 0; start < padded; start += max_rows) {
        gemv::Segment s;
        s.steps = std::min(max_rows, padded - start) / layout_.step_rows;
        s.act_offset = (base + start) * layout_.act_per_row;
        segments_.push_back(s);
        seg_group_.push_back(g);
      }
    }
    K_pad_ = static_cast<int64_t>(perm.size());
    bool identity = K_pad_ == K_;
    for (int64_t i = 0; identity && i < K_pad_; ++i) identity = perm[i] == i;
    perm_ = identity ? std::vector<int32_t>() : std::move(perm);

    // Byte offsets of each segment's parts within a block.
    const int64_t sbytes = static_cast<int64_t>(DTypeSize(w.scales.dtype()));
    const int64_t zbytes = HasZeroPoints(w.wtype) ? bits_ / 4 : 0;  // u8 or u16
    int64_t off = 0;
    for (gemv::Segment& s : segments_) {
      s.weight_offset = off;
      off = RoundUp(off + s.steps * layout_.step_bytes, kAlign);
      s.scale_offset = off;
      off = RoundUp(off + layout_.block_n * sbytes, kAlign);
      s.zero_offset = off;
      off = RoundUp(off + layout_.block_n * zbytes, kAlign);
    }
    block_bytes_ = off;
    blocks_ = (N_ + layout_.block_n - 1) / layout_.block_n;
  }

  int64_t InputRow(int64_t padded_row) const {
    return perm_.empty() ? padded_row : perm_[padded_row];
  }

  void BuildPacked(const QuantizedLinear& w) {
    const size_t total = static_cast<size_t>(blocks_ * block_bytes_);
    packed_.reset(std::aligned_alloc(kAlign, std::max<size_t>(total, kAlign)));
    if (packed_ == nullptr) throw std::bad_alloc();  // out of memory: as operator new would
    // Each block is packed by the pool thread that will stream it in Forward
    // (first touch places its pages near that thread).
    CpuThreadPool& pool = CpuThreadPool::Global();
    const int threads = static_cast<int>(std::min<int64_t>(pool.num_threads(), blocks_));
    pool.Run(threads, [&](int t) {
      const int64_t b0 = blocks_ * t / threads, b1 = blocks_ * (t + 1) / threads;
      for (int64_t b = b0; b < b1; ++b) PackBlock(w, b);
    });
  }

  void PackBlock(const QuantizedLinear& w, int64_t b) {
    uint8_t* block = static_cast<uint8_t*>(packed_.get()) + b * block_bytes_;
    std::memset(block, 0, static_cast<size_t>(block_bytes_));
    const int64_t bn = layout_.block_n;
    const int64_t n0 = b * bn;
    const int64_t ncols = std::min(bn, N_ - n0);
    const size_t sbytes = DTypeSize(w.scales.dtype());
    const auto* scales = static_cast<const uint8_t*>(w.scales.data());
    const auto* qweight = static_cast<const uint32_t*>(w.qweight.data());
    int64_t row = 0;  // padded row at the segment start
    for (size_t si = 0; si < segments_.size(); ++si) {
      const gemv::Segment& s = segments_[si];
      const int64_t g = seg_group_[si];
      const int64_t rows = s.steps * layout_.step_rows;
      uint8_t* wp = block + s.weight_offset;
      const int pack = 32 / bits_;
      const uint32_t mask = (1u << bits_) - 1;
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t k = InputRow(row + i);
        if (k < 0) continue;  // padding stays 0 and meets activation 0
        const int64_t step = i / layout_.step_rows, r = i % layout_.step_rows;
        uint8_t* sp = wp + step * layout_.step_bytes;
        // Row k of the canonical qweight (QuantizedLinear::q, inlined: this
        // loop touches every weight of every layer at load).
        const uint32_t* qrow = qweight + (k / pack) * N_ + n0;
        const int qshift = bits_ * static_cast<int>(k % pack);
        for (int64_t c = 0; c < ncols; ++c) PutWeight(sp, c, r, (qrow[c] >> qshift) & mask);
      }
      std::memcpy(block + s.scale_offset, scales + (g * N_ + n0) * sbytes,
                  static_cast<size_t>(ncols) * sbytes);
      if (HasZeroPoints(w.wtype)) {
        const int32_t* z = w.zeros.as<int32_t>() + g * N_ + n0;
        for (int64_t c = 0; c < ncols; ++c) {
          if (bits_ == 4) {
            block[s.zero_offset + c] = static_cast<uint8_t>(z[c]);  // 0..16
          } else {
            const uint16_t z16 = static_cast<uint16_t>(z[c]);  // 0..256
            std::memcpy(block + s.zero_offset + 2 * c, &z16, 2);
          }
        }
      }
      row += rows;
    }
  }

  // Writes value q of step-row r, block column c into the step at sp.
  void PutWeight(uint8_t* sp, int64_t c, int64_t r, uint32_t q) const {
    if (UsesAvx512Layout(isa_)) {
      int64_t byte;
      int shift;
      if (bits_ == 4) {
        Avx512Position(c, r, &byte, &shift);
        sp[byte] |= static_cast<uint8_t>(q << shift);
      } else {  // hi nibble in pair half 0 (with 16*x), lo nibble in half 1
        Avx512Position(c, 0, &byte, &shift);
        sp[byte] |= static_cast<uint8_t>((q >> 4) << shift);
        Avx512Position(c, 1, &byte, &shift);
        sp[byte] |= static_cast<uint8_t>((q & 15) << shift);
      }
      return;
    }
    uint32_t word;
    std::memcpy(&word, sp + 4 * c, 4);
    word |= q << (bits_ * r);
    std::memcpy(sp + 4 * c, &word, 4);
  }

  // Builds the rows the inner loop reads (see quant_gemv_args.h): input rows
  // in padded (act-order) row order; for AVX-512 BF16 split into bf16 planes
  // (bf16 1, f16 2, f32 3 planes, whose sum is exactly x), and for 8-bit
  // weights each value as the pair (16 * x, x); for AVX-512 FMA and AVX2 in
  // f32, once per call (the FMA loops then broadcast f32 directly). Also the
  // per-segment sums of each row. Rows that act-order permutes (or pads)
  // are first gathered to f32, which is exact.
  void PrepareActivations(const ConstTensorView& x, gemv::Args& a) const {
    const int64_t M = x.dim(0);
    const bool bf16_planes = isa_ == GemvIsa::kAvx512;
    const int planes = !bf16_planes              ? 1
                       : x.dtype == DType::kBF16 ? 1
                       : x.dtype == DType::kF16  ? 2
                                                 : 3;
    const size_t act_elt = bf16_planes ? 2 : 4;
    const int64_t stride = RoundUp(K_pad_ * layout_.act_per_row, 32);
    const int64_t rows = M * planes;
    const int64_t S = static_cast<int64_t>(segments_.size());
    CallScratch& cs = t_call_scratch;
    const size_t act_bytes = static_cast<size_t>(rows * stride) * act_elt;
    if (cs.act.size() < act_bytes + kAlign) cs.act.resize(act_bytes + kAlign);
    if (cs.xsum.size() < static_cast<size_t>(rows * S)) cs.xsum.resize(rows * S);
    if (!perm_.empty() && cs.gathered.size() < static_cast<size_t>(K_pad_)) {
      cs.gathered.resize(K_pad_);
    }
    uint8_t* act = cs.act.data();
    act += (kAlign - reinterpret_cast<uintptr_t>(act) % kAlign) % kAlign;

    gemv::PrepArgs p;
    p.segments = segments_.data();
    p.num_segments = S;
    p.step_rows = layout_.step_rows;
    p.bits = bits_;
    p.planes = planes;
    p.act_stride = stride;
    const size_t elt = DTypeSize(x.dtype);
    for (int64_t m = 0; m < M; ++m) {
      const char* xr = static_cast<const char*>(x.data) + m * K_ * elt;
      if (perm_.empty()) {
        p.x = xr;
        p.in = x.dtype == DType::kBF16  ? gemv::InKind::kBF16
               : x.dtype == DType::kF16 ? gemv::InKind::kF16
                                        : gemv::InKind::kF32;
      } else {
        float* g = cs.gathered.data();
        for (int64_t i = 0; i < K_pad_; ++i) {
          g[i] = perm_[i] < 0 ? 0.0f : LoadAsFloat(xr, x.dtype, perm_[i]);
        }
        p.x = g;
        p.in = gemv::InKind::kF32;
      }
      p.act = act + static_cast<size_t>(m * planes * stride) * act_elt;
      p.xsum = cs.xsum.data() + m * planes * S;
      switch (isa_) {
        case GemvIsa::kAvx512:
          gemv::PrepareRowAvx512(p);
          break;
        case GemvIsa::kAvx512Fma:
          gemv::PrepareRowAvx512Fma(p);
          break;
        case GemvIsa::kAvx2:
          gemv::PrepareRowAvx2(p);
          break;
      }
    }
    a.act = act;
    a.act_stride = stride;
    a.xsum = cs.xsum.data();
    a.rows = rows;
    a.planes = planes;
  }

  const GemvIsa isa_;
  const int bits_;
  const std::string name_;
  const IsaLayout layout_;
  int64_t K_ = 0, N_ = 0, K_pad_ = 0;
  int64_t blocks_ = 0, block_bytes_ = 0;
  std::vector<gemv::Segment> segments_;
  std::vector<int64_t> seg_group_;
  std::vector<int32_t> perm_;
  std::unique_ptr<void, FreeDeleter> packed_;
  std::vector<float> bias_;
  gemv::ScaleKind scale_kind_ = gemv::ScaleKind::kF16;
  gemv::ZeroKind zero_kind_ = gemv::ZeroKind::kNone;
  float sym_zero_ = 0;
};

}  // namespace

std::unique_ptr<LinearKernel> MakeQuantGemvKernel(GemvIsa isa, int bits, std::string name) {
  return std::make_unique<QuantGemvKernel>(isa, bits, std::move(name));
}

absl::Status QuantGemvCanImplement(GemvIsa isa, int bits, const LinearSpec& spec,
                                   const Device& device) {
  QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
  QLAYER_RETURN_IF_ERROR(CheckValidLinearSpec(spec));
  if (WeightBits(spec.wtype) != bits) {
    return absl::InvalidArgumentError(absl::StrCat(
        "handles ", bits, "-bit weights (", bits == 4 ? "uint4, uint4b8" : "uint8, uint8b128",
        "), not ", WeightTypeName(spec.wtype)));
  }
  return CheckIsa(isa, bits);
}

}  // namespace qlayer
