// cpu_moe_grouped: the CPU experts kernel. Tokens are grouped by expert, and
// each expert that received tokens runs as two linear calls on its group:
//   h = x_e W13 ([n_e, 2I]) -> a = silu(h[:, :I]) * h[:, I:] -> o = a W2 ([n_e, H])
// then y[t] += weight * o[row of t] in f32. The projections go through the
// LINEAR kernels SelectLinearKernel picks for each expert (prepared once per
// expert here), so every CPU linear kernel the build has serves MoE too, and
// an expert's weights are read only when some token was routed to it -- the
// bandwidth bound of decode is the bytes of the touched experts.
//
// Precision (a choice, documented here): the gathered rows, h, a and o stay
// in x's dtype, as transformers runs an expert in the model dtype; silu(g)*u
// is computed in f32 and rounded once; the weighted sum over the k experts
// and the shared expert is accumulated in f32 and rounded once into y.
//
// The shared expert (DeepSeek shared_experts, Qwen2-MoE shared_expert) runs on
// all T rows; with a shared_expert_gate its output is scaled per token by
// sigmoid(gate . x) (f32 dot product of the widened row).
//
// Concurrency: Forward keeps its buffers on the stack of the call, so calls
// are independent; the linear kernels serialise or parallelise as they do.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cpu/cpu_convert.h"
#include "moe/prepared_linear.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

struct PreparedExpert {
  PreparedLinear w13;
  PreparedLinear w2;
  int64_t intermediate = 0;
};

// Holds owning storage for one [rows, cols] activation buffer of a dtype and
// hands out views of its first `rows'` rows.
class Buffer {
 public:
  Buffer(DType dt, int64_t rows, int64_t cols)
      : dt_(dt), cols_(cols), t_(Tensor::Zeros(dt, {std::max<int64_t>(rows, 1), cols})) {}
  TensorView View(int64_t rows) { return {dt_, {rows, cols_}, t_.data()}; }
  char* Row(int64_t r) { return static_cast<char*>(t_.data()) + r * cols_ * DTypeSize(dt_); }

 private:
  DType dt_;
  int64_t cols_;
  Tensor t_;
};

// a[r][j] = silu(h[r][j]) * h[r][I + j] for r < n, j < I; h [n, 2I], a [n, I].
void SiluAndMul(const TensorView& h, int64_t n, int64_t I, const TensorView& a) {
  std::vector<float> row(static_cast<size_t>(2 * I));
  std::vector<float> out(static_cast<size_t>(I));
  const size_t elem = DTypeSize(h.dtype);
  for (int64_t r = 0; r < n; ++r) {
    ConvertToF32(static_cast<const char*>(h.data) + r * 2 * I * elem, h.dtype, 2 * I, row.data());
    for (int64_t j = 0; j < I; ++j) {
      const float g = row[j];
      out[j] = g / (1.0f + std::exp(-g)) * row[I + j];
    }
    ConvertFromF32(out.data(), I, a.dtype, static_cast<char*>(a.data) + r * I * elem);
  }
}

float Sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }

class CpuMoeGroupedKernel final : public MoEExpertsKernel {
 public:
  explicit CpuMoeGroupedKernel(MoEKernelOptions options) : options_(std::move(options)) {}

  absl::string_view name() const override { return "cpu_moe_grouped"; }

  absl::Status Prepare(const MoEBlock& block, const Device& device) override {
    if (device.backend != Backend::kCpu) {
      return absl::FailedPreconditionError(
          absl::StrCat("cpu_moe_grouped runs on the CPU, not ", device.ToString()));
    }
    QLAYER_RETURN_IF_ERROR(block.Validate());
    hidden_ = block.hidden;
    top_k_ = block.router.top_k;
    experts_.clear();
    experts_.resize(block.experts.size());
    for (size_t e = 0; e < block.experts.size(); ++e) {
      QLAYER_RETURN_IF_ERROR(
          PrepareExpert(block.experts[e], device, absl::StrCat("expert ", e), experts_[e]));
    }
    shared_.reset();
    shared_gate_.clear();
    if (block.shared.has_value()) {
      shared_ = std::make_unique<PreparedExpert>();
      QLAYER_RETURN_IF_ERROR(PrepareExpert(*block.shared, device, "shared expert", *shared_));
      if (!block.shared_expert_gate.empty()) {
        shared_gate_.resize(static_cast<size_t>(hidden_));
        ConvertToF32(block.shared_expert_gate.data(), block.shared_expert_gate.dtype(), hidden_,
                     shared_gate_.data());
      }
    }
    describe_ = absl::StrCat("cpu_moe_grouped(w13: ", experts_[0].w13.Describe(),
                             "; w2: ", experts_[0].w2.Describe());
    if (shared_) {
      absl::StrAppend(&describe_, "; shared w13: ", shared_->w13.Describe(),
                      "; shared w2: ", shared_->w2.Describe());
    }
    absl::StrAppend(&describe_, ")");
    return absl::OkStatus();
  }

