"""A Python client for qlayer-server, for frontends written in Python.

    import numpy as np, qlayer
    with qlayer.Client("127.0.0.1:50051") as c:
        print([l.name for l in c.list_layers()])
        y, info = c.forward("model.layers.0.mlp.down_proj", np.random.randn(1, 4096).astype(np.float16))
        print(info.kernel, info.compute_us, info.latency_us)

Like the C++ client it keeps one stream per (method, layer, lane) and
pipelines on it: ``forward_async`` returns a ``concurrent.futures.Future`` at
once, every request carries an id chosen here, and a reader thread matches
answers by id. Requests and answers are encoded by hand around the tensor's
raw bytes (qlayer.wire: one copy each way); ``forward_raw_async`` is the
entry point for callers that bring their own buffers (qlayer.torch_modules).

Failure: Forward and MoEForward are pure, so a call that got no answer is
safe to send again. When a stream ends (server killed or restarted,
draining, network) every call pending on it is sent again, after a jittered
exponential backoff, on a new stream that waits for the channel to
reconnect (gRPC's wait_for_ready), until it is answered, its deadline passes,
or ``retry_timeout`` seconds have gone by since its first failure. An answer
that says the server is draining (SIGTERM: UNAVAILABLE with the
SERVER_DRAINING marker, layer_service.proto) retires its stream: no new
calls go on it, it half-closes once the calls already sent on it are
answered (a drained server ends a stream when its client half-closes, and
waits for that before exiting), and the refused call is re-sent on a new
stream -- re-sending on the old one kept it busy and held the server's drain
to its grace period. Why wait
instead of polling with fail-fast calls: measured with grpcio 1.51, fail-fast
calls made while a server restarts kept the channel's connection attempts
from completing for ~5 s after the new server was listening; a waiting call
connects as soon as it is (0.6 s restarts of the tiny test model). An answer
the server gave (bad shape, unknown layer, queue full) is final and raises
QlayerError with the server's code and message; so does a call whose retries
ran out (the last stream error, and how many times it was sent).
"""

import collections
import concurrent.futures
import heapq
import itertools
import queue
import random
import sys
import threading
import time

import grpc

from . import _proto, security, wire
from .tensors import from_raw, wire_tensor

_CODES = {c.value[0]: c for c in grpc.StatusCode}
# Stream ends and per-request answers worth sending again: the server went
# away or is draining. Anything else is the server's verdict on the request.
_RETRIABLE = frozenset({grpc.StatusCode.UNAVAILABLE})

ForwardInfo = collections.namedtuple(
    "ForwardInfo",
    "request_id kernel queue_us compute_us total_us batch_rows latency_us "
    "encode_us decode_us attempts topk_ids topk_weights",
    defaults=(0, 0, 1, None, None))
ForwardInfo.__doc__ = """What one Forward / MoEForward said and cost (microseconds).
From the server: the kernel(s) that ran, queue_us / compute_us / total_us and the
rows of its batch. Measured here: latency_us from the call to the decoded
answer, encode_us (input -> request bytes) and decode_us (answer -> output
array); latency_us - total_us - encode_us - decode_us is the transport (gRPC,
network, thread hand-offs). attempts: how many times the request was sent (> 1
after a reconnect). topk_ids / topk_weights: MoE routing, when asked for."""


class QlayerError(Exception):
    """A failed call: `code` is a grpc.StatusCode, `details` the server's message."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _settle(future, result=None, error=None):
    """Completes `future` unless a racing thread (answer vs. deadline) did."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class _Call:
    """One request until it is answered: kept whole so it can be sent again."""

    __slots__ = ("key", "request_id", "payload", "decode", "future", "start", "encode_us",
                 "deadline", "timeout", "retry_until", "budget_armed", "attempts", "stream",
                 "last_error")

    def __init__(self, key, request_id, payload, decode, start, encode_us, timeout):
        self.key, self.request_id, self.payload, self.decode = key, request_id, payload, decode
        self.future = concurrent.futures.Future()
        self.start, self.encode_us, self.timeout = start, encode_us, timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.retry_until = None
        self.budget_armed = False
        self.attempts = 0
        self.stream = None
        self.last_error = None


