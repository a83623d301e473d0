// One open LayerService.Forward stream and the calls pending on it.
//
// Requests are written one at a time (gRPC allows one write in flight; the
// library holds the message until OnWriteDone), the rest wait in `outbox_`;
// a read is always outstanding, and each answer is matched to its call by
// request_id (the server may answer out of order). When the stream ends for
// any reason (server gone, restarted, draining, cancelled) every call still
// pending ends with the stream's gRPC status — UNAVAILABLE when the server
// closed it cleanly with answers owed — and the stream refuses new calls, so
// its owner opens a fresh one for the next call (reconnecting).
//
// Lifetime: the reactor keeps itself alive (self_) until gRPC's OnDone, so
// its owner may drop it at any time; Shutdown() cancels and waits for OnDone.
#ifndef QLAYER_CLIENT_FORWARD_STREAM_H_
#define QLAYER_CLIENT_FORWARD_STREAM_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/deadline_timer.h"
#include "client/forward_result.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

class ForwardStream final : public grpc::ClientBidiReactor<v1::ForwardRequest, v1::ForwardResponse>,
                            public std::enable_shared_from_this<ForwardStream> {
 public:
  // Opens the stream. `timer` must outlive the stream's calls.
  static std::shared_ptr<ForwardStream> Open(v1::LayerService::Stub* stub, DeadlineTimer* timer,
                                             bool wait_for_ready);

  // Queues `*request` (its request_id already set), timing the call from
  // `start`. Returns false, leaving `*request` and `*done` untouched, when
  // this stream has ended: the caller opens a new one. Otherwise takes both,
  // and `done` runs exactly once: the answer, the answer's error, the
  // stream's status, or DEADLINE_EXCEEDED at `deadline`.
  bool Send(v1::ForwardRequest* request, absl::Time start, absl::Time deadline,
            ForwardCallback* done);

  // True once the stream can take no more calls.
  bool ended() const;
  // True once gRPC is done with the stream and every callback has run.
  bool finished() const;
  // Calls waiting for an answer (written or not).
  size_t pending() const;

  // Cancels the stream (pending calls end CANCELLED) and waits for gRPC to
  // finish with it.
  void Shutdown();

 private:
  struct Pending {
    ForwardCallback done;
    absl::Time sent;
  };

  ForwardStream() = default;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  void Expire(uint64_t request_id);
  void MaybeStartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DeadlineTimer* timer_ = nullptr;
  grpc::ClientContext context_;
  v1::ForwardResponse response_;  // the read in flight
  v1::ForwardRequest writing_;    // the write in flight, owned until OnWriteDone

  mutable absl::Mutex mu_;
  std::deque<v1::ForwardRequest> outbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;  // no more writes
  bool done_ ABSL_GUARDED_BY(mu_) = false;   // OnDone has run
  std::shared_ptr<ForwardStream> self_;      // released in OnDone
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_FORWARD_STREAM_H_
