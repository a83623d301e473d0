#include "client/call_stream.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"

namespace qlayer {

template <typename Rpc>
std::shared_ptr<CallStream<Rpc>> CallStream<Rpc>::Open(v1::LayerService::Stub* stub,
                                                       DeadlineTimer* timer, bool wait_for_ready) {
  std::shared_ptr<CallStream> s(new CallStream());
  s->timer_ = timer;
  s->self_ = s;
  s->context_.set_wait_for_ready(wait_for_ready);
  Rpc::Open(stub, &s->context_, s.get());
  s->StartRead(&s->response_);
  s->StartCall();
  return s;
}

template <typename Rpc>
bool CallStream<Rpc>::Send(Request* request, absl::Time start, absl::Time deadline,
                           Callback* done) {
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
    timer_->Schedule(deadline, [weak = this->weak_from_this(), id] {
      if (auto s = weak.lock()) s->Expire(id);
    });
  }
  return true;
}

template <typename Rpc>
bool CallStream<Rpc>::ended() const {
  absl::MutexLock lock(&mu_);
  return ended_;
}

template <typename Rpc>
bool CallStream<Rpc>::finished() const {
  return released_->HasBeenNotified();
}

template <typename Rpc>
size_t CallStream<Rpc>::pending() const {
  absl::MutexLock lock(&mu_);
  return pending_.size();
}

template <typename Rpc>
void CallStream<Rpc>::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    cancelling_ = true;
  }
  context_.TryCancel();
  // Not just done_: OnDone must also have let go of the stream, so that the
  // caller's reference is the last and the stream (its ClientContext, which
  // holds the Channel) is destroyed on the caller's thread.
  released_->WaitForNotification();
}

template <typename Rpc>
void CallStream<Rpc>::MaybeStartWriteLocked() {
  if (write_in_flight_ || ended_ || outbox_.empty()) return;
  writing_ = std::move(outbox_.front());
  outbox_.pop_front();
  write_in_flight_ = true;
  this->StartWrite(&writing_);  // never runs OnWriteDone inline (can_inline=false)
}

template <typename Rpc>
void CallStream<Rpc>::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) {
    // The stream is broken; the unwritten calls end in OnDone with its status.
    ended_ = true;
    return;
  }
  MaybeStartWriteLocked();
  MaybeHalfCloseLocked();  // gRPC allows no WritesDone while a write is in flight
}

template <typename Rpc>
void CallStream<Rpc>::RetireLocked(std::vector<Pending>* unsent) {
  if (ended_) return;  // broken or retired already: OnDone or the half-close follows
  ended_ = true;
  server_draining_ = true;
  for (const Request& r : outbox_) {
    auto it = pending_.find(r.request_id());
    if (it == pending_.end()) continue;
    unsent->push_back(std::move(it->second));
    pending_.erase(it);
  }
  outbox_.clear();
}

template <typename Rpc>
void CallStream<Rpc>::MaybeHalfCloseLocked() {
  // Not once the last read has completed: Expire() calls this from the
  // timer thread, outside any reaction, and once the read side is done gRPC
  // may finish the call (every operation complete, OnDone follows) at any
  // moment; a WritesDone started then would be an operation on a finished
  // call. While a read is outstanding, or its OnReadDone runs, the call
  // cannot finish, so starting the half-close is safe.
  if (!server_draining_ || writes_done_ || read_done_ || done_ || write_in_flight_ ||
      !pending_.empty()) {
    return;
  }
  writes_done_ = true;
  // The server answers what it read and then ends the stream (OnDone).
  this->StartWritesDone();
}

template <typename Rpc>
void CallStream<Rpc>::OnReadDone(bool ok) {
  if (!ok) {
    absl::MutexLock lock(&mu_);
    ended_ = true;  // OnDone follows once the write in flight (if any) is done
    read_done_ = true;
    return;
  }
  Response response = std::move(response_);
  this->StartRead(&response_);
  Pending call;
  bool found = false;
  std::vector<Pending> unsent;
  {
    absl::MutexLock lock(&mu_);
    // Before the answer's callback: a caller that sends again from it must
    // not land on this stream.
    if (SaysServerDraining(response.error())) RetireLocked(&unsent);
    auto it = pending_.find(response.request_id());
    if (it != pending_.end()) {  // else expired, or not ours: nobody waits for it
      call = std::move(it->second);
      pending_.erase(it);
      found = true;
    }
    MaybeHalfCloseLocked();
  }
  for (Pending& p : unsent) {
    p.done(absl::UnavailableError(absl::StrCat(
        Rpc::kName, " request not sent: the server is draining (its stream is retired)")));
  }
  if (found) call.done(Rpc::Decode(response, call.sent));
}

