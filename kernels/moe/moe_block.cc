// The canonical MoE block: validation, the lossless [gate; up] stacking and
// the selection spec.
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "qlayer/kernels/moe.h"
#include "qlayer/kernels/status_macros.h"

namespace qlayer {
namespace {

// Columns of a and b side by side: [R, Ca] + [R, Cb] -> [R, Ca + Cb].
Tensor ConcatColumns(const Tensor& a, const Tensor& b) {
  const int64_t rows = a.dim(0), ca = a.dim(1), cb = b.dim(1);
  const size_t elem = DTypeSize(a.dtype());
  Tensor out = Tensor::Zeros(a.dtype(), {rows, ca + cb});
  auto* dst = static_cast<char*>(out.data());
  const auto* pa = static_cast<const char*>(a.data());
  const auto* pb = static_cast<const char*>(b.data());
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(dst + r * (ca + cb) * elem, pa + r * ca * elem, ca * elem);
    std::memcpy(dst + (r * (ca + cb) + ca) * elem, pb + r * cb * elem, cb * elem);
  }
  return out;
}

// Rows of a then rows of b (also 1-D concatenation): [Ra, C] + [Rb, C].
Tensor ConcatRows(const Tensor& a, const Tensor& b) {
  Shape shape = a.shape();
  shape[0] += b.dim(0);
  Tensor out = Tensor::Zeros(a.dtype(), shape);
  std::memcpy(out.data(), a.data(), a.nbytes());
  std::memcpy(static_cast<char*>(out.data()) + a.nbytes(), b.data(), b.nbytes());
  return out;
}

absl::Status CheckFloatTensor(const Tensor& t, absl::string_view role, const Shape& shape) {
  if (!IsFloatActivation(t.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat(role, " has dtype ", DTypeName(t.dtype()), ", expected f16, bf16 or f32"));
  }
  if (t.shape() != shape) {
    return absl::InvalidArgumentError(absl::StrCat(role, " has shape ", ShapeToString(t.shape()),
                                                   ", expected ", ShapeToString(shape)));
  }
  return absl::OkStatus();
}

absl::Status CheckExpert(const MoEExpert& x, absl::string_view what, int64_t H, int64_t I) {
  absl::Status s = x.w13.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(what, " w13: ", s.message()));
  s = x.w2.Validate();
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(what, " w2: ", s.message()));
  if (x.w13.K != H || x.w13.N != 2 * I) {
    return absl::InvalidArgumentError(absl::StrCat(what, " w13 is K=", x.w13.K, " N=", x.w13.N,
                                                   ", expected K=H=", H, " N=2I=", 2 * I));
  }
  if (x.w2.K != I || x.w2.N != H) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " w2 is K=", x.w2.K, " N=", x.w2.N, ", expected K=I=", I, " N=H=", H));
  }
  return absl::OkStatus();
}

bool SameLinearSpec(const LinearSpec& a, const LinearSpec& b) {
  return a.K == b.K && a.N == b.N && a.wtype == b.wtype && a.group_size == b.group_size &&
         a.zero_points == b.zero_points && a.g_idx == b.g_idx && a.bias == b.bias &&
         a.scale_dtype == b.scale_dtype && a.act == b.act;
}

}  // namespace

absl::Status MoEBlock::Validate() const {
  auto fail = [this](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("MoE block ", name, ": ", msg));
  };
  if (hidden <= 0 || intermediate <= 0) {
    return fail(absl::StrCat("bad shape H=", hidden, " I=", intermediate));
  }
  if (experts.empty()) return fail("no experts");
  if (router.num_experts != num_experts()) {
    return fail(absl::StrCat("router expects ", router.num_experts, " experts, the block has ",
                             num_experts()));
  }
  absl::Status s = router.Validate();
  if (!s.ok()) return fail(s.message());
  for (size_t e = 0; e < experts.size(); ++e) {
    s = CheckExpert(experts[e], absl::StrCat("expert ", e), hidden, intermediate);
    if (!s.ok()) return fail(s.message());
  }
  if (!gate.empty()) {
    s = CheckFloatTensor(gate, "router gate", {num_experts(), hidden});
    if (!s.ok()) return fail(s.message());
  }
  if (router.has_correction_bias != !correction_bias.empty()) {
    return fail(router.has_correction_bias ? "router uses a correction bias but none is loaded"
                                           : "a correction bias is loaded but the router has none");
  }
  if (!correction_bias.empty()) {
    s = CheckFloatTensor(correction_bias, "e_score_correction_bias", {num_experts()});
    if (!s.ok()) return fail(s.message());
  }
  if (shared.has_value()) {
    if (shared->w13.N % 2 != 0) {
      return fail(absl::StrCat("shared expert w13 N=", shared->w13.N, " is odd"));
    }
    s = CheckExpert(*shared, "shared expert", hidden, shared->intermediate());
    if (!s.ok()) return fail(s.message());
  }
  if (!shared_expert_gate.empty()) {
    if (!shared.has_value()) return fail("shared_expert_gate without a shared expert");
    s = CheckFloatTensor(shared_expert_gate, "shared_expert_gate", {1, hidden});
    if (!s.ok()) return fail(s.message());
  }
  return absl::OkStatus();
}

