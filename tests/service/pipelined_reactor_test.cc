// server/service/pipelined_reactor.h driven by hand, without a call: gRPC's
// ServerBidiReactor keeps StartRead / StartWrite / Finish until a call is
// bound, so the test plays gRPC (OnReadDone, OnWriteDone, OnDone) and checks
// the reactor's own bookkeeping (progress()) at each step, including steps
// that a real stream reaches only through a race.
#include "server/service/pipelined_reactor.h"

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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
  using Reactor::draining;
  using Reactor::Refuse;

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
  EXPECT_TRUE(p.status.ok()) << p.status.error_message();  // nothing was refused
  EXPECT_EQ(p.answers_written, 1);
  stream->OnDone();
  EXPECT_EQ(registry.size(), 0u);
}

// Answers at once; refuses (as BatchedReactor does) once draining.
void AnswerOrRefuse(TestStream& s, std::unique_ptr<v1::ForwardRequest> request) {
  if (s.draining()) {
    s.Refuse(AnswerFor(request->request_id()));
  } else {
    s.Answer(AnswerFor(request->request_id()));
  }
}

// Draining does not finish a stream whose client is still sending: it keeps
// reading, answers every request that arrives with a refusal, and finishes
// when the client half-closes, with a status that counts the refusals.
TEST(PipelinedReactor, DrainKeepsReadingRefusesAndFinishesAtHalfClose) {
  StreamRegistry registry;
  auto* stream = new TestStream(&registry, 4, AnswerOrRefuse);
  stream->OnReadDone(true);  // request 0, answered
  stream->OnWriteDone(true);
  registry.DrainAll();
  EXPECT_FALSE(stream->progress().finished) << "finished while the client may still be writing";
  for (int i = 1; i <= 3; ++i) {  // requests that arrive during the drain
    stream->OnReadDone(true);
    EXPECT_EQ(stream->progress().answers_written, 1 + i) << "a request read was not answered";
    stream->OnWriteDone(true);
    EXPECT_FALSE(stream->progress().finished);
  }
  stream->OnReadDone(false);  // half-close
  const Reactor::Progress p = stream->progress();
  ASSERT_TRUE(p.finished);
  EXPECT_EQ(p.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(p.status.error_message().find("3 request(s)"), std::string::npos)
      << p.status.error_message();
  stream->OnDone();
}

// A client that never half-closes (qlayer::Client keeps its streams open):
// once drained, the stream finishes when it owes nothing and has read no
// request since the time given -- never while an answer is owed or being
// written, and never when not draining.
TEST(PipelinedReactor, DrainedStreamFinishesWhenIdleOnlyIfNothingIsOwed) {
  StreamRegistry registry;
  auto* stream = new TestStream(&registry, 4, [](TestStream& s, auto) { s.BeginPending(); });
  stream->FinishIfIdle(absl::InfiniteFuture());
  EXPECT_FALSE(stream->progress().finished) << "finished although not draining";
  stream->OnReadDone(true);  // request 0, handed to a worker
  registry.DrainAll();
  registry.FinishIdle(absl::InfiniteFuture());
  EXPECT_FALSE(stream->progress().finished) << "finished with an answer owed";
  stream->CompletePending(AnswerFor(0));
  registry.FinishIdle(absl::InfiniteFuture());
  EXPECT_FALSE(stream->progress().finished) << "finished with the answer being written";
  stream->OnWriteDone(true);
  registry.FinishIdle(absl::Now() - absl::Hours(1));
  EXPECT_FALSE(stream->progress().finished) << "finished although it read a request since";
  registry.FinishIdle(absl::InfiniteFuture());
  const Reactor::Progress p = stream->progress();
  ASSERT_TRUE(p.finished);
  EXPECT_EQ(p.answers_written, 1);
  EXPECT_EQ(p.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_NE(p.status.error_message().find("every request read on this stream was answered"),
            std::string::npos)
      << p.status.error_message();
  stream->OnReadDone(false);  // gRPC ends the read left outstanding
  stream->OnDone();
  EXPECT_EQ(registry.size(), 0u);
}

}  // namespace
}  // namespace qlayer