template <typename Rpc>
void CallStream<Rpc>::Expire(uint64_t request_id) {
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
    MaybeHalfCloseLocked();  // it may have been the last one a retired stream owed
  }
  call.done(absl::DeadlineExceededError(
      absl::StrCat(Rpc::kName, " request ", request_id, ": no answer after ",
                   absl::FormatDuration(absl::Now() - call.sent))));
}

template <typename Rpc>
void CallStream<Rpc>::OnDone(const grpc::Status& status) {
  absl::flat_hash_map<uint64_t, Pending> orphans;
  bool cancelled_here;
  {
    absl::MutexLock lock(&mu_);
    ended_ = true;
    orphans.swap(pending_);
    outbox_.clear();
    cancelled_here = cancelling_;
  }
  absl::Status why = FromGrpcStatus(status);
  if (why.code() == absl::StatusCode::kCancelled && !cancelled_here) {
    // Not cancelled by this client: a server exiting right after its drain
    // resets streams opened at its very end (seen as CANCELLED after SIGTERM,
    // Faults.SigtermAndRestart...); their calls were not computed, so they
    // are as unanswered as on any stream the server closed.
    why = absl::UnavailableError(
        absl::StrCat(Rpc::kName, " stream cancelled by the server: ", why.message()));
  } else if (why.ok()) {
    why = absl::UnavailableError(absl::StrCat(Rpc::kName, " stream closed by the server with ",
                                              orphans.size(), " answers owed"));
  } else {
    why = absl::Status(why.code(), absl::StrCat(Rpc::kName, " stream ended: ", why.message()));
  }
  for (auto& [id, call] : orphans) call.done(why);
  // Only now: Shutdown() promises no callbacks after it returns.
  std::shared_ptr<absl::Notification> released = released_;  // outlives `this`
  {
    std::shared_ptr<CallStream> keep = std::move(self_);
    absl::MutexLock lock(&mu_);
    done_ = true;
  }  // `keep` goes: the last reference only if the owner has let go already
  // From here on this thread (one of gRPC's) neither holds nor touches the
  // stream, and its owner may destroy it. It must not be destroyed here: its
  // ClientContext holds the Channel, and a Channel whose last reference goes
  // on a gRPC callback thread can free the completion queue that thread is
  // polling (gRPC 1.51: "ref_counted.h:183 assertion failed: prior > 0" in
  // grpc_cq_internal_unref when the Client was destroyed just before).
  released->Notify();
}

template <typename Rpc>
CallStreams<Rpc>::~CallStreams() {
  Shutdown();
}

template <typename Rpc>
void CallStreams<Rpc>::Shutdown() {
  std::vector<std::shared_ptr<CallStream<Rpc>>> streams;
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

template <typename Rpc>
std::shared_ptr<CallStream<Rpc>> CallStreams<Rpc>::StreamFor(const std::string& name, int lane,
                                                             bool wait_for_ready) {
  absl::MutexLock lock(&mu_);
  if (closing_) return nullptr;
  const bool wait = wait_for_ready_ || wait_for_ready;
  std::shared_ptr<CallStream<Rpc>>& slot = streams_[{name, lane, wait}];
  if (slot == nullptr || slot->ended()) {
    if (slot != nullptr) {
      std::erase_if(retired_, [](const auto& s) { return s->finished(); });
      retired_.push_back(std::move(slot));
    }
    slot = CallStream<Rpc>::Open(stub_, timer_, wait);
    if (opened_ != nullptr) opened_->fetch_add(1);
  }
  return slot;
}

template <typename Rpc>
void CallStreams<Rpc>::Send(const std::string& name, int lane, bool wait_for_ready,
                            Request* request, absl::Time start, absl::Time deadline,
                            Callback done) {
  // StreamFor replaces a stream that has ended; one that ends between that
  // and Send refuses the call, and the next try opens a fresh one.
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::shared_ptr<CallStream<Rpc>> stream = StreamFor(name, lane, wait_for_ready);
    if (stream == nullptr) {
      done(absl::CancelledError(absl::StrCat(Rpc::kName, " ", name, ": the client is closing")));
      return;
    }
    if (stream->Send(request, start, deadline, &done)) return;
  }
  done(absl::UnavailableError(
      absl::StrCat(Rpc::kName, " ", name, ": could not open a stream to ", address_)));
}

template class CallStream<ForwardRpc>;
template class CallStream<MoEForwardRpc>;
template class CallStreams<ForwardRpc>;
template class CallStreams<MoEForwardRpc>;

}  // namespace qlayer