int64_t MoEBlock::weight_bytes() const {
  int64_t n = 0;
  for (const MoEExpert& x : experts) n += x.w13.weight_bytes() + x.w2.weight_bytes();
  if (shared.has_value()) n += shared->w13.weight_bytes() + shared->w2.weight_bytes();
  return n;
}

absl::StatusOr<QuantizedLinear> StackGateUp(const QuantizedLinear& gate,
                                            const QuantizedLinear& up) {
  auto fail = [](absl::string_view msg) {
    return absl::InvalidArgumentError(absl::StrCat("cannot stack gate and up: ", msg));
  };
  if (gate.K != up.K) return fail(absl::StrCat("K=", gate.K, " vs K=", up.K));
  if (gate.wtype != up.wtype) {
    return fail(absl::StrCat("weight types ", WeightTypeName(gate.wtype), " vs ",
                             WeightTypeName(up.wtype)));
  }
  absl::Status s = gate.Validate();
  if (!s.ok()) return fail(absl::StrCat("gate: ", s.message()));
  s = up.Validate();
  if (!s.ok()) return fail(absl::StrCat("up: ", s.message()));

  QuantizedLinear out;
  out.K = gate.K;
  out.N = gate.N + up.N;
  out.wtype = gate.wtype;
  out.group_size = gate.group_size;
  if (gate.wtype == WeightType::kDense) {
    if (gate.dense.dtype() != up.dense.dtype()) {
      return fail(absl::StrCat("dense dtypes ", DTypeName(gate.dense.dtype()), " vs ",
                               DTypeName(up.dense.dtype())));
    }
    out.dense = ConcatRows(gate.dense, up.dense);  // [N, K]: rows are output channels
  } else {
    if (gate.group_size != up.group_size) {
      return fail(absl::StrCat("group sizes ", gate.group_size, " vs ", up.group_size));
    }
    if (gate.scales.dtype() != up.scales.dtype()) {
      return fail(absl::StrCat("scale dtypes ", DTypeName(gate.scales.dtype()), " vs ",
                               DTypeName(up.scales.dtype())));
    }
    if (!SameTensor(gate.g_idx.view(), up.g_idx.view())) {
      return fail("g_idx differs (act-order permutations must match to share input rows)");
    }
    out.qweight = ConcatColumns(gate.qweight, up.qweight);
    out.scales = ConcatColumns(gate.scales, up.scales);
    if (HasZeroPoints(gate.wtype)) out.zeros = ConcatColumns(gate.zeros, up.zeros);
    out.g_idx = gate.g_idx.Clone();
  }
  if (!gate.bias.empty() || !up.bias.empty()) {
    const DType bt = gate.bias.empty() ? up.bias.dtype() : gate.bias.dtype();
    if (!gate.bias.empty() && !up.bias.empty() && gate.bias.dtype() != up.bias.dtype()) {
      return fail(absl::StrCat("bias dtypes ", DTypeName(gate.bias.dtype()), " vs ",
                               DTypeName(up.bias.dtype())));
    }
    const Tensor zg = gate.bias.empty() ? Tensor::Zeros(bt, {gate.N}) : Tensor();
    const Tensor zu = up.bias.empty() ? Tensor::Zeros(bt, {up.N}) : Tensor();
    out.bias = ConcatRows(gate.bias.empty() ? zg : gate.bias, up.bias.empty() ? zu : up.bias);
  }
  QLAYER_RETURN_IF_ERROR(out.Validate());
  return out;
}

MoESpec MoESpec::Of(const MoEBlock& block, DType act) {
  MoESpec spec;
  spec.hidden = block.hidden;
  spec.intermediate = block.intermediate;
  spec.num_experts = block.num_experts();
  spec.top_k = block.router.top_k;
  spec.shared_intermediate = block.shared.has_value() ? block.shared->intermediate() : 0;
  spec.shared_expert_gate = !block.shared_expert_gate.empty();
  spec.act = act;
  auto add = [&spec, act](const QuantizedLinear& w) {
    const LinearSpec ls = LinearSpec::Of(w, act);
    for (const LinearSpec& have : spec.linear_specs) {
      if (SameLinearSpec(have, ls)) return;
    }
    spec.linear_specs.push_back(ls);
  };
  for (const MoEExpert& x : block.experts) {
    add(x.w13);
    add(x.w2);
  }
  if (block.shared.has_value()) {
    add(block.shared->w13);
    add(block.shared->w2);
  }
  return spec;
}

}  // namespace qlayer
