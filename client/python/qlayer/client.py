"""A small Python client for qlayer-server, for frontends written in Python.

    import numpy as np, qlayer
    with qlayer.Client("127.0.0.1:50051") as c:
        print([l.name for l in c.list_layers()])
        y, info = c.forward("model.layers.0.mlp.down_proj", np.random.randn(1, 4096).astype(np.float16))
        print(info.kernel, info.compute_us, info.latency_us)

Like the C++ client it keeps one Forward stream per (layer, lane) and pipelines on
it: ``forward_async`` returns a ``concurrent.futures.Future`` at once, every
request carries an id chosen here, and a reader thread matches answers by id.
When a stream ends (server restarted, draining), every call pending on it
fails with the stream's status and the next call opens a new stream.
"""

import collections
import concurrent.futures
import itertools
import queue
import threading
import time

import grpc

from . import _proto
from .tensors import from_wire, to_wire

_CODES = {c.value[0]: c for c in grpc.StatusCode}

ForwardInfo = collections.namedtuple(
    "ForwardInfo",
    "request_id kernel queue_us compute_us total_us batch_rows latency_us")
ForwardInfo.__doc__ = """What the server said about one Forward: the kernel that
ran, its timings (microseconds) and the batch it ran in; latency_us is measured
here, from the call to the answer."""


def _settle(future, result=None, error=None):
    """Completes `future` unless a racing thread (answer vs. deadline) did."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class QlayerError(Exception):
    """A failed call: `code` is a grpc.StatusCode, `details` the server's message."""

    def __init__(self, code, details):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class _Stream:
    """One open Forward stream to one layer and the calls pending on it."""

    def __init__(self, method):
        self._requests = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = {}  # request_id -> (future, start time)
        self.ended = False
        self._call = method(iter(self._requests.get, None))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def send(self, request, future):
        with self._lock:
            if self.ended:
                return False
            self._pending[request.request_id] = (future, time.perf_counter())
        self._requests.put(request)
        return True

    def forget(self, request_id):
        with self._lock:
            self._pending.pop(request_id, None)

    def close(self):
        self._requests.put(None)  # half-close: the server finishes the stream
        self._call.cancel()
        self._reader.join(timeout=5)

    def _read(self):
        try:
            for response in self._call:
                now = time.perf_counter()
                with self._lock:
                    entry = self._pending.pop(response.request_id, None)
                if entry is None:
                    continue  # timed out here already
                future, start = entry
                self._resolve(future, response, int((now - start) * 1e6))
            error = QlayerError(grpc.StatusCode.UNAVAILABLE,
                                "Forward stream closed by the server")
        except grpc.RpcError as e:
            error = QlayerError(e.code(), f"Forward stream ended: {e.details()}")
        with self._lock:
            self.ended = True
            orphans, self._pending = self._pending, {}
        self._requests.put(None)  # ends gRPC's request-iterator thread
        for future, _ in orphans.values():
            _settle(future, error=error)

    @staticmethod
    def _resolve(future, response, latency_us):
        if response.HasField("error") and response.error.code != 0:
            code = _CODES.get(response.error.code, grpc.StatusCode.UNKNOWN)
            _settle(future, error=QlayerError(code, response.error.message))
            return
        try:
            y = from_wire(response.output)
        except ValueError as e:
            _settle(future, error=QlayerError(grpc.StatusCode.INTERNAL, str(e)))
            return
        t = response.timing
        _settle(future, (y, ForwardInfo(response.request_id, response.kernel, t.queue_us,
                                        t.compute_us, t.total_us, response.batch_rows,
                                        latency_us)))


class Client:
    """A connection to one qlayer-server. Thread-safe."""

    def __init__(self, address, *, max_message_bytes=256 << 20, timeout=30.0):
        self.address = address
        self.timeout = timeout  # for list_layers / describe_layer
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC's default backoff keeps a restarted server away for seconds.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        unary = self._channel.unary_unary
        self._list = unary(_proto.SERVICE + "ListLayers",
                           request_serializer=_proto.ListLayersRequest.SerializeToString,
                           response_deserializer=_proto.ListLayersResponse.FromString)
        self._describe = unary(_proto.SERVICE + "DescribeLayer",
                               request_serializer=_proto.DescribeLayerRequest.SerializeToString,
                               response_deserializer=_proto.LayerInfo.FromString)
        self._forward = self._channel.stream_stream(
            _proto.SERVICE + "Forward",
            request_serializer=_proto.ForwardRequest.SerializeToString,
            response_deserializer=_proto.ForwardResponse.FromString)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._streams = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with self._lock:
            streams, self._streams = list(self._streams.values()), {}
        for s in streams:
            s.close()
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

    def forward_async(self, layer, x, *, dtype=None, timeout=None, lane=0):
        """Sends x ([M, K], or [K] for one row); the Future gives (y [M, N], ForwardInfo)
        or raises QlayerError.
        dtype: "f16" | "bf16" | "f32" on the wire (default: from x; float64 -> f32).
        timeout (seconds) also tells the server to drop the request if still queued.
        lane: calls on different lanes of one layer use different streams."""
        request = _proto.ForwardRequest(request_id=next(self._ids), layer=layer,
                                        output_encoding=_proto.Encoding["ENCODING_DATA"])
        request.input.CopyFrom(to_wire(x, dtype))
        if timeout is not None:
            request.timeout_us = max(1, int(timeout * 1e6))
        future = concurrent.futures.Future()
        for _ in range(3):  # a stream that just ended refuses; the next try opens a new one
            stream = self._stream((layer, lane))
            if stream.send(request, future):
                if timeout is not None:
                    self._expire_later(stream, request.request_id, future, timeout)
                return future
        _settle(future, error=QlayerError(grpc.StatusCode.UNAVAILABLE,
                                          f"cannot open a Forward stream to {self.address}"))
        return future

    def forward(self, layer, x, *, dtype=None, timeout=None, lane=0):
        """Blocking forward: returns (y, ForwardInfo)."""
        return self.forward_async(layer, x, dtype=dtype, timeout=timeout, lane=lane).result()

    def _stream(self, key):
        with self._lock:
            s = self._streams.get(key)
            if s is None or s.ended:
                s = _Stream(self._forward)
                self._streams[key] = s
            return s

    @staticmethod
    def _expire_later(stream, request_id, future, timeout):
        def expire():
            if not future.done():
                stream.forget(request_id)
                _settle(future, error=QlayerError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"Forward request {request_id}: no answer within {timeout} s"))
        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        future.add_done_callback(lambda _: timer.cancel())
