// onednn_dense: dequantize the weight once at Prepare, then run oneDNN's
// matmul. This is the CPU prefill path (large M is bound by the matrix units,
// where oneDNN's brgemm kernels are hard to beat) and the peer every
// quantized CPU kernel is measured against.
//
// Weight precision (a choice, documented here):
//   - f32 scales (or an f32 dense weight), or a CPU where oneDNN has no bf16
//     matmul (AVX2 only): weights kept in f32, activations computed in f32.
//   - f16 / bf16 scales or dense weight: weights kept in bf16. (q - z) * s is
//     rounded once to bf16 (8 significant bits, ~2e-3 relative error per
//     weight), activations of any dtype are rounded to bf16 too. That halves
//     the bytes and doubles the rate against f32 (AVX512_BF16 vdpbf16ps);
//     oneDNN 2.6 has no f16 matmul on CPUs without AVX512-FP16, so f16
//     activations go through bf16 as well. Layers that need full f16 accuracy
//     use the quantized kernels, which accumulate f32 from exact weights.
//
// Layout: oneDNN picks the weight format (format_tag::any, a K/N-blocked
// layout for brgemm); it is the same for every M on this oneDNN, so one
// reordered copy serves all primitives. Primitives are created on first use
// per (M, thread count, src/dst dtype) and cached; creation costs 0.3-2 ms
// (JIT), execution of a cached one allocates nothing.
//
// Concurrency: Forward calls on one layer are serialised by a mutex (they share
// the scratch buffers and oneDNN's per-primitive scratchpad); each call uses
// all of its OpenMP threads. The server batches rows per layer anyway.
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_convert.h"
#include "cpu/cpu_spec_checks.h"
#include "cpu/onednn/openmp_threads.h"
#include "qlayer/kernels/registry.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// Cached primitives beyond this many shapes are created per call instead,
// so a stream of odd batch sizes cannot grow memory without bound.
constexpr size_t kMaxCachedPrimitives = 512;

// A representative M for choosing the weight layout; see the file comment.
constexpr int64_t kLayoutProbeM = 64;

