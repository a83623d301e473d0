#include "client/remote_moe.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace qlayer {
namespace {

bool IsFloat(DType t) { return t == DType::kF16 || t == DType::kBF16 || t == DType::kF32; }

// `view`'s leading dims (all but the last) flattened: [rows, last].
ConstTensorView Flat(const ConstTensorView& view, int64_t rows) {
  return ConstTensorView{view.dtype, {rows, view.shape.back()}, view.data};
}

Shape Leading(const Shape& s) { return Shape(s.begin(), s.end() - 1); }

}  // namespace

struct RemoteMoE::Inputs {
  Tensor x, logits, ids, weights;
  bool return_routing = false;
};

absl::StatusOr<std::unique_ptr<RemoteMoE>> RemoteMoE::Create(Client* client,
                                                             absl::string_view block,
                                                             const RemoteMoEOptions& options) {
  if (client == nullptr) return absl::InvalidArgumentError("RemoteMoE: client is null");
  absl::StatusOr<v1::LayerInfo> info = client->DescribeLayer(block);
  if (!info.ok()) return info.status();
  if (info->kind() != "moe" || !info->has_moe()) {
    return absl::FailedPreconditionError(absl::StrCat("RemoteMoE: ", block, " on ",
                                                      client->address(), " is a '", info->kind(),
                                                      "' layer, not an MoE block"));
  }
  return std::unique_ptr<RemoteMoE>(new RemoteMoE(client, std::string(block), info->in_features(),
                                                  info->moe().num_experts(), info->moe().top_k(),
                                                  options));
}

RemoteMoE::RemoteMoE(Client* client, std::string block, int64_t hidden, int64_t num_experts,
                     int top_k, const RemoteMoEOptions& options)
    : client_(client),
      block_(std::move(block)),
      hidden_(hidden),
      num_experts_(num_experts),
      top_k_(top_k),
      resender_(client, absl::StrCat("MoEForward ", block_), "RemoteMoE", options) {}

RemoteMoE::~RemoteMoE() = default;

absl::Status RemoteMoE::CheckRouting(const MoERoutingInput& routing, const Shape& x_shape,
                                     int64_t T) const {
  const bool logits = !routing.router_logits.empty();
  const bool ids = !routing.topk_ids.empty();
  const bool weights = !routing.topk_weights.empty();
  if (logits && (ids || weights)) {
    return absl::InvalidArgumentError(
        "give at most one routing source: router_logits, or topk_ids with topk_weights");
  }
  if (ids != weights) {
    return absl::InvalidArgumentError(
        absl::StrCat("topk_ids and topk_weights come together (got only ",
                     ids ? "topk_ids" : "topk_weights", ")"));
  }
  // Same leading dims as the hidden states, then E or k.
  auto check = [&](const ConstTensorView& v, const char* what, int64_t last,
                   const char* last_name) -> absl::Status {
    if (v.shape.empty() || Leading(v.shape) != Leading(x_shape) || v.shape.back() != last) {
      Shape want = Leading(x_shape);
      want.push_back(last);
      return absl::InvalidArgumentError(absl::StrCat(what, " has shape ", ShapeToString(v.shape),
                                                     ", expected ", ShapeToString(want), " (",
                                                     last_name, " = ", last, ")"));
    }
    return absl::OkStatus();
  };
  if (logits) {
    if (!IsFloat(routing.router_logits.dtype)) {
      return absl::InvalidArgumentError(absl::StrCat("router_logits dtype ",
                                                     DTypeName(routing.router_logits.dtype),
                                                     " is not f16, bf16 or f32"));
    }
    return check(routing.router_logits, "router_logits", num_experts_, "experts");
  }
  if (!ids) return absl::OkStatus();
  const ConstTensorView& i = routing.topk_ids;
  if (i.dtype != DType::kI32 && i.dtype != DType::kI64) {
    return absl::InvalidArgumentError(
        absl::StrCat("topk_ids dtype ", DTypeName(i.dtype), " is not i32 or i64"));
  }
  if (!IsFloat(routing.topk_weights.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "topk_weights dtype ", DTypeName(routing.topk_weights.dtype), " is not f16, bf16 or f32"));
  }
  if (absl::Status s = check(i, "topk_ids", top_k_, "top-k"); !s.ok()) return s;
  if (absl::Status s = check(routing.topk_weights, "topk_weights", top_k_, "top-k"); !s.ok()) {
    return s;
  }
  for (int64_t n = 0; n < T * top_k_; ++n) {
    const int64_t e = i.dtype == DType::kI32 ? i.as<int32_t>()[n] : i.as<int64_t>()[n];
    if (e < 0 || e >= num_experts_) {
      return absl::InvalidArgumentError(absl::StrCat("topk_ids[", n / top_k_, "][", n % top_k_,
                                                     "] = ", e, " is not an expert of 0..",
                                                     num_experts_ - 1));
    }
  }
  return absl::OkStatus();
}

std::future<absl::StatusOr<MoEResult>> RemoteMoE::ForwardAsync(const ConstTensorView& x,
                                                               const MoERoutingInput& routing) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<MoEResult>>>();
  auto future = promise->get_future();
  ForwardAsync(x, routing,
               [promise](absl::StatusOr<MoEResult> r) { promise->set_value(std::move(r)); });
  return future;
}

void RemoteMoE::ForwardAsync(const ConstTensorView& x, const MoERoutingInput& routing,
                             Callback done) {
  const absl::Time start = absl::Now();
  if (!IsFloat(x.dtype)) {
    done(absl::InvalidArgumentError(absl::StrCat("MoEForward ", block_, ": hidden states dtype ",
                                                 DTypeName(x.dtype), " is not f16, bf16 or f32")));
    return;
  }
  if (x.shape.empty() || x.shape.back() != hidden_ || x.data == nullptr) {
    done(absl::InvalidArgumentError(
        absl::StrCat("MoEForward ", block_, ": hidden states have shape ", ShapeToString(x.shape),
                     ", expected [..., ", hidden_, "]")));
    return;
  }
  const int64_t T = x.numel() / hidden_;
  if (absl::Status s = CheckRouting(routing, x.shape, T); !s.ok()) {
    done(absl::InvalidArgumentError(absl::StrCat("MoEForward ", block_, ": ", s.message())));
    return;
  }
  auto in = std::make_shared<Inputs>();
  in->x = Tensor::CopyOf(Flat(x, T));
  if (!routing.router_logits.empty()) in->logits = Tensor::CopyOf(Flat(routing.router_logits, T));
  if (!routing.topk_ids.empty()) {
    in->ids = Tensor::CopyOf(Flat(routing.topk_ids, T));
    in->weights = Tensor::CopyOf(Flat(routing.topk_weights, T));
  }
  in->return_routing = routing.return_routing;
  resender_.Start(
      start,
      [this, in = std::shared_ptr<const Inputs>(std::move(in))](
          const CallOptions& o, Callback answer) { Send(*in, o, std::move(answer)); },
      std::move(done));
}

void RemoteMoE::Send(const Inputs& in, const CallOptions& o, Callback answer) {
  MoERoutingInput routing;
  if (!in.logits.empty()) routing.router_logits = in.logits.view();
  if (!in.ids.empty()) {
    routing.topk_ids = in.ids.view();
    routing.topk_weights = in.weights.view();
  }
  routing.return_routing = in.return_routing;
  client_->MoEForward(block_, in.x.view(), routing, o, std::move(answer));
}

}  // namespace qlayer
