// A bidi stream reactor for pipelined request/answer streams (Forward,
// MoEForward), after gRPC's health WatchReactor: answers are produced on
// other threads (the batch workers), pushed onto `ready_` and written one at
// a time (gRPC allows one write in flight; StartWrite borrows the message
// until OnWriteDone). Requests keep being read while earlier ones compute,
// up to max_inflight per stream; beyond that reading pauses, so a client
// that floods one stream is held back by HTTP/2 flow control, not by memory.
//
// Lifetime: one ref for gRPC (dropped in OnDone) plus one per request handed
// to a worker, so a completion arriving after the client vanished finds the
// reactor alive; the last Unref deletes it. OnCancel raises the shared
// `cancelled` flag (queued work for this stream is then dropped, never
// computed), discards unsent answers and finishes the call.
//
// Draining (SIGTERM): the stream keeps reading. Requests read from then on
// are refused, each with its own UNAVAILABLE answer (Refuse), and the stream
// finishes once the client half-closes and everything owed is written --
// not as soon as nothing is owed, because finishing while the client still
// writes leaves requests unanswered and, once the server closes the
// connection with their bytes unread, makes Linux reset it, discarding
// answers not yet delivered (RELIABILITY.md, drain). For clients that never
// half-close, the server finishes drained streams that owe nothing and have
// read nothing for a while (FinishIfIdle), with a status saying so.
#ifndef QLAYER_SERVER_SERVICE_PIPELINED_REACTOR_H_
#define QLAYER_SERVER_SERVICE_PIPELINED_REACTOR_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"
#include "server/service/stream_registry.h"

namespace qlayer {

template <class Request, class Response>
class PipelinedReactor : public grpc::ServerBidiReactor<Request, Response>, public DrainableStream {
 public:
  PipelinedReactor(StreamRegistry* registry, int64_t max_inflight)
      : registry_(registry), max_inflight_(max_inflight > 0 ? max_inflight : 1) {}

