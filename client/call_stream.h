// The pipelined streams of qlayer::Client, one template for Forward and
// MoEForward (Rpc: ForwardRpc or MoEForwardRpc, stream_rpcs.h).
//
// CallStream: one open stream and the calls pending on it. Requests are
// written one at a time (gRPC allows one write in flight; the library holds
// the message until OnWriteDone), the rest wait in `outbox_`; a read is
// always outstanding, and each answer is matched to its call by request_id
// (the server may answer out of order). When the stream ends for any reason
// (server gone, restarted, draining, cancelled) every call still pending ends
// with the stream's gRPC status -- UNAVAILABLE when the server closed it
// cleanly with answers owed -- and the stream refuses new calls, so its owner
// opens a fresh one for the next call (reconnecting). A per-call deadline
// ends a call with DEADLINE_EXCEEDED.
//
// Retiring: an answer saying the server is draining (SaysServerDraining:
// the request was refused, not computed) ends the stream for new calls at
// once; calls queued here but not yet written end UNAVAILABLE (never sent:
// their callers send them again elsewhere), and once every call written on
// it is answered (or expired) the stream half-closes, which is what lets a
// drained server end it. A caller that kept re-sending on it would keep it
// from going quiet, holding the server's drain to its grace period.
//
// Lifetime: the reactor keeps itself alive (self_) until gRPC's OnDone, so
// its owner may drop it at any time; Shutdown() cancels and waits until
// OnDone has run and let go of it. Its ClientContext holds the Channel, and
// gRPC must not see a Channel's last reference go on one of its own callback
// threads (gRPC 1.51 then frees the completion queue that thread polls: a
// "ref_counted.h:183 assertion failed: prior > 0" abort in
// grpc_cq_internal_unref), so CallStreams keeps every stream until finished()
// and Client drops them, then its Channel, on the destroying thread.
//
// CallStreams: the streams of one Client for one RPC, keyed by (layer or
// block, lane, waits for the channel): a fail-fast call never joins a stream
// that is waiting for the channel, where it would wait too.
#ifndef QLAYER_CLIENT_CALL_STREAM_H_
#define QLAYER_CLIENT_CALL_STREAM_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "client/deadline_timer.h"
#include "client/stream_rpcs.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

template <typename Rpc>
class CallStream final
    : public grpc::ClientBidiReactor<typename Rpc::Request, typename Rpc::Response>,
      public std::enable_shared_from_this<CallStream<Rpc>> {
 public:
  using Request = typename Rpc::Request;
  using Response = typename Rpc::Response;
  using Callback = std::function<void(absl::StatusOr<typename Rpc::Result>)>;

  // Opens the stream. `timer` must outlive the stream's calls.
  static std::shared_ptr<CallStream> Open(v1::LayerService::Stub* stub, DeadlineTimer* timer,
                                          bool wait_for_ready);

  // Queues `*request` (its request_id already set), timing the call from
  // `start`. Returns false, leaving `*request` and `*done` untouched, when
  // this stream has ended: the caller opens a new one. Otherwise takes both,
  // and `done` runs exactly once: the answer, the answer's error, the
  // stream's status, or DEADLINE_EXCEEDED at `deadline`.
  bool Send(Request* request, absl::Time start, absl::Time deadline, Callback* done);

  // True once the stream can take no more calls.
  bool ended() const;
  // True once gRPC is done with the stream, every callback has run and
  // OnDone has let go of it: dropping it then destroys it on this thread.
  bool finished() const;
  // Calls waiting for an answer (written or not).
  size_t pending() const;

  // Cancels the stream (pending calls end CANCELLED) and waits for gRPC to
  // finish with it (finished()).
  void Shutdown();

 private:
  struct Pending {
    Callback done;
    absl::Time sent;
  };

  CallStream() = default;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  void Expire(uint64_t request_id);
  void MaybeStartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The server is draining: no more calls here; the unwritten ones are
  // moved to `unsent` (their callbacks run by the caller, unlocked).
  void RetireLocked(std::vector<Pending>* unsent) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Half-closes a retired stream once nothing written on it is owed.
  void MaybeHalfCloseLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DeadlineTimer* timer_ = nullptr;
  grpc::ClientContext context_;
  Response response_;  // the read in flight
  Request writing_;    // the write in flight, owned until OnWriteDone

  mutable absl::Mutex mu_;
  std::deque<Request> outbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;            // no more writes
  bool done_ ABSL_GUARDED_BY(mu_) = false;             // OnDone has run
  bool server_draining_ ABSL_GUARDED_BY(mu_) = false;  // an answer said so
  bool writes_done_ ABSL_GUARDED_BY(mu_) = false;      // StartWritesDone issued
  bool read_done_ ABSL_GUARDED_BY(mu_) = false;        // the last read completed
  bool cancelling_ ABSL_GUARDED_BY(mu_) = false;       // Shutdown() cancelled it
  std::shared_ptr<CallStream> self_;                   // released in OnDone
  // Notified by OnDone once it has released self_ and touches nothing more;
  // shared so that OnDone can notify after the stream may be gone.
  const std::shared_ptr<absl::Notification> released_ = std::make_shared<absl::Notification>();
};

