#include "client/moe_call_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"
#include "client/wire_tensor.h"

namespace qlayer {
namespace {

absl::StatusOr<MoEResult> DecodeAnswer(v1::MoEForwardResponse& a, absl::Time sent) {
  if (a.has_error() && a.error().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(a.error().code()), a.error().message());
  }
  MoEResult r;
  r.request_id = a.request_id();
  r.latency_us = absl::ToInt64Microseconds(absl::Now() - sent);
  r.queue_us = a.timing().queue_us();
  r.compute_us = a.timing().compute_us();
  r.total_us = a.timing().total_us();
  r.batch_rows = a.batch_rows();
  r.kernels.assign(a.kernels().begin(), a.kernels().end());
  absl::StatusOr<Tensor> y = FromWireTensor(a.output());
  if (!y.ok()) {
    return absl::InternalError(absl::StrCat("answer to MoE request ", a.request_id(),
                                            " has a malformed output: ", y.status().message()));
  }
  r.output = *std::move(y);
  if (a.has_topk_ids()) {
    absl::StatusOr<Tensor> ids = FromWireTensor(a.topk_ids());
    absl::StatusOr<Tensor> w = FromWireTensor(a.topk_weights());
    if (!ids.ok() || !w.ok()) {
      return absl::InternalError(absl::StrCat(
          "answer to MoE request ", a.request_id(),
          " has a malformed routing: ", (ids.ok() ? w.status() : ids.status()).message()));
    }
    r.topk_ids = *std::move(ids);
    r.topk_weights = *std::move(w);
  }
  return r;
}

}  // namespace

std::shared_ptr<MoECallStream> MoECallStream::Open(v1::LayerService::Stub* stub,
                                                   DeadlineTimer* timer, bool wait_for_ready) {
  std::shared_ptr<MoECallStream> s(new MoECallStream());
  s->timer_ = timer;
  s->self_ = s;
  s->context_.set_wait_for_ready(wait_for_ready);
  stub->async()->MoEForward(&s->context_, s.get());
  s->StartRead(&s->response_);
  s->StartCall();
  return s;
}

bool MoECallStream::Send(v1::MoEForwardRequest* request, absl::Time start, absl::Time deadline,
                         MoECallback* done) {
  const uint64_t id = request->request_id();
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return false;
    pending_.emplace(id, Pending{std::move(*done), start});
    outbox_.push_back(std::move(*request));
    MaybeStartWriteLocked();
  }
  if (deadline != absl::InfiniteFuture()) {
    timer_->Schedule(deadline, [weak = weak_from_this(), id] {
      if (auto s = weak.lock()) s->Expire(id);
    });
  }
  return true;
}

bool MoECallStream::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

bool MoECallStream::finished() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

void MoECallStream::Shutdown() {
  context_.TryCancel();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
}

void MoECallStream::MaybeStartWriteLocked() {
  if (write_in_flight_ || ended_ || outbox_.empty()) return;
  writing_ = std::move(outbox_.front());
  outbox_.pop_front();
  write_in_flight_ = true;
  StartWrite(&writing_);
}

void MoECallStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) {
    ended_ = true;  // the unwritten calls end in OnDone with the stream's status
    return;
  }
  MaybeStartWriteLocked();
}

void MoECallStream::OnReadDone(bool ok) {
  if (!ok) {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    return;
  }
  v1::MoEForwardResponse response = std::move(response_);
  StartRead(&response_);
  Pending call;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(response.request_id());
    if (it == pending_.end()) return;  // expired: nobody waits for it
    call = std::move(it->second);
    pending_.erase(it);
  }
  call.done(DecodeAnswer(response, call.sent));
}

void MoECallStream::Expire(uint64_t request_id) {
  Pending call;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end()) return;  // answered in time
    call = std::move(it->second);
    pending_.erase(it);
    for (auto q = outbox_.begin(); q != outbox_.end(); ++q) {
      if (q->request_id() == request_id) {
        outbox_.erase(q);  // not written yet: never send it
        break;
      }
    }
  }
  call.done(absl::DeadlineExceededError(
      absl::StrCat("MoEForward request ", request_id, ": no answer after ",
                   absl::FormatDuration(absl::Now() - call.sent))));
}

void MoECallStream::OnDone(const grpc::Status& status) {
  absl::flat_hash_map<uint64_t, Pending> orphans;
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    orphans.swap(pending_);
    outbox_.clear();
  }
  absl::Status why = FromGrpcStatus(status);
  if (why.ok()) {
    why = absl::UnavailableError(absl::StrCat("MoEForward stream closed by the server with ",
                                              orphans.size(), " answers owed"));
  } else {
    why = absl::Status(why.code(), absl::StrCat("MoEForward stream ended: ", why.message()));
  }
  for (auto& [id, call] : orphans) call.done(why);
  std::shared_ptr<MoECallStream> keep = std::move(self_);
  absl::MutexLock lock(&mu_);
  done_ = true;
}

MoECallStreams::~MoECallStreams() {
  std::vector<std::shared_ptr<MoECallStream>> streams;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    for (auto& [key, stream] : streams_) streams.push_back(std::move(stream));
    streams_.clear();
    for (auto& stream : retired_) streams.push_back(std::move(stream));
    retired_.clear();
  }
  for (auto& s : streams) s->Shutdown();
}

std::shared_ptr<MoECallStream> MoECallStreams::StreamFor(const std::string& block, int lane,
                                                         bool wait_for_ready) {
  absl::MutexLock lock(&mu_);
  if (closing_) return nullptr;
  const bool wait = wait_for_ready_ || wait_for_ready;
  std::shared_ptr<MoECallStream>& slot = streams_[{block, lane, wait}];
  if (slot == nullptr || slot->ended()) {
    if (slot != nullptr) {
      std::erase_if(retired_, [](const auto& s) { return s->finished(); });
      retired_.push_back(std::move(slot));
    }
    slot = MoECallStream::Open(stub_, timer_, wait);
  }
  return slot;
}

}  // namespace qlayer
