// The asynchronous MoEForward side of qlayer::Client: one open
// LayerService.MoEForward stream per (block, lane) with its pending calls
// (MoECallStream), and the set of them a Client owns (MoECallStreams).
//
// Same contract as ForwardStream (forward_stream.h), for MoE blocks: requests
// are written one at a time, a read is always outstanding, answers are
// matched to calls by request_id (any order). When the stream ends, every
// call still pending ends with the stream's status (UNAVAILABLE when the
// server closed it cleanly with answers owed) and the next call opens a new
// stream. A per-call deadline ends a call with DEADLINE_EXCEEDED.
//
// (MoEStream, moe_stream.h, is the synchronous one-stream form qlayer-cli
// uses; this one is what Client::MoEForward and RemoteMoE ride on.)
#ifndef QLAYER_CLIENT_MOE_CALL_STREAM_H_
#define QLAYER_CLIENT_MOE_CALL_STREAM_H_

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
#include "absl/time/time.h"
#include "client/deadline_timer.h"
#include "client/moe_stream.h"
#include "grpcpp/grpcpp.h"
#include "qlayer/v1/layer_service.grpc.pb.h"

namespace qlayer {

// Called exactly once per MoEForward call, on a gRPC or timer thread (keep it
// short). A request's own error answer is the non-OK status here (the
// result's `status` field stays OK).
using MoECallback = std::function<void(absl::StatusOr<MoEResult>)>;

class MoECallStream final
    : public grpc::ClientBidiReactor<v1::MoEForwardRequest, v1::MoEForwardResponse>,
      public std::enable_shared_from_this<MoECallStream> {
 public:
  // Opens the stream. `timer` must outlive the stream's calls.
  static std::shared_ptr<MoECallStream> Open(v1::LayerService::Stub* stub, DeadlineTimer* timer,
                                             bool wait_for_ready);

  // Queues `*request` (request_id set). false, leaving both arguments
  // untouched, once the stream has ended; otherwise takes them and `done`
  // runs exactly once.
  bool Send(v1::MoEForwardRequest* request, absl::Time start, absl::Time deadline,
            MoECallback* done);
  bool ended() const;
  bool finished() const;
  // Cancels (pending calls end CANCELLED) and waits for gRPC's OnDone.
  void Shutdown();

 private:
  struct Pending {
    MoECallback done;
    absl::Time sent;
  };

  MoECallStream() = default;
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;
  void Expire(uint64_t request_id);
  void MaybeStartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  DeadlineTimer* timer_ = nullptr;
  grpc::ClientContext context_;
  v1::MoEForwardResponse response_;  // the read in flight
  v1::MoEForwardRequest writing_;    // the write in flight

  mutable absl::Mutex mu_;
  std::deque<v1::MoEForwardRequest> outbox_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<MoECallStream> self_;  // released in OnDone
};

// The MoEForward streams of one Client, keyed by (block, lane). Destroying
// it shuts every stream down (pending calls end CANCELLED, their callbacks
// have run when the destructor returns).
class MoECallStreams {
 public:
  MoECallStreams(v1::LayerService::Stub* stub, DeadlineTimer* timer, bool wait_for_ready)
      : stub_(stub), timer_(timer), wait_for_ready_(wait_for_ready) {}
  ~MoECallStreams();

  // The open stream of (block, lane), opening one if there is none or the
  // last one ended; nullptr once the destructor runs.
  std::shared_ptr<MoECallStream> StreamFor(const std::string& block, int lane, bool wait_for_ready);

 private:
  v1::LayerService::Stub* const stub_;
  DeadlineTimer* const timer_;
  const bool wait_for_ready_;
  absl::Mutex mu_;
  // Keyed by (block, lane, waits for the channel), as Client's streams.
  std::map<std::tuple<std::string, int, bool>, std::shared_ptr<MoECallStream>> streams_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<MoECallStream>> retired_ ABSL_GUARDED_BY(mu_);
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qlayer

#endif  // QLAYER_CLIENT_MOE_CALL_STREAM_H_
