// server/service/pipelined_reactor.h driven by hand, without a call: gRPC's
// ServerBidiReactor keeps StartRead / StartWrite / Finish until a call is
// bound, so the test plays gRPC (OnReadDone, OnWriteDone, OnDone) and checks
// the reactor's own bookkeeping (progress()) at each step, including steps
// that a real stream reaches only through a race.
#include "server/service/pipelined_reactor.h"

#include <functional>
#include <memory>
#include <thread>
#include <utility>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "qlayer/v1/layer_service.pb.h"
#include "server/service/stream_registry.h"

namespace qlayer {
namespace {

using Reactor = PipelinedReactor<v1::ForwardRequest, v1::ForwardResponse>;

// A stream whose requests go to `on_request` (the test decides what each
// one does: answer, hand over, block).
class TestStream final : public Reactor {
 public:
  using OnRequest = std::function<void(TestStream&, std::unique_ptr<v1::ForwardRequest>)>;
  TestStream(StreamRegistry* registry, int64_t max_inflight, OnRequest on_request)
      : Reactor(registry, max_inflight), on_request_(std::move(on_request)) {
    Start();
  }
  using Reactor::Answer;
  using Reactor::BeginPending;
  using Reactor::CompletePending;

 private:
  void HandleRequest(std::unique_ptr<v1::ForwardRequest> request) override {
    on_request_(*this, std::move(request));
  }
  OnRequest on_request_;
};

v1::ForwardResponse AnswerFor(uint64_t id) {
  v1::ForwardResponse r;
  r.set_request_id(id);
  return r;
}

// Drain() arriving while a request that was just read is on its way to a
// worker (OnReadDone has released the lock, HandleRequest has not yet called
// BeginPending) must not finish the stream: that request is accepted and
// will be computed, so its answer has to be written before the status that
// says every accepted request was answered.
TEST(PipelinedReactor, DrainBetweenReadAndHandOverWaitsForThatAnswer) {
  StreamRegistry registry;
  absl::Notification entered, release;
  auto* stream = new TestStream(&registry, 4, [&](TestStream& s, auto) {
    entered.Notify();
    release.WaitForNotification();
    s.BeginPending();  // handed to a worker
  });
  std::thread reader([&] { stream->OnReadDone(true); });  // request 0 read
  entered.WaitForNotification();
  registry.DrainAll();  // SIGTERM now, before BeginPending
  EXPECT_FALSE(stream->progress().finished)
      << "Drain finished the stream while an accepted request was being handed over: "
      << stream->progress().status.error_message();
  release.Notify();
  reader.join();
  // The worker's answer.
  stream->CompletePending(AnswerFor(0));
  EXPECT_EQ(stream->progress().answers_written, 1) << "the accepted request's answer was dropped";
  stream->OnWriteDone(true);
  stream->OnReadDone(false);  // the client half-closes
  const Reactor::Progress p = stream->progress();
  EXPECT_TRUE(p.finished);
  EXPECT_EQ(p.answers_written, 1);
  stream->OnDone();
  EXPECT_EQ(registry.size(), 0u);
}

}  // namespace
}  // namespace qlayer