class _Timers:
    """One thread running callbacks at given times (deadlines, retries):
    a thread per call (threading.Timer) would cost more than a decode-sized Forward."""

    def __init__(self):
        self._heap = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="qlayer-timers")
        self._thread.start()

    def schedule(self, when, fn, call):
        with self._cv:
            if self._closed:
                return False
            entry = (when, next(self._seq), fn, call)
            heapq.heappush(self._heap, entry)
            if len(self._heap) > 4096:
                self._compact()
            if self._heap[0] is entry:
                self._cv.notify()
            return True

    def _compact(self):
        # Deadline entries of answered calls linger until their time; drop them
        # when they are most of the heap.
        live = [e for e in self._heap if not e[3].future.done()]
        if len(live) * 2 < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def close(self):
        """Stops the thread; returns the calls of entries that never ran."""
        with self._cv:
            self._closed = True
            left, self._heap = self._heap, []
            self._cv.notify()
        self._thread.join(timeout=5)
        return [e[3] for e in left]

    def _run(self):
        with self._cv:
            while not self._closed:
                if not self._heap:
                    self._cv.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                _, _, fn, _ = heapq.heappop(self._heap)
                self._cv.release()
                try:
                    fn()
                except Exception as e:  # a callback must not end the thread
                    print(f"qlayer: timer callback failed: {e!r}", file=sys.stderr)
                finally:
                    self._cv.acquire()


class _Stream:
    """One open Forward or MoEForward stream to one layer and the calls pending on it."""

    def __init__(self, client, method, decode_answer, name, wait_for_ready):
        self._client = client
        self._decode_answer = decode_answer
        self._requests = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = {}  # request_id -> _Call
        self.ended = False
        self._retired = False  # the server said it is draining: half-close when idle
        self._closing = False  # close() cancels: CANCELLED is ours, not the server's
        self._half_closed = False
        # A stream opened to re-send calls waits for the channel to connect;
        # until its first answer, calls on it are bounded by the retry budget.
        self.waiting = wait_for_ready
        self._call = method(iter(self._requests.get, None), wait_for_ready=wait_for_ready)
        self._reader = threading.Thread(target=self._read, daemon=True, name=name)
        self._reader.start()

    def send(self, call):
        payload = call.payload
        if payload is None:
            return True  # settled meanwhile (deadline); None would end the request iterator
        with self._lock:
            if self.ended:
                return False
            self._pending[call.request_id] = call
            call.stream = self
            # Under the lock: a half-close (None) must not overtake it.
            self._requests.put(payload)
        return True

    def forget(self, request_id):
        with self._lock:
            self._pending.pop(request_id, None)
            self._maybe_half_close_locked()

    def _maybe_half_close_locked(self):
        if self._retired and not self._half_closed and not self._pending:
            self._half_closed = True
            self._requests.put(None)  # ends the request iterator: gRPC half-closes

    def close(self):
        self._closing = True
        self._requests.put(None)  # half-close: the server finishes the stream
        self._call.cancel()
        self._reader.join(timeout=5)
        if not self._reader.is_alive():
            # Let grpcio's call object go now, while its threads run: left to
            # interpreter exit, its __del__ can wait forever on a lock held by
            # grpcio's request thread, which exit has frozen (a hang seen in 2
            # of 130 runs of a script that closed its Client and returned).
            self._call = None

    def _read(self):
        error = None
        try:
            for raw in self._call:
                received = time.perf_counter()
                self.waiting = False
                try:
                    answer = self._decode_answer(raw)
                except (ValueError, IndexError) as e:
                    # Without an id nothing can be matched: end the stream, retry its calls.
                    error = QlayerError(grpc.StatusCode.INTERNAL, f"malformed answer: {e}")
                    self._call.cancel()
                    break
                with self._lock:
                    if answer.draining and not self.ended:
                        # Before the answer is handled: its re-send must open a new stream.
                        self.ended = self._retired = True
                    call = self._pending.pop(answer.request_id, None)
                    self._maybe_half_close_locked()
                if call is not None:  # else: timed out here already
                    self._client._answered(call, answer, received)
            if error is None:
                error = QlayerError(grpc.StatusCode.UNAVAILABLE,
                                    "stream closed by the server with calls unanswered")
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.CANCELLED and not self._closing:
                # Not cancelled here: a server exiting right after its drain
                # resets streams opened at its very end; their calls were not
                # computed, so send them again like any unanswered call.
                code = grpc.StatusCode.UNAVAILABLE
            error = QlayerError(code, f"stream ended: {e.details()}")
        with self._lock:
            self.ended = True
            orphans, self._pending = list(self._pending.values()), {}
        self._requests.put(None)  # ends gRPC's request-iterator thread
        for call in orphans:
            self._client._failed(call, error)


