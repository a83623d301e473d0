"""qlayer.Client's failure behaviour and qlayer.torch_modules' shapes and dtypes,
against a fake LayerService written here with grpcio's server and protobuf's
own classes (so neither side shares the client's hand codec).

The fake serves one linear layer y = x W (W random, computed in float64 and
rounded to the request's dtype) and one MoE block y = 2 x (+ the router
logits' row sums when given, so that the test sees they travelled), and can
be told to drop streams, answer UNAVAILABLE, hold answers back, or go away
and come back on the same port. Seeded by QLAYER_TEST_SEED (else the clock),
printed.
"""

import concurrent.futures
import os
import sys
import threading
import time
import unittest
import zlib

import grpc
import numpy as np

import qlayer
from qlayer import _proto

try:
    import torch
    import qlayer.torch_modules as qt
except ImportError:  # the client tests still run without torch
    torch = None

SEED = int(os.environ.get("QLAYER_TEST_SEED") or (time.time_ns() % 1000000007))
LINEAR, MOE = "fake.layers.0.proj", "fake.layers.0.moe"
K, N, H, E = 8, 5, 6, 4
_NP = {_proto.DType["DTYPE_F16"]: np.float16, _proto.DType["DTYPE_F32"]: np.float32}
BF16 = _proto.DType["DTYPE_BF16"]


def tensor_to_np(t):
    if t.dtype == BF16:
        return qlayer.bf16_bits_to_float(np.frombuffer(t.data, "<u2")).reshape(tuple(t.shape))
    return np.frombuffer(t.data, _NP[t.dtype]).reshape(tuple(t.shape)).astype(np.float64)


def np_to_tensor(y, dtype, out):
    out.dtype = dtype
    out.shape.extend(y.shape)
    out.data = (qlayer.float_to_bf16_bits(y) if dtype == BF16 else y.astype(_NP[dtype])).tobytes()


class FakeServer:
    """The service, and switches the tests flip."""

    def __init__(self, w):
        self.w = w
        self.lock = threading.Lock()
        self.drop_next = 0         # streams to end (UNAVAILABLE) on their next request, unanswered
        self.unavailable_next = 0  # requests to answer with a per-request UNAVAILABLE
        self.hold = threading.Event()
        self.hold.set()            # cleared: answers wait
        self.requests = 0
        self.delay = 0.0           # seconds each answer takes
        self.server = None
        self.port = 0

    def start(self, port=0):
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=32))
        handlers = {
            "Forward": grpc.stream_stream_rpc_method_handler(
                self.forward, request_deserializer=_proto.ForwardRequest.FromString,
                response_serializer=_proto.ForwardResponse.SerializeToString),
            "MoEForward": grpc.stream_stream_rpc_method_handler(
                self.moe_forward, request_deserializer=_proto.MoEForwardRequest.FromString,
                response_serializer=_proto.MoEForwardResponse.SerializeToString),
            "ListLayers": grpc.unary_unary_rpc_method_handler(
                self.list_layers, request_deserializer=_proto.ListLayersRequest.FromString,
                response_serializer=_proto.ListLayersResponse.SerializeToString),
            "DescribeLayer": grpc.unary_unary_rpc_method_handler(
                self.describe, request_deserializer=_proto.DescribeLayerRequest.FromString,
                response_serializer=_proto.LayerInfo.SerializeToString),
        }
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("qlayer.v1.LayerService", handlers)])
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()
        return self.port

    def stop(self):
        self.server.stop(grace=None).wait()

    def list_layers(self, request, context):
        r = _proto.ListLayersResponse()
        r.layers.add(name=LINEAR, kind="linear", in_features=K, out_features=N)
        r.layers.add(name=MOE, kind="moe", in_features=H, out_features=H)
        return r

    def describe(self, request, context):
        for s in self.list_layers(None, context).layers:
            if s.name == request.name:
                return _proto.LayerInfo(name=s.name, kind=s.kind, in_features=s.in_features,
                                        out_features=s.out_features)
        context.abort(grpc.StatusCode.NOT_FOUND, f"layer '{request.name}' not found")

    def _gate(self, context):
        """Counts a request; returns an answer-level error to send, or aborts the stream."""
        with self.lock:
            self.requests += 1
            drop = self.drop_next > 0
            self.drop_next -= drop
            unavailable = not drop and self.unavailable_next > 0
            self.unavailable_next -= unavailable
        if drop:
            context.abort(grpc.StatusCode.UNAVAILABLE, "fake server going away")
        self.hold.wait()
        time.sleep(self.delay)
        return (14, "fake server is shutting down") if unavailable else None

    def forward(self, requests, context):
        for req in requests:
            out = _proto.ForwardResponse(request_id=req.request_id, kernel="fake_numpy",
                                         batch_rows=max(1, req.input.shape[0]))
            error = self._gate(context)
            x = tensor_to_np(req.input)
            if error:
                out.error.code, out.error.message = error
            elif req.layer != LINEAR:
                out.error.code, out.error.message = 5, f"layer '{req.layer}' not found"
            elif x.shape[-1] != K:
                out.error.code = 3
                out.error.message = f"layer {LINEAR}: K={K} but input has {x.shape[-1]} columns"
            else:
                np_to_tensor(x.reshape(-1, K) @ self.w, req.input.dtype, out.output)
                out.timing.queue_us, out.timing.compute_us, out.timing.total_us = 1, 2, 4
            yield out

    def moe_forward(self, requests, context):
        for req in requests:
            out = _proto.MoEForwardResponse(request_id=req.request_id, kernels=["fake_moe"])
            error = self._gate(context)
            if error:
                out.error.code, out.error.message = error
                yield out
                continue
            y = 2 * tensor_to_np(req.hidden_states)
            if req.HasField("router_logits"):
                y += tensor_to_np(req.router_logits).sum(axis=1, keepdims=True)
            np_to_tensor(y, req.hidden_states.dtype, out.output)
            yield out