template <typename Rpc>
class CallStreams {
 public:
  using Request = typename Rpc::Request;
  using Callback = typename CallStream<Rpc>::Callback;

  // `stub` and `timer` must outlive this. `wait_for_ready`: every stream
  // waits for the channel (ClientOptions::wait_for_ready). `opened`, if set,
  // counts the streams opened. `address` names the server in errors.
  CallStreams(v1::LayerService::Stub* stub, DeadlineTimer* timer, bool wait_for_ready,
              std::string address, std::atomic<int64_t>* opened = nullptr)
      : stub_(stub),
        timer_(timer),
        wait_for_ready_(wait_for_ready),
        address_(std::move(address)),
        opened_(opened) {}
  // Shutdown().
  ~CallStreams();
  CallStreams(const CallStreams&) = delete;
  CallStreams& operator=(const CallStreams&) = delete;

  // Queues `*request` (request_id set) on the open stream of (name, lane,
  // wait_for_ready), opening one if there is none or the last one ended.
  // `done` runs exactly once (see CallStream::Send); CANCELLED once
  // Shutdown() has begun.
  void Send(const std::string& name, int lane, bool wait_for_ready, Request* request,
            absl::Time start, absl::Time deadline, Callback done);

  // Cancels every stream (pending calls end CANCELLED, their callbacks have
  // run when this returns); later calls end CANCELLED.
  void Shutdown();

 private:
  // The open stream of (name, lane, wait), opening one if there is none or
  // the last one ended; nullptr once Shutdown() has begun.
  std::shared_ptr<CallStream<Rpc>> StreamFor(const std::string& name, int lane,
                                             bool wait_for_ready);

  v1::LayerService::Stub* const stub_;
  DeadlineTimer* const timer_;
  const bool wait_for_ready_;
  const std::string address_;
  std::atomic<int64_t>* const opened_;

  absl::Mutex mu_;
  std::map<std::tuple<std::string, int, bool>, std::shared_ptr<CallStream<Rpc>>> streams_
      ABSL_GUARDED_BY(mu_);
  // Replaced streams not yet finished(): Shutdown() waits for them too, so
  // that no callback runs after it returns and none is destroyed on a gRPC
  // thread.
  std::vector<std::shared_ptr<CallStream<Rpc>>> retired_ ABSL_GUARDED_BY(mu_);
  // Set by Shutdown(): a callback that sends during it gets CANCELLED
  // instead of a stream nobody would shut down.
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

// Defined (and instantiated) in call_stream.cc.
extern template class CallStream<ForwardRpc>;
extern template class CallStream<MoEForwardRpc>;
extern template class CallStreams<ForwardRpc>;
extern template class CallStreams<MoEForwardRpc>;

}  // namespace qlayer

#endif  // QLAYER_CLIENT_CALL_STREAM_H_