  void Ref() override { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() override {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  void Drain() override {
    absl::MutexLock lock(&mu_);
    draining_ = true;
  }

  void FinishIfIdle(absl::Time read_before) override {
    absl::MutexLock lock(&mu_);
    if (finished_ || !draining_ || write_in_flight_ || admitting_ > 0 || pending_ > 0 ||
        !ready_.empty() || last_read_ >= read_before) {
      return;
    }
    FinishLocked(grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("qlayer-server is draining: every request read on this stream was answered (",
                     refused_,
                     " refused without being computed); requests sent after this were not "
                     "read: send them again (to another server)")));
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed, or the call is over
      absl::MutexLock lock(&mu_);
      reads_done_ = true;
      MaybeFinishLocked();
      return;
    }
    {
      // A read that completes after Finish carries a request no one will
      // answer, and no further read may start.
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      // Counted from here, under the lock Drain() takes: HandleRequest runs
      // unlocked, and a Drain() between this read and its BeginPending()
      // would otherwise see nothing owed and finish the stream, dropping the
      // answer of a request that is then computed.
      ++admitting_;
      last_read_ = absl::Now();
    }
    HandleRequest(std::move(reading_));
    absl::MutexLock lock(&mu_);
    --admitting_;
    if (finished_) return;
    if (InflightLocked() >= max_inflight_) {
      read_paused_ = true;
    } else {
      StartReadLocked();
    }
    MaybeFinishLocked();  // a Drain() that came during HandleRequest
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok) {
      CancelLocked();
    } else {
      MaybeStartWriteLocked();
      MaybeResumeReadLocked();
    }
    MaybeFinishLocked();
  }

  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    CancelLocked();
    MaybeFinishLocked();
  }

  void OnDone() override {
    registry_->Remove(this);
    Unref();
  }

  // What the stream has done so far: answers handed to gRPC (StartWrite),
  // and whether Finish ran and with which status. For tests, which drive a
  // reactor without a call (gRPC keeps its operations until one is bound).
  struct Progress {
    int64_t answers_written = 0;
    bool finished = false;
    grpc::Status status;
  };
  Progress progress() const {
    absl::MutexLock lock(&mu_);
    return {answers_written_, finished_, finish_status_};
  }

 protected:
  // Registers for draining and starts reading: call last in the most-derived
  // constructor (a read may complete on another thread at once).
  void Start() {
    {
      absl::MutexLock lock(&mu_);
      last_read_ = absl::Now();
    }
    registry_->Add(this);
    absl::MutexLock lock(&mu_);
    if (!finished_) StartReadLocked();
  }

  // Decides what to do with one request (on a gRPC thread; keep it short):
  // Answer() at once, or BeginPending() and later CompletePending().
  virtual void HandleRequest(std::unique_ptr<Request> request) = 0;

  bool draining() const {
    absl::MutexLock lock(&mu_);
    return draining_;
  }
  // Raised when the caller goes away; work queued for this stream checks it.
  const std::shared_ptr<std::atomic<bool>>& cancelled_flag() const { return cancelled_; }

  // Queues an answer to write.
  void Answer(Response response) {
    absl::MutexLock lock(&mu_);
    PushLocked(std::move(response));
  }
  // Queues the answer of a request refused because the server is draining
  // (counted for the stream's final status).
  void Refuse(Response response) {
    absl::MutexLock lock(&mu_);
    ++refused_;
    PushLocked(std::move(response));
  }
  // A request handed to another thread: keeps the stream (and this object)
  // open until CompletePending().
  void BeginPending() {
    Ref();
    absl::MutexLock lock(&mu_);
    ++pending_;
  }
  // The pending request's answer (from any thread); `answer` false when the
  // request was not accepted after all or needs no answer.
  void CompletePending(Response response, bool answer = true) {
    {
      absl::MutexLock lock(&mu_);
      --pending_;
      if (answer) PushLocked(std::move(response));
      MaybeResumeReadLocked();
      MaybeFinishLocked();
    }
    Unref();
  }

 private:
  int64_t InflightLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_ + static_cast<int64_t>(ready_.size());
  }

  void StartReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    reading_ = std::make_unique<Request>();
    this->StartRead(reading_.get());
  }

  void PushLocked(Response response) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || cancelled_local_) return;  // nobody to answer
    ready_.push_back(std::move(response));
    MaybeStartWriteLocked();
  }

  void MaybeStartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (write_in_flight_ || ready_.empty() || finished_) return;
    writing_ = std::move(ready_.front());
    ready_.pop_front();
    write_in_flight_ = true;
    ++answers_written_;
    this->StartWrite(&writing_);
  }

  void MaybeResumeReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!read_paused_ || finished_ || reads_done_ || InflightLocked() >= max_inflight_) return;
    read_paused_ = false;
    StartReadLocked();
  }

  void CancelLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    cancelled_local_ = true;
    cancelled_->store(true, std::memory_order_relaxed);
    ready_.clear();
  }

  // Finishes once nothing is left to write: after a cancel at once; else
  // when the client half-closed and every request read is answered (also
  // while draining: see the top of the file; FinishIfIdle covers clients
  // that never half-close).
  void MaybeFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || write_in_flight_) return;
    if (cancelled_local_) {
      FinishLocked(grpc::Status::CANCELLED);
      return;
    }
    if (reads_done_ && admitting_ == 0 && pending_ == 0 && ready_.empty()) {
      FinishLocked(refused_ == 0
                       ? grpc::Status::OK
                       : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                      absl::StrCat("qlayer-server is draining: ", refused_,
                                                   " request(s) on this stream were answered "
                                                   "UNAVAILABLE without being computed; every "
                                                   "request was answered")));
    }
  }

  void FinishLocked(grpc::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    finished_ = true;
    finish_status_ = status;
    this->Finish(std::move(status));
  }

  StreamRegistry* const registry_;
  const int64_t max_inflight_;
  std::atomic<int> refs_{1};
  const std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
  // Owned by the read in flight; handed to HandleRequest when it completes.
  std::unique_ptr<Request> reading_;

  mutable absl::Mutex mu_;
  std::deque<Response> ready_ ABSL_GUARDED_BY(mu_);
  Response writing_ ABSL_GUARDED_BY(mu_);  // borrowed by gRPC until OnWriteDone
  int64_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t admitting_ ABSL_GUARDED_BY(mu_) = 0;  // read, in HandleRequest
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;    // answered by Refuse
  absl::Time last_read_ ABSL_GUARDED_BY(mu_);   // of a request (or the start)
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_local_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_ ABSL_GUARDED_BY(mu_);
  int64_t answers_written_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace qlayer

#endif  // QLAYER_SERVER_SERVICE_PIPELINED_REACTOR_H_