class _FakeServerCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print(f"QLAYER_TEST_SEED={SEED}", file=sys.stderr)
        cls.w = np.random.default_rng(SEED).uniform(-1, 1, size=(K, N))
        cls.fake = FakeServer(cls.w)
        cls.port = cls.fake.start()

    @classmethod
    def tearDownClass(cls):
        cls.fake.stop()

    def setUp(self):
        self.rng = np.random.default_rng(SEED + zlib.crc32(self._testMethodName.encode()))
        self.fake.drop_next = self.fake.unavailable_next = 0
        self.fake.delay = 0.0
        self.fake.hold.set()
        self.client = qlayer.Client(f"127.0.0.1:{self.port}", retry_timeout=10,
                                    retry_backoff=(0.01, 0.1))
        self.client.wait_for_ready(10)

    def tearDown(self):
        self.fake.hold.set()
        self.client.close()

    def x(self, rows=3, dtype=np.float32):
        return self.rng.uniform(-1, 1, size=(rows, K)).astype(dtype)


class ClientFailureTest(_FakeServerCase):
    def test_dropped_stream_is_retried_on_a_new_one(self):
        x = self.x()
        self.client.forward(LINEAR, x)  # the stream is open
        opened = self.client.streams_opened
        self.fake.drop_next = 1
        y, info = self.client.forward(LINEAR, x, timeout=10)
        np.testing.assert_allclose(y, x @ self.w, rtol=1e-5, atol=1e-5)
        self.assertEqual(info.attempts, 2)
        self.assertGreater(self.client.streams_opened, opened)

    def test_every_pending_call_of_a_dropped_stream_is_answered(self):
        self.client.forward(LINEAR, self.x())
        self.fake.hold.clear()  # answers wait, so that all of them are in flight
        xs = [self.x(rows=1 + i % 3) for i in range(20)]
        futures = [self.client.forward_async(LINEAR, x, timeout=20) for x in xs]
        time.sleep(0.2)
        self.fake.drop_next = 1
        self.fake.hold.set()
        for x, f in zip(xs, futures):
            y, _ = f.result(timeout=20)
            np.testing.assert_allclose(y, x @ self.w, rtol=1e-5, atol=1e-5)
        self.assertTrue(any(f.result()[1].attempts > 1 for f in futures))

    def test_draining_answer_is_retried(self):
        self.fake.unavailable_next = 2
        x = self.x()
        y, info = self.client.forward(LINEAR, x, timeout=10)
        np.testing.assert_allclose(y, x @ self.w, rtol=1e-5, atol=1e-5)
        self.assertEqual(info.attempts, 3)

    def test_server_verdicts_are_not_retried(self):
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward(LINEAR, self.rng.uniform(size=(2, K + 1)).astype(np.float32))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn(f"K={K} but input has {K + 1} columns", e.exception.details)
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward("no.such.layer", self.x())
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(self.fake.drop_next, 0)

    def test_retries_end_at_the_retry_budget(self):
        client = qlayer.Client(f"127.0.0.1:{self.port}", retry_timeout=0.5,
                               retry_backoff=(0.01, 0.05))
        try:
            self.fake.drop_next = 10 ** 6
            t0 = time.monotonic()
            with self.assertRaises(qlayer.QlayerError) as e:
                client.forward(LINEAR, self.x())
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertRegex(e.exception.details, r"sent \d+ times")
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            self.fake.drop_next = 0
            client.close()

    def test_retries_end_at_the_retry_budget_when_nothing_listens(self):
        import socket
        with socket.socket() as sock:  # a port that was free a moment ago
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        client = qlayer.Client(f"127.0.0.1:{port}", retry_timeout=0.5, retry_backoff=(0.01, 0.05))
        try:
            t0 = time.monotonic()
            with self.assertRaises(qlayer.QlayerError) as e:
                client.forward(LINEAR, self.x())
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertIn("retry_timeout=0.5", e.exception.details)
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            client.close()

    def test_no_retry_when_disabled(self):
        client = qlayer.Client(f"127.0.0.1:{self.port}", retry_timeout=0)
        try:
            self.fake.drop_next = 1
            with self.assertRaises(qlayer.QlayerError) as e:
                client.forward(LINEAR, self.x())
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)
        finally:
            client.close()

    def test_deadline_without_answer(self):
        self.fake.hold.clear()
        t0 = time.monotonic()
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward(LINEAR, self.x(), timeout=0.2)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 3)
        self.fake.hold.set()
        y, _ = self.client.forward(LINEAR, self.x(), timeout=10)  # the stream lives on
        self.assertEqual(y.shape, (3, N))

    def test_server_restart_on_the_same_port(self):
        x = self.x()
        self.client.forward(LINEAR, x)
        self.fake.stop()
        restart = threading.Timer(0.4, lambda: self.fake.start(self.port))
        restart.start()
        try:
            y, info = self.client.forward(LINEAR, x, timeout=20)
        finally:
            restart.join()
        np.testing.assert_allclose(y, x @ self.w, rtol=1e-5, atol=1e-5)
        self.assertGreater(info.attempts, 1)

    def test_close_fails_pending_calls(self):
        client = qlayer.Client(f"127.0.0.1:{self.port}")
        self.fake.hold.clear()
        f = client.forward_async(LINEAR, self.x())
        time.sleep(0.1)
        client.close()
        with self.assertRaises(qlayer.QlayerError) as e:
            f.result(timeout=5)
        self.assertEqual(e.exception.code, grpc.StatusCode.CANCELLED)