  absl::Status Forward(const ConstTensorView& x, const Routing& routing, const TensorView& y,
                       ExecContext& ctx, MoEForwardInfo* info) const override {
    if (experts_.empty()) {
      return absl::FailedPreconditionError("cpu_moe_grouped: Forward before Prepare");
    }
    QLAYER_RETURN_IF_ERROR(CheckArgs(x, routing, y));
    const int64_t T = x.dim(0), H = hidden_, E = static_cast<int64_t>(experts_.size());
    const int k = top_k_;
    const DType dt = x.dtype;
    const size_t row_bytes = static_cast<size_t>(H) * DTypeSize(dt);
    std::set<std::string> used;

    // Group (token, weight) pairs by expert, in token order.
    std::vector<int64_t> start(static_cast<size_t>(E + 1), 0);
    for (int32_t id : routing.ids) ++start[static_cast<size_t>(id) + 1];
    for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    std::vector<int64_t> token(static_cast<size_t>(T * k));
    std::vector<float> weight(static_cast<size_t>(T * k));
    for (int64_t i = 0; i < T * k; ++i) {
      const int64_t slot = fill[routing.ids[i]]++;
      token[slot] = i / k;
      weight[slot] = routing.weights[i];
    }
    int64_t max_rows = 0;
    for (int64_t e = 0; e < E; ++e) max_rows = std::max(max_rows, start[e + 1] - start[e]);

    std::vector<float> acc(static_cast<size_t>(T * H), 0.0f);
    std::vector<float> orow(static_cast<size_t>(H));
    if (max_rows > 0) {
      const int64_t I = experts_[0].intermediate;
      Buffer xe(dt, max_rows, H), h(dt, max_rows, 2 * I), a(dt, max_rows, I), o(dt, max_rows, H);
      for (int64_t e = 0; e < E; ++e) {
        const int64_t n = start[e + 1] - start[e];
        if (n == 0) continue;  // an idle expert's weights are never read
        for (int64_t r = 0; r < n; ++r) {
          std::memcpy(xe.Row(r), static_cast<const char*>(x.data) + token[start[e] + r] * row_bytes,
                      row_bytes);
        }
        QLAYER_RETURN_IF_ERROR(
            RunExpert(experts_[e], xe.View(n), h, a, o, n, ctx, used, absl::StrCat("expert ", e)));
        for (int64_t r = 0; r < n; ++r) {
          ConvertToF32(o.Row(r), dt, H, orow.data());
          const float w = weight[start[e] + r];
          float* dst = acc.data() + token[start[e] + r] * H;
          for (int64_t c = 0; c < H; ++c) dst[c] += w * orow[c];
        }
      }
    }

    if (shared_ && T > 0) {
      const int64_t Is = shared_->intermediate;
      Buffer h(dt, T, 2 * Is), a(dt, T, Is), o(dt, T, H);
      QLAYER_RETURN_IF_ERROR(RunExpert(*shared_, x, h, a, o, T, ctx, used, "shared expert"));
      std::vector<float> xrow(static_cast<size_t>(H));
      for (int64_t t = 0; t < T; ++t) {
        float g = 1.0f;
        if (!shared_gate_.empty()) {
          ConvertToF32(static_cast<const char*>(x.data) + t * row_bytes, dt, H, xrow.data());
          float dot = 0.0f;
          for (int64_t c = 0; c < H; ++c) dot += xrow[c] * shared_gate_[c];
          g = Sigmoid(dot);
        }
        ConvertToF32(o.Row(t), dt, H, orow.data());
        float* dst = acc.data() + t * H;
        for (int64_t c = 0; c < H; ++c) dst[c] += g * orow[c];
      }
    }

    ConvertFromF32(acc.data(), T * H, y.dtype, y.data);
    if (info != nullptr) {
      info->tokens_per_expert.assign(static_cast<size_t>(E), 0);
      for (int64_t e = 0; e < E; ++e) info->tokens_per_expert[e] = start[e + 1] - start[e];
      info->linear_kernels.assign(used.begin(), used.end());
    }
    return absl::OkStatus();
  }

  int64_t prepared_bytes() const override {
    int64_t n = static_cast<int64_t>(shared_gate_.size() * sizeof(float));
    for (const PreparedExpert& x : experts_) n += x.w13.prepared_bytes() + x.w2.prepared_bytes();
    if (shared_) n += shared_->w13.prepared_bytes() + shared_->w2.prepared_bytes();
    return n;
  }

  std::string Describe() const override { return describe_; }

