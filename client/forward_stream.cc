#include "client/forward_stream.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"
#include "client/wire_tensor.h"

namespace qlayer {
namespace {

absl::StatusOr<ForwardResult> DecodeResponse(v1::ForwardResponse& r, absl::Time sent) {
  const int64_t latency_us = absl::ToInt64Microseconds(absl::Now() - sent);
  if (r.has_error() && r.error().code() != 0) {
    return absl::Status(static_cast<absl::StatusCode>(r.error().code()), r.error().message());
  }
  auto output = FromWireTensor(r.output());
  if (!output.ok()) {
    return absl::InternalError(
        absl::StrCat("answer to request ", r.request_id(),
                     " has a malformed output: ", output.status().message()));
  }
  ForwardResult result;
  result.request_id = r.request_id();
  result.output = *std::move(output);
  result.kernel = std::move(*r.mutable_kernel());
  result.queue_us = r.timing().queue_us();
  result.compute_us = r.timing().compute_us();
  result.total_us = r.timing().total_us();
  result.batch_rows = r.batch_rows();
  result.latency_us = latency_us;
  return result;
}

}  // namespace

std::shared_ptr<ForwardStream> ForwardStream::Open(v1::LayerService::Stub* stub,
                                                   DeadlineTimer* timer, bool wait_for_ready) {
  std::shared_ptr<ForwardStream> s(new ForwardStream());
  s->timer_ = timer;
  s->self_ = s;
  s->context_.set_wait_for_ready(wait_for_ready);
  stub->async()->Forward(&s->context_, s.get());
  s->StartRead(&s->response_);
  s->StartCall();
  return s;
}

bool ForwardStream::Send(v1::ForwardRequest* request, absl::Time start, absl::Time deadline,
                         ForwardCallback* done) {
  const uint64_t id = request->request_id();
  {
    absl::MutexLock lock(&mu_);
    if (ended_) return false;
    pending_.emplace(id, Pending{std::move(*done), start});
    outbox_.push_back(std::move(*request));
    MaybeStartWriteLocked();
  }
  if (deadline != absl::InfiniteFuture()) {
    // weak: a timer entry must not keep a finished stream alive.
    timer_->Schedule(deadline, [weak = weak_from_this(), id] {
      if (auto s = weak.lock()) s->Expire(id);
    });
  }
  return true;
}

bool ForwardStream::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

bool ForwardStream::finished() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

size_t ForwardStream::pending() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

void ForwardStream::Shutdown() {
  context_.TryCancel();
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&done_));
}

void ForwardStream::MaybeStartWriteLocked() {
  if (write_in_flight_ || ended_ || outbox_.empty()) return;
  writing_ = std::move(outbox_.front());
  outbox_.pop_front();
  write_in_flight_ = true;
  StartWrite(&writing_);  // never runs OnWriteDone inline (can_inline=false)
}

void ForwardStream::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) {
    // The stream is broken; the unwritten calls end in OnDone with its status.
    ended_ = true;
    return;
  }
  MaybeStartWriteLocked();
}

void ForwardStream::OnReadDone(bool ok) {
  if (!ok) {
    absl::MutexLock lock(&mu_);
    ended_ = true;  // OnDone follows once the write in flight (if any) is done
    return;
  }
  v1::ForwardResponse response = std::move(response_);
  StartRead(&response_);
  Pending call;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(response.request_id());
    if (it == pending_.end()) return;  // expired, or not ours: nobody waits for it
    call = std::move(it->second);
    pending_.erase(it);
  }
  call.done(DecodeResponse(response, call.sent));
}

void ForwardStream::Expire(uint64_t request_id) {
  Pending call;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(request_id);
    if (it == pending_.end()) return;  // answered in time
    call = std::move(it->second);
    pending_.erase(it);
    // Not written yet: never send it.
    for (auto q = outbox_.begin(); q != outbox_.end(); ++q) {
      if (q->request_id() == request_id) {
        outbox_.erase(q);
        break;
      }
    }
  }
  call.done(
      absl::DeadlineExceededError(absl::StrCat("Forward request ", request_id, ": no answer after ",
                                               absl::FormatDuration(absl::Now() - call.sent))));
}

void ForwardStream::OnDone(const grpc::Status& status) {
  absl::flat_hash_map<uint64_t, Pending> orphans;
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    orphans.swap(pending_);
    outbox_.clear();
  }
  absl::Status why = FromGrpcStatus(status);
  if (why.ok()) {
    why = absl::UnavailableError(
        absl::StrCat("Forward stream closed by the server with ", orphans.size(), " answers owed"));
  } else {
    why = absl::Status(why.code(), absl::StrCat("Forward stream ended: ", why.message()));
  }
  for (auto& [id, call] : orphans) call.done(why);
  // Only now: Shutdown() promises no callbacks after it returns.
  std::shared_ptr<ForwardStream> keep = std::move(self_);
  absl::MutexLock lock(&mu_);
  done_ = true;
}

}  // namespace qlayer
