#include "client/remote_moe.h"

#include <algorithm>
#include <random>
#include <utility>
#include <vector>

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

struct RemoteMoE::Call {
  // [T, H] and the routing flattened to [T, E] / [T, k]; kept for re-sends.
  Tensor x, logits, ids, weights;
  bool return_routing = false;
  Callback done;
  absl::Time start;
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time retry_until = absl::InfiniteFuture();  // set at the first failure
  bool failed_once = false;
  int attempts = 0;
  absl::Status last_error;
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
      options_(options) {}

RemoteMoE::~RemoteMoE() {
  std::vector<std::shared_ptr<Call>> waiting;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    waiting.assign(waiting_.begin(), waiting_.end());
    waiting_.clear();
  }
  for (const auto& call : waiting) {
    Finish(call, absl::CancelledError(absl::StrCat("MoEForward ", block_,
                                                   ": RemoteMoE destroyed before a re-send")));
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int64_t* inflight) { return *inflight == 0; }, &inflight_));
}

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
  auto call = std::make_shared<Call>();
  call->x = Tensor::CopyOf(Flat(x, T));
  if (!routing.router_logits.empty()) call->logits = Tensor::CopyOf(Flat(routing.router_logits, T));
  if (!routing.topk_ids.empty()) {
    call->ids = Tensor::CopyOf(Flat(routing.topk_ids, T));
    call->weights = Tensor::CopyOf(Flat(routing.topk_weights, T));
  }
  call->return_routing = routing.return_routing;
  call->done = std::move(done);
  call->start = start;
  if (options_.timeout != absl::InfiniteDuration()) call->deadline = start + options_.timeout;
  {
    absl::MutexLock lock(&mu_);
    ++inflight_;
  }
  Attempt(call);
}

void RemoteMoE::Attempt(const std::shared_ptr<Call>& call) {
  ++call->attempts;
  CallOptions o;
  o.lane = options_.lane;
  // A re-send waits for the channel instead of failing fast; the retry
  // budget (or the call's own deadline) bounds the wait.
  o.wait_for_ready = call->attempts > 1;
  const absl::Time until = std::min(call->deadline, call->retry_until);
  if (until != absl::InfiniteFuture()) {
    o.timeout = std::max(until - absl::Now(), absl::Microseconds(1));
  }
  MoERoutingInput routing;
  if (!call->logits.empty()) routing.router_logits = call->logits.view();
  if (!call->ids.empty()) {
    routing.topk_ids = call->ids.view();
    routing.topk_weights = call->weights.view();
  }
  routing.return_routing = call->return_routing;
  client_->MoEForward(block_, call->x.view(), routing, o,
                      [this, call](absl::StatusOr<MoEResult> r) { OnAnswer(call, std::move(r)); });
}

absl::Duration RemoteMoE::Backoff(int attempts) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  absl::Duration d = options_.initial_backoff;
  for (int i = 1; i < attempts && d < options_.max_backoff; ++i) d *= 2;
  d = std::min(d, options_.max_backoff);
  return d * std::uniform_real_distribution<double>(0.5, 1.0)(rng);
}

void RemoteMoE::OnAnswer(const std::shared_ptr<Call>& call, absl::StatusOr<MoEResult> r) {
  const absl::Time now = absl::Now();
  if (r.ok()) {
    r->attempts = call->attempts;
    r->latency_us = absl::ToInt64Microseconds(now - call->start);
    Finish(call, std::move(r));
    return;
  }
  const absl::Status& s = r.status();
  const std::string sent =
      call->attempts > 1 ? absl::StrCat(" (sent ", call->attempts, " times)") : "";
  // A re-send that ran into the retry budget before the call's deadline.
  if (s.code() == absl::StatusCode::kDeadlineExceeded && call->failed_once &&
      now < call->deadline) {
    Finish(call, absl::UnavailableError(absl::StrCat(
                     "MoEForward ", block_, ": no answer from ", client_->address(), " within ",
                     absl::FormatDuration(options_.retry_timeout), " of retrying", sent,
                     "; last error: ", call->last_error.message())));
    return;
  }
  if (s.code() != absl::StatusCode::kUnavailable ||
      options_.retry_timeout <= absl::ZeroDuration()) {
    Finish(call, sent.empty() ? s : absl::Status(s.code(), absl::StrCat(s.message(), sent)));
    return;
  }
  if (!call->failed_once) {
    call->failed_once = true;
    call->retry_until = now + options_.retry_timeout;
  }
  call->last_error = s;
  const absl::Time limit = std::min(call->deadline, call->retry_until);
  if (now >= limit) {
    Finish(call,
           absl::Status(call->deadline <= call->retry_until ? absl::StatusCode::kDeadlineExceeded
                                                            : absl::StatusCode::kUnavailable,
                        absl::StrCat(s.message(), sent, "; retried for ",
                                     absl::FormatDuration(now - call->start))));
    return;
  }
  {
    // Under mu_: the destructor cannot pass between the insert and the
    // Schedule (the timer runs callbacks without its own lock).
    absl::MutexLock lock(&mu_);
    if (!closing_) {
      waiting_.insert(call);
      timer_.Schedule(now + std::min(Backoff(call->attempts), limit - now), [this, call] {
        {
          absl::MutexLock lock(&mu_);
          if (waiting_.erase(call) == 0) return;  // the destructor finished it
        }
        Attempt(call);
      });
      return;
    }
  }
  Finish(call, absl::CancelledError(
                   absl::StrCat("MoEForward ", block_, ": RemoteMoE destroyed before a re-send")));
}

void RemoteMoE::Finish(const std::shared_ptr<Call>& call, absl::StatusOr<MoEResult> r) {
  Callback done = std::move(call->done);
  call->x = Tensor();
  call->logits = Tensor();
  call->ids = Tensor();
  call->weights = Tensor();
  done(std::move(r));
  absl::MutexLock lock(&mu_);
  --inflight_;
}

}  // namespace qlayer