 private:
  absl::Status PrepareExpert(const MoEExpert& x, const Device& device, absl::string_view what,
                             PreparedExpert& out) const {
    out.intermediate = x.intermediate();
    absl::Status s = out.w13.Prepare(x.w13, device, options_.act, options_.linear);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(what, " w13: ", s.message()));
    s = out.w2.Prepare(x.w2, device, options_.act, options_.linear);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(what, " w2: ", s.message()));
    return absl::OkStatus();
  }

  // o[:n] = w2(silu(gate) * up) of x [n, H], through the buffers h, a.
  static absl::Status RunExpert(const PreparedExpert& x_expert, const ConstTensorView& x, Buffer& h,
                                Buffer& a, Buffer& o, int64_t n, ExecContext& ctx,
                                std::set<std::string>& used, absl::string_view what) {
    absl::string_view k13, k2;
    const TensorView hv = h.View(n), av = a.View(n), ov = o.View(n);
    absl::Status s = x_expert.w13.Forward(x, hv, ctx, &k13);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(what, " w13: ", s.message()));
    SiluAndMul(hv, n, x_expert.intermediate, av);
    s = x_expert.w2.Forward(av, ov, ctx, &k2);
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat(what, " w2: ", s.message()));
    used.emplace(k13);
    used.emplace(k2);
    return absl::OkStatus();
  }

  absl::Status CheckArgs(const ConstTensorView& x, const Routing& routing,
                         const TensorView& y) const {
    const int64_t H = hidden_, E = static_cast<int64_t>(experts_.size());
    if (!IsFloatActivation(x.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden states have dtype ", DTypeName(x.dtype), ", expected f16, bf16 or f32"));
    }
    if (x.shape.size() != 2 || x.shape[1] != H) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hidden states have shape ", ShapeToString(x.shape), ", expected [T, H] with H=", H));
    }
    const int64_t T = x.shape[0];
    if (y.dtype != x.dtype || y.shape.size() != 2 || y.shape[0] != T || y.shape[1] != H) {
      return absl::InvalidArgumentError(absl::StrCat("output is ", DTypeName(y.dtype), " ",
                                                     ShapeToString(y.shape), ", expected ",
                                                     DTypeName(x.dtype), " [", T, ", ", H, "]"));
    }
    if (T > 0 && (x.data == nullptr || y.data == nullptr)) {
      return absl::InvalidArgumentError("null hidden states or output data");
    }
    if (routing.num_tokens != T || routing.top_k != top_k_ ||
        routing.ids.size() != static_cast<size_t>(T * top_k_) ||
        routing.weights.size() != routing.ids.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("routing is for ", routing.num_tokens, " tokens, top-", routing.top_k, " (",
                       routing.ids.size(), " ids, ", routing.weights.size(), " weights); expected ",
                       T, " tokens, top-", top_k_));
    }
    for (size_t i = 0; i < routing.ids.size(); ++i) {
      if (routing.ids[i] < 0 || routing.ids[i] >= E) {
        return absl::InvalidArgumentError(absl::StrCat("expert id ", routing.ids[i], " of token ",
                                                       i / top_k_, " is outside [0, ", E, ")"));
      }
    }
    return absl::OkStatus();
  }

  MoEKernelOptions options_;
  int64_t hidden_ = 0;
  int top_k_ = 0;
  std::vector<PreparedExpert> experts_;
  std::unique_ptr<PreparedExpert> shared_;
  std::vector<float> shared_gate_;  // [H], empty without a shared_expert_gate
  std::string describe_;
};

absl::Status CpuMoeGroupedCanImplement(const MoESpec& spec, const Device& device,
                                       const SelectOptions& linear) {
  if (device.backend != Backend::kCpu) {
    return absl::FailedPreconditionError(
        absl::StrCat("runs on the CPU, but the block is placed on ", device.ToString()));
  }
  if (spec.hidden <= 0 || spec.intermediate <= 0 || spec.num_experts <= 0 || spec.top_k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("bad block H=", spec.hidden,
                                                   " I=", spec.intermediate,
                                                   " E=", spec.num_experts, " k=", spec.top_k));
  }
  if (!IsFloatActivation(spec.act)) {
    return absl::InvalidArgumentError(
        absl::StrCat("activation dtype ", DTypeName(spec.act), " is not f16, bf16 or f32"));
  }
  for (const LinearSpec& ls : spec.linear_specs) {
    LinearSpec s = ls;
    s.act = spec.act;
    absl::StatusOr<Selection> sel = SelectLinearKernel(s, device, linear);
    if (!sel.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert projection K=", s.K, " N=", s.N, ": ", sel.status().message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

MoEKernelFactory CpuMoeGroupedKernelFactory() {
  MoEKernelFactory f;
  f.name = "cpu_moe_grouped";
  f.backend = Backend::kCpu;
  // Generic: whatever the linear kernels implement, it implements.
  f.priority = 1000;
  f.can_implement = CpuMoeGroupedCanImplement;
  f.create = [](const MoEKernelOptions& o) { return std::make_unique<CpuMoeGroupedKernel>(o); };
  return f;
}

}  // namespace qlayer