// Whether this oneDNN can run a bf16 matmul on this CPU: it needs AVX-512
// (native AVX512_BF16, or emulated on AVX512 core); on AVX2-only CPUs oneDNN
// 2.6 has no bf16 matmul at all, and onednn_dense computes in f32 there.
bool HasBf16Matmul() {
  static const bool ok = [] {
    try {
      dnnl::engine eng(dnnl::engine::kind::cpu, 0);
      dnnl::memory::desc src({8, 64}, dt::bf16, tag::ab);
      dnnl::memory::desc wei({64, 64}, dt::bf16, tag::any);
      dnnl::memory::desc dst({8, 64}, dt::f32, tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei, dst), eng);
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return ok;
}

dt ToDnnl(DType t) {
  switch (t) {
    case DType::kBF16:
      return dt::bf16;
    case DType::kF16:
      return dt::f16;
    default:
      return dt::f32;
  }
}

class OnednnDenseKernel final : public LinearKernel {
 public:
  OnednnDenseKernel() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {}

  absl::string_view name() const override { return "onednn_dense"; }

  absl::Status Prepare(const QuantizedLinear& w, const Device& device) override {
    QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
    QLAYER_RETURN_IF_ERROR(w.Validate());
    K_ = w.K;
    N_ = w.N;
    const DType stored = w.wtype == WeightType::kDense ? w.dense.dtype() : w.scales.dtype();
    compute_ = stored == DType::kF32 || !HasBf16Matmul() ? DType::kF32 : DType::kBF16;

    bias_.assign(static_cast<size_t>(N_), 0.0f);
    has_bias_ = !w.bias.empty();
    if (has_bias_) ConvertToF32(w.bias.data(), w.bias.dtype(), N_, bias_.data());

    // The plain weight in the compute type: a quantized layer dequantized
    // row by row to [K, N] (tag ab); a dense one converted as it is stored,
    // [N, K], which oneDNN reads as [K, N] with tag ba. The reorder below
    // then blocks it; only one plain copy exists at a time.
    const bool dense = w.wtype == WeightType::kDense;
    const size_t elt = DTypeSize(compute_);
    std::vector<char> plain_data(static_cast<size_t>(K_ * N_) * elt);
    if (dense) {
      for (int64_t n = 0; n < N_; ++n) {
        ConvertRow(static_cast<const char*>(w.dense.data()) + n * K_ * DTypeSize(w.dense.dtype()),
                   w.dense.dtype(), K_, plain_data.data() + n * K_ * elt);
      }
    } else {
      std::vector<float> row(static_cast<size_t>(N_));
      for (int64_t k = 0; k < K_; ++k) {
        DequantizeRow(w, k, row.data());
        ConvertFromF32(row.data(), N_, compute_, plain_data.data() + k * N_ * elt);
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    prims_.clear();
    try {
      const dt wdt = ToDnnl(compute_);
      dnnl::memory::desc src({kLayoutProbeM, K_}, wdt, tag::ab);
      dnnl::memory::desc any({K_, N_}, wdt, tag::any);
      dnnl::memory::desc dst({kLayoutProbeM, N_}, dt::f32, tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, any, BiasDesc(), dst), engine_);
      weights_desc_ = pd.weights_desc();
      dnnl::memory plain({{K_, N_}, wdt, dense ? tag::ba : tag::ab}, engine_, plain_data.data());
      weights_ = dnnl::memory(weights_desc_, engine_);
      dnnl::reorder(plain, weights_).execute(stream_, plain, weights_);
      stream_.wait();
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("onednn_dense: preparing K=", K_, " N=", N_,
                                              " failed in oneDNN: ", e.what()));
    }
    return absl::OkStatus();
  }

  absl::Status Forward(const ConstTensorView& x, const TensorView& y,
                       ExecContext& ctx) const override {
    if (K_ == 0) return absl::FailedPreconditionError("onednn_dense: Forward before Prepare");
    QLAYER_RETURN_IF_ERROR(CheckForwardArgs(x, y, K_, N_));
    const int64_t M = x.dim(0);
    if (M == 0) return absl::OkStatus();

    std::lock_guard<std::mutex> lock(mu_);
    const int saved_threads = OmpMaxThreads();
    if (ctx.num_threads > 0) OmpSetNumThreads(ctx.num_threads);
    absl::Status s = ForwardLocked(x, y, M);
    if (ctx.num_threads > 0) OmpSetNumThreads(saved_threads);
    return s;
  }

  int64_t prepared_bytes() const override {
    return static_cast<int64_t>(weights_desc_.get_size() + bias_.size() * sizeof(float));
  }

 private:
  // Key of a cached primitive: M, OpenMP threads, destination dtype.
  using PrimKey = std::tuple<int64_t, int, DType>;

  // Row k of the dequantized weight, (q - z) * s for every column, in f32.
  static void DequantizeRow(const QuantizedLinear& w, int64_t k, float* out) {
    const int64_t g = w.group_of(k);
    ConvertToF32(static_cast<const char*>(w.scales.data()) + g * w.N * DTypeSize(w.scales.dtype()),
                 w.scales.dtype(), w.N, out);
    for (int64_t n = 0; n < w.N; ++n) out[n] *= static_cast<float>(w.q(k, n) - w.zero(g, n));
  }

  // n values of dtype `from` -> the compute dtype.
  void ConvertRow(const void* src, DType from, int64_t n, void* dst) const {
    if (compute_ == DType::kF32) {
      ConvertToF32(src, from, n, static_cast<float*>(dst));
      return;
    }
    auto* d = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = FloatToBf16(LoadAsFloat(src, from, i));
  }

  dnnl::memory::desc BiasDesc() const {
    return has_bias_ ? dnnl::memory::desc({1, N_}, dt::f32, tag::ab) : dnnl::memory::desc();
  }

  // oneDNN writes y directly when it can produce y's dtype from the compute
  // dtype (bf16 -> bf16/f32, f32 -> f32); otherwise into f32 scratch.
  DType DstType(DType out) const {
    if (out == DType::kF32) return DType::kF32;
    if (out == DType::kBF16 && compute_ == DType::kBF16) return DType::kBF16;
    return DType::kF32;
  }

  absl::StatusOr<const dnnl::matmul*> GetPrimitive(int64_t M, DType dst_type) const {  // mu_ held
    const PrimKey key{M, OmpMaxThreads(), dst_type};
    auto it = prims_.find(key);
    if (it != prims_.end()) return &it->second;
    try {
      dnnl::memory::desc src({M, K_}, ToDnnl(compute_), tag::ab);
      dnnl::memory::desc dst({M, N_}, ToDnnl(dst_type), tag::ab);
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights_desc_, BiasDesc(), dst),
                                      engine_);
      dnnl::matmul prim(pd);
      if (prims_.size() >= kMaxCachedPrimitives) {
        uncached_ = std::move(prim);
        return &uncached_;
      }
      return &prims_.emplace(key, std::move(prim)).first->second;
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("onednn_dense: no oneDNN matmul for M=", M, " K=", K_,
                                              " N=", N_, ": ", e.what()));
    }
  }

  absl::Status ForwardLocked(const ConstTensorView& x, const TensorView& y,
                             int64_t M) const {  // mu_ held
    const DType dst_type = DstType(y.dtype);
    QLAYER_ASSIGN_OR_RETURN(const dnnl::matmul* prim, GetPrimitive(M, dst_type));

    void* src_data = const_cast<void*>(x.data);  // oneDNN only reads it
    if (x.dtype != compute_) {
      const size_t bytes = static_cast<size_t>(M * K_) * DTypeSize(compute_);
      if (src_scratch_.size() < bytes) src_scratch_.resize(bytes);
      ConvertRow(x.data, x.dtype, M * K_, src_scratch_.data());
      src_data = src_scratch_.data();
    }
    void* dst_data = y.data;
    if (dst_type != y.dtype) {
      if (dst_scratch_.size() < static_cast<size_t>(M * N_)) {
        dst_scratch_.resize(static_cast<size_t>(M * N_));
      }
      dst_data = dst_scratch_.data();
    }
    try {
      dnnl::memory src({{M, K_}, ToDnnl(compute_), tag::ab}, engine_, src_data);
      dnnl::memory dst({{M, N_}, ToDnnl(dst_type), tag::ab}, engine_, dst_data);
      std::unordered_map<int, dnnl::memory> args = {
          {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights_}, {DNNL_ARG_DST, dst}};
      if (has_bias_) {
        args.emplace(DNNL_ARG_BIAS,
                     dnnl::memory(BiasDesc(), engine_, const_cast<float*>(bias_.data())));
      }
      prim->execute(stream_, args);
      stream_.wait();
    } catch (const dnnl::error& e) {
      return absl::InternalError(
          absl::StrCat("onednn_dense: matmul M=", M, " K=", K_, " N=", N_, " failed: ", e.what()));
    }
    if (dst_data != y.data) ConvertFromF32(dst_scratch_.data(), M * N_, y.dtype, y.data);
    return absl::OkStatus();
  }

  int64_t K_ = 0, N_ = 0;
  DType compute_ = DType::kBF16;
  bool has_bias_ = false;
  std::vector<float> bias_;
  dnnl::engine engine_;
  dnnl::memory::desc weights_desc_;
  dnnl::memory weights_;

  // std::mutex, not absl::Mutex: Debian's Abseil is not built for
  // ThreadSanitizer, which then cannot see absl::Mutex and reports races on
  // what it guards (QLAYER_SANITIZE=thread builds); pthread it intercepts.
  // Guards everything below.
  mutable std::mutex mu_;
  mutable dnnl::stream stream_;
  mutable std::map<PrimKey, dnnl::matmul> prims_;
  mutable dnnl::matmul uncached_;
  mutable std::vector<char> src_scratch_;
  mutable std::vector<float> dst_scratch_;
};

absl::Status OnednnCanImplement(const LinearSpec& spec, const Device& device) {
  QLAYER_RETURN_IF_ERROR(CheckCpuDevice(device));
  return CheckValidLinearSpec(spec);
}

}  // namespace

KernelFactory OnednnDenseKernelFactory() {
  KernelFactory f;
  f.name = "onednn_dense";
  f.backend = Backend::kCpu;
  f.priority = 100;  // after the small-M quantized kernels, before cpu_reference
  f.max_m = kUnboundedM;
  f.can_implement = OnednnCanImplement;
  f.create = [] { return std::make_unique<OnednnDenseKernel>(); };
  return f;
}

}  // namespace qlayer