@unittest.skipIf(torch is None, "torch is not installed")
class TorchModulesTest(_FakeServerCase):
    def reference(self, x):
        return torch.from_numpy(x.double().numpy().reshape(-1, K) @ self.w)

    def test_remote_linear_any_leading_dims_and_dtypes(self):
        m = qt.RemoteLinear(self.client, LINEAR)
        self.assertEqual((m.in_features, m.out_features), (K, N))
        for dtype, tol in ((torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2),
                           (torch.float64, 1e-6)):
            for lead in ((), (4,), (2, 3), (1, 1, 2)):
                x = torch.from_numpy(self.rng.uniform(-1, 1, size=lead + (K,))).to(dtype)
                y = m(x)
                self.assertEqual(y.dtype, dtype)
                self.assertEqual(tuple(y.shape), lead + (N,))
                ref = self.reference(x).reshape(lead + (N,))
                err = (y.double() - ref).norm() / ref.norm()
                self.assertLess(float(err), tol, f"{dtype} {lead}")
        self.assertEqual(m.stats.calls, 16)
        self.assertGreater(m.stats.sums["latency_us"], 0)

    def test_non_contiguous_and_empty_inputs(self):
        m = qt.RemoteLinear(self.client, LINEAR)
        x = torch.from_numpy(self.rng.uniform(-1, 1, size=(K, 6))).float().t()  # [6, K] strided
        np.testing.assert_allclose(m(x).numpy(), self.reference(x).numpy(), rtol=1e-5, atol=1e-5)
        self.assertEqual(tuple(m(torch.zeros(0, K)).shape), (0, N))
        with self.assertRaises(ValueError):
            m(torch.zeros(2, K + 1))
        with self.assertRaises(TypeError):
            m(torch.zeros(2, K, dtype=torch.int32))

    def test_wire_dtype_and_timeout(self):
        m = qt.RemoteLinear(self.client, LINEAR, wire_dtype="f16")
        x = torch.from_numpy(self.rng.uniform(-1, 1, size=(2, K))).float()
        y = m(x)
        self.assertEqual(y.dtype, torch.float32)
        ref = self.reference(x.half().float())
        self.assertLess(float((y.double() - ref).norm() / ref.norm()), 2e-3)
        self.fake.hold.clear()
        with self.assertRaises(qlayer.QlayerError) as e:
            m(x, timeout=0.1)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_parallel_forward_overlaps(self):
        mods = [qt.RemoteLinear(self.client, LINEAR, lane=i) for i in range(3)]
        local = torch.nn.Linear(K, 2)
        x = torch.from_numpy(self.rng.uniform(-1, 1, size=(3, K))).float()
        qt.parallel_forward(mods, x)  # streams open
        self.fake.delay = 0.3  # per answer; the fake serves its streams concurrently
        t0 = time.monotonic()
        ys = qt.parallel_forward(mods + [local], x)
        overlapped = time.monotonic() - t0
        t0 = time.monotonic()
        for m in mods:
            m(x)
        sequential = time.monotonic() - t0
        self.assertGreaterEqual(sequential, 0.9)
        self.assertLess(overlapped, 0.75, f"sequential took {sequential:.2f} s")
        for y in ys[:3]:
            np.testing.assert_allclose(y.numpy(), self.reference(x).numpy(), rtol=1e-5, atol=1e-5)
        self.assertEqual(tuple(ys[3].shape), (3, 2))

    def test_remote_moe_server_and_local_router(self):
        m = qt.RemoteMoE(self.client, MOE)
        x = torch.from_numpy(self.rng.uniform(-1, 1, size=(2, 3, H))).half()
        y = m(x)
        self.assertEqual((y.dtype, tuple(y.shape)), (torch.float16, (2, 3, H)))
        torch.testing.assert_close(y, 2 * x)
        gate = torch.nn.Linear(H, E, bias=False)
        m = qt.RemoteMoE(self.client, MOE, gate=gate, return_router_logits=True)
        y, logits = m(x.float())
        self.assertEqual(tuple(logits.shape), (6, E))
        ref = 2 * x.float() + logits.sum(dim=1).reshape(2, 3, 1)
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)

    def test_offload_replaces_by_module_path(self):
        class Block(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = torch.nn.Linear(K, N)
                self.other = torch.nn.Linear(K, N)
                self.moe = torch.nn.Sequential(torch.nn.Linear(H, H))

        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = torch.nn.ModuleList([Block()])

        model = torch.nn.Module()
        model.add_module("fake", Model())
        replaced = qt.offload(model, self.client, ["fake.layers.*.proj", "fake.layers.*.moe*"])
        self.assertEqual(sorted(replaced), sorted([LINEAR, MOE]))
        self.assertIsInstance(model.fake.layers[0].proj, qt.RemoteLinear)
        self.assertIsInstance(model.fake.layers[0].moe, qt.RemoteMoE)
        self.assertIsInstance(model.fake.layers[0].other, torch.nn.Linear)
        x = torch.from_numpy(self.rng.uniform(-1, 1, size=(2, K))).float()
        np.testing.assert_allclose(model.fake.layers[0].proj(x).numpy(),
                                   self.reference(x).numpy(), rtol=1e-5, atol=1e-5)
        with self.assertRaises(ValueError):
            qt.offload(torch.nn.Linear(K, N), self.client, ["nothing.*"])
        with self.assertRaises(ValueError):  # strict: a matching Linear the server lacks
            m2 = torch.nn.Module()
            m2.add_module("fake", Model())
            qt.offload(m2, self.client, ["fake.layers.*"], strict=True)
        m3 = torch.nn.Module()
        m3.add_module("fake", Model())
        m3.fake.layers[0].proj = torch.nn.Linear(K, N + 1)
        with self.assertRaisesRegex(ValueError, "server's"):
            qt.offload(m3, self.client, ["fake.layers.*.proj"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