class Client:
    """A connection to one qlayer-server. Thread-safe.

    retry_timeout: seconds a call that got no answer keeps being sent again
    after its first failure (0: never; a call's own timeout bounds it too).
    retry_backoff: (first, most) seconds between sends; doubled each time,
    with jitter, so that many clients of a restarted server do not return at
    once.
    tls, tls_ca, tls_cert, tls_key, tls_server_name, auth_token,
    auth_token_file: TLS, mutual TLS and the bearer token (qlayer.security);
    default plaintext.
    """

    def __init__(self, address, *, max_message_bytes=256 << 20, timeout=30.0,
                 retry_timeout=30.0, retry_backoff=(0.05, 1.0), tls=False, tls_ca=None,
                 tls_cert=None, tls_key=None, tls_server_name=None, auth_token=None,
                 auth_token_file=None):
        self.address = address
        self.timeout = timeout  # for list_layers / describe_layer
        self.retry_timeout = retry_timeout
        self.retry_backoff = retry_backoff
        credentials, extra_options = security.channel_credentials(
            tls=tls, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
            tls_server_name=tls_server_name, auth_token=auth_token,
            auth_token_file=auth_token_file)
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC's default backoff keeps a restarted server away for seconds.
            ("grpc.initial_reconnect_backoff_ms", 100),
            # Not grpc.min_reconnect_backoff_ms: gRPC takes it as the least
            # time a connection attempt may take (default 20 s); 100 ms failed
            # handshakes on a loaded machine.
            ("grpc.max_reconnect_backoff_ms", 1000),
        ] + extra_options
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=options)
        unary = self._channel.unary_unary
        self._list = unary(_proto.SERVICE + "ListLayers",
                           request_serializer=_proto.ListLayersRequest.SerializeToString,
                           response_deserializer=_proto.ListLayersResponse.FromString)
        self._describe = unary(_proto.SERVICE + "DescribeLayer",
                               request_serializer=_proto.DescribeLayerRequest.SerializeToString,
                               response_deserializer=_proto.LayerInfo.FromString)
        # Requests are bytes already (qlayer.wire), answers are decoded by the reader.
        self._methods = {
            "Forward": (self._channel.stream_stream(_proto.SERVICE + "Forward"),
                        wire.decode_forward_response),
            "MoEForward": (self._channel.stream_stream(_proto.SERVICE + "MoEForward"),
                           wire.decode_moe_response),
        }
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._streams = {}
        self._closed = False
        self._timers = _Timers()
        self.streams_opened = 0  # a reconnect opens new ones: for tests and logs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Ends every stream; calls still pending fail with CANCELLED."""
        with self._lock:
            self._closed = True
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.close()
        for call in self._timers.close():
            _settle(call.future, error=QlayerError(grpc.StatusCode.CANCELLED, "client closed"))
        self._channel.close()

    def wait_for_ready(self, timeout=10.0):
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def list_layers(self, glob=""):
        """LayerSummary messages (name, kind, in_features, out_features, format, kernels...)."""
        try:
            return list(self._list(_proto.ListLayersRequest(glob=glob), timeout=self.timeout).layers)
        except grpc.RpcError as e:
            raise QlayerError(e.code(), e.details()) from None

    def describe_layer(self, name):
        """The LayerInfo message: shapes, format, chosen kernels and every rejection."""
        try:
            return self._describe(_proto.DescribeLayerRequest(name=name), timeout=self.timeout)
        except grpc.RpcError as e:
            raise QlayerError(e.code(), e.details()) from None

    # numpy in, numpy out.

    def forward_async(self, layer, x, *, dtype=None, timeout=None, lane=0):
        """Sends x ([M, K], or [K] for one row); the Future gives (y [M, N], ForwardInfo)
        or raises QlayerError.
        dtype: "f16" | "bf16" | "f32" on the wire (default: from x; float64 -> f32);
        bf16 answers come back widened to float32.
        timeout (seconds): the call fails DEADLINE_EXCEEDED without an answer by then
        (retries included); the server drops the request if it is still queued then.
        lane: calls on different lanes of one layer use different streams."""
        start = time.perf_counter()
        return self.forward_raw_async(layer, wire_tensor(x, dtype), from_raw, timeout=timeout,
                                      lane=lane, start=start)

    def forward(self, layer, x, *, dtype=None, timeout=None, lane=0):
        """Blocking forward: returns (y, ForwardInfo)."""
        return self.forward_async(layer, x, dtype=dtype, timeout=timeout, lane=lane).result()

    def moe_forward_async(self, layer, hidden_states, *, router_logits=None, topk_ids=None,
                          topk_weights=None, return_routing=False, dtype=None, timeout=None,
                          lane=0):
        """MoE block `layer` on hidden_states [T, H]; the Future gives (y [T, H], ForwardInfo).
        Routing: router_logits [T, E] (f32), or topk_ids [T, k] (int32/int64) with
        topk_weights [T, k] (f32); neither = the server runs the block's own router.
        return_routing: info.topk_ids / info.topk_weights hold the server's choice."""
        start = time.perf_counter()
        h = wire_tensor(hidden_states, dtype)
        extra = {}
        if router_logits is not None:
            extra["router_logits"] = wire_tensor(router_logits, "f32")
        if topk_ids is not None:
            extra["topk_ids"] = wire_tensor(topk_ids)
        if topk_weights is not None:
            extra["topk_weights"] = wire_tensor(topk_weights, "f32")
        return self.moe_forward_raw_async(layer, h, from_raw, return_routing=return_routing,
                                          timeout=timeout, lane=lane, start=start, **extra)

    def moe_forward(self, layer, hidden_states, **kwargs):
        """Blocking moe_forward_async: returns (y, ForwardInfo)."""
        return self.moe_forward_async(layer, hidden_states, **kwargs).result()

    # Raw buffers in, caller's decoder out.

    def forward_raw_async(self, layer, x, decode, *, timeout=None, lane=0, start=None):
        """x: a qlayer.wire.WireTensor (a buffer of raw little-endian elements).
        decode(RawTensor) -> output object, run on the stream's reader thread
        (copy out of it: its data is a view into the received message)."""
        start = time.perf_counter() if start is None else start
        request_id = next(self._ids)
        timeout_us = 0 if timeout is None else max(1, int(timeout * 1e6))
        payload = wire.encode_forward_request(request_id, layer, x, timeout_us)
        return self._start(("Forward", layer, lane), request_id, payload, decode, start, timeout)

    def moe_forward_raw_async(self, layer, hidden, decode, *, router_logits=None, topk_ids=None,
                              topk_weights=None, return_routing=False, timeout=None, lane=0,
                              start=None):
        """As forward_raw_async for MoEForward; tensors are WireTensors."""
        start = time.perf_counter() if start is None else start
        request_id = next(self._ids)
        timeout_us = 0 if timeout is None else max(1, int(timeout * 1e6))
        payload = wire.encode_moe_request(
            request_id, layer, hidden, router_logits=router_logits, topk_ids=topk_ids,
            topk_weights=topk_weights, return_routing=return_routing, timeout_us=timeout_us)
        return self._start(("MoEForward", layer, lane), request_id, payload, decode, start,
                           timeout)

    # The call's life: send, answer or failure, retry, deadline.

    def _start(self, key, request_id, payload, decode, start, timeout):
        call = _Call(key, request_id, payload, decode, start,
                     int((time.perf_counter() - start) * 1e6), timeout)
        if call.deadline is not None:
            self._timers.schedule(call.deadline, lambda: self._expire(call), call)
        self._send(call)
        return call.future

    def _send(self, call):
        if call.future.done():
            return
        resend = call.attempts > 0
        call.attempts += 1
        for _ in range(3):  # a stream that just ended refuses; the next try opens a new one
            stream = self._stream(call.key, wait_for_ready=resend)
            if stream is None:
                self._finish(call, error=QlayerError(grpc.StatusCode.CANCELLED, "client closed"))
                return
            if stream.waiting and not call.budget_armed:
                # No fail-fast error will come while the channel reconnects:
                # the retry budget ends the wait.
                call.budget_armed = True
                if call.retry_until is None:
                    call.retry_until = time.monotonic() + self.retry_timeout
                if call.deadline is None or call.retry_until < call.deadline:
                    self._timers.schedule(call.retry_until, lambda: self._give_up(call), call)
            if stream.send(call):
                return
        self._failed(call, QlayerError(grpc.StatusCode.UNAVAILABLE,
                                       f"cannot open a stream to {self.address}"))

    def _stream(self, key, wait_for_ready=False):
        with self._lock:
            if self._closed:
                return None
            s = self._streams.get(key)
            if s is None or s.ended:
                method, decode_answer = self._methods[key[0]]
                s = _Stream(self, method, decode_answer, f"qlayer-{key[0]}-{key[1]}",
                            wait_for_ready)
                self._streams[key] = s
                self.streams_opened += 1
            return s

    def _answered(self, call, answer, received):
        if answer.error_code:
            code = _CODES.get(answer.error_code, grpc.StatusCode.UNKNOWN)
            error = QlayerError(code, answer.error_message)
            if code in _RETRIABLE:
                self._failed(call, error)
            else:
                self._finish(call, error=error)
            return
        try:
            y = call.decode(answer.output)
        except ValueError as e:
            self._finish(call, error=QlayerError(grpc.StatusCode.INTERNAL, str(e)))
            return
        done = time.perf_counter()
        ids = weights = None
        if answer.topk_ids is not None:
            ids, weights = from_raw(answer.topk_ids), from_raw(answer.topk_weights)
        info = ForwardInfo(answer.request_id, answer.kernel, answer.queue_us, answer.compute_us,
                           answer.total_us, answer.batch_rows, int((done - call.start) * 1e6),
                           call.encode_us, int((done - received) * 1e6), call.attempts, ids,
                           weights)
        self._finish(call, result=(y, info))

    def _failed(self, call, error):
        """No answer (stream ended, or the server is draining): send again or give up."""
        if call.future.done():
            return
        call.last_error = error
        now = time.monotonic()
        if call.retry_until is None:
            call.retry_until = now + self.retry_timeout
        limit = call.retry_until if call.deadline is None else min(call.retry_until,
                                                                   call.deadline)
        if error.code not in _RETRIABLE or self.retry_timeout <= 0 or now >= limit:
            if call.attempts > 1:
                error = QlayerError(error.code, f"{error.details} (sent {call.attempts} times)")
            self._finish(call, error=error)
            return
        first, most = self.retry_backoff
        delay = min(most, first * 2 ** min(call.attempts - 1, 30)) * random.uniform(0.5, 1.0)
        if not self._timers.schedule(now + min(delay, limit - now), lambda: self._send(call),
                                     call):
            self._finish(call, error=QlayerError(grpc.StatusCode.CANCELLED, "client closed"))

    def _give_up(self, call):
        if call.future.done():
            return
        if call.stream is not None:
            call.stream.forget(call.request_id)
        last = f"; last error: {call.last_error.details}" if call.last_error else ""
        self._finish(call, error=QlayerError(
            grpc.StatusCode.UNAVAILABLE,
            f"{call.key[0]} request {call.request_id} to {call.key[1]}: no answer from "
            f"{self.address} within retry_timeout={self.retry_timeout} s (sent {call.attempts} "
            f"times){last}"))

    def _expire(self, call):
        if call.future.done():
            return
        if call.stream is not None:
            call.stream.forget(call.request_id)
        self._finish(call, error=QlayerError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{call.key[0]} request {call.request_id} to {call.key[1]}: no answer within "
            f"{call.timeout} s (sent {call.attempts} times)"))

    @staticmethod
    def _finish(call, result=None, error=None):
        call.payload = None  # the request's bytes are not needed once it is settled
        _settle(call.future, result, error)
