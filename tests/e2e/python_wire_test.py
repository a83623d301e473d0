"""qlayer.wire (the hand codec of Forward / MoEForward) against protobuf's own.

Requests encoded by qlayer.wire must parse with the protobuf classes into the
same fields; answers serialized by protobuf must decode to the same fields.
Random shapes, dtypes and ids; seeded by QLAYER_TEST_SEED (else the clock),
printed. Run by ctest with PYTHONPATH=client/python and
QLAYER_PROTO_DESCRIPTORS set.
"""

import os
import sys
import time
import unittest
import zlib

import numpy as np
from google.protobuf.message import DecodeError

import qlayer
from qlayer import _proto, wire
from qlayer.tensors import from_raw, wire_tensor

SEED = int(os.environ.get("QLAYER_TEST_SEED") or (time.time_ns() % 1000000007))
DTYPES = {"f16": np.float16, "f32": np.float32, "i32": np.int32, "i64": np.int64}


class WireCodecTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print(f"QLAYER_TEST_SEED={SEED}", file=sys.stderr)

    def setUp(self):
        self.rng = np.random.default_rng(SEED + zlib.crc32(self._testMethodName.encode()))

    def random_array(self, dtype, rank=None):
        rank = int(self.rng.integers(1, 4)) if rank is None else rank
        shape = tuple(int(d) for d in self.rng.integers(1, 7, size=rank))
        if dtype in ("i32", "i64"):
            return self.rng.integers(-1000, 1000, size=shape).astype(DTYPES[dtype])
        a = self.rng.standard_normal(shape).astype(np.float32)
        return a if dtype == "bf16" else a.astype(DTYPES[dtype])

    def assert_tensor(self, msg, x, dtype):
        self.assertEqual(msg.dtype, _proto.DType["DTYPE_" + dtype.upper()])
        self.assertEqual(list(msg.shape), list(x.shape))
        want = (qlayer.float_to_bf16_bits(x) if dtype == "bf16"
                else np.ascontiguousarray(x, DTYPES[dtype]))
        self.assertEqual(msg.data, want.tobytes())

    def test_forward_request_parses_with_protobuf(self):
        for i in range(40):
            dtype = ("f16", "bf16", "f32")[i % 3]
            x = self.random_array(dtype)
            rid = int(self.rng.integers(1, 1 << 62)) if i % 2 else i + 1
            layer = f"model.layers.{i}.self_attn.q_proj" + ("é" if i % 5 == 0 else "")
            timeout_us = 0 if i % 4 == 0 else int(self.rng.integers(1, 1 << 40))
            raw = wire.encode_forward_request(rid, layer, wire_tensor(x, dtype), timeout_us)
            m = _proto.ForwardRequest.FromString(raw)
            self.assertEqual((m.request_id, m.layer, m.timeout_us), (rid, layer, timeout_us))
            self.assertEqual(m.output_encoding, _proto.Encoding["ENCODING_DATA"])
            self.assert_tensor(m.input, x, dtype)

    def test_request_bytes_are_one_join_over_the_array(self):
        x = self.random_array("f32", rank=2)
        t = wire_tensor(x)
        self.assertTrue(np.shares_memory(np.frombuffer(t.buffer, np.float32), x))
        raw = wire.encode_forward_request(7, "l", t)
        self.assertIn(x.tobytes(), raw)

    def test_moe_request_parses_with_protobuf(self):
        for i in range(12):
            h = self.random_array("f16", rank=2)
            kwargs = {}
            if i % 3 == 1:
                kwargs["router_logits"] = wire_tensor(self.random_array("f32", rank=2))
            if i % 3 == 2:
                kwargs["topk_ids"] = wire_tensor(self.random_array("i32", rank=2))
                kwargs["topk_weights"] = wire_tensor(self.random_array("f32", rank=2))
            raw = wire.encode_moe_request(i + 1, "model.layers.1.mlp", wire_tensor(h),
                                          return_routing=bool(i % 2), timeout_us=i * 1000,
                                          **kwargs)
            m = _proto.MoEForwardRequest.FromString(raw)
            self.assertEqual((m.request_id, m.layer, m.return_routing, m.timeout_us),
                             (i + 1, "model.layers.1.mlp", bool(i % 2), i * 1000))
            self.assert_tensor(m.hidden_states, h, "f16")
            for name in ("router_logits", "topk_ids", "topk_weights"):
                self.assertEqual(m.HasField(name), name in kwargs, name)
                if name in kwargs:
                    sent = kwargs[name]
                    self.assertEqual(getattr(m, name).data, bytes(sent.buffer))
                    self.assertEqual(list(getattr(m, name).shape), list(sent.shape))

    def test_forward_response_decodes_like_protobuf(self):
        for i in range(40):
            dtype = ("f16", "bf16", "f32")[i % 3]
            y = self.random_array(dtype)
            m = _proto.ForwardResponse(request_id=int(self.rng.integers(1, 1 << 63)),
                                       kernel=f"cpu_kernel_{i}", batch_rows=i + 1)
            m.output.dtype = _proto.DType["DTYPE_" + dtype.upper()]
            m.output.shape.extend(y.shape)
            m.output.data = (qlayer.float_to_bf16_bits(y) if dtype == "bf16"
                             else y).tobytes()
            m.timing.queue_us, m.timing.compute_us, m.timing.total_us = i, 10 * i, 100 * i + 1
            a = wire.decode_forward_response(m.SerializeToString())
            self.assertEqual((a.request_id, a.kernel, a.batch_rows, a.error_code),
                             (m.request_id, m.kernel, m.batch_rows, 0))
            self.assertEqual((a.queue_us, a.compute_us, a.total_us), (i, 10 * i, 100 * i + 1))
            got = from_raw(a.output)
            want = qlayer.bf16_bits_to_float(qlayer.float_to_bf16_bits(y)) if dtype == "bf16" else y
            np.testing.assert_array_equal(got, want.reshape(y.shape))

    def test_error_answer_and_values_form(self):
        m = _proto.ForwardResponse(request_id=3)
        m.error.code = 5
        m.error.message = "layer 'x' not found: ünïcode"
        a = wire.decode_forward_response(m.SerializeToString())
        self.assertEqual((a.request_id, a.error_code, a.error_message, a.output),
                         (3, 5, "layer 'x' not found: ünïcode", None))
        v = self.rng.standard_normal((2, 3)).astype(np.float32)
        m = _proto.ForwardResponse(request_id=4)
        m.output.shape.extend([2, 3])
        m.output.values.extend(v.ravel().tolist())
        np.testing.assert_array_equal(from_raw(wire.decode_forward_response(
            m.SerializeToString()).output), v)

    def test_moe_response_with_routing(self):
        y = self.random_array("f32", rank=2)
        ids = self.rng.integers(0, 8, size=(y.shape[0], 2)).astype(np.int32)
        w = self.rng.random((y.shape[0], 2)).astype(np.float32)
        m = _proto.MoEForwardResponse(request_id=9, kernels=["a(w13: x)", "b"], batch_rows=5)
        for name, arr, code in (("output", y, "F32"), ("topk_ids", ids, "I32"),
                                ("topk_weights", w, "F32")):
            t = getattr(m, name)
            t.dtype = _proto.DType["DTYPE_" + code]
            t.shape.extend(arr.shape)
            t.data = arr.tobytes()
        a = wire.decode_moe_response(m.SerializeToString())
        self.assertEqual((a.request_id, a.kernel, a.batch_rows), (9, "a(w13: x); b", 5))
        np.testing.assert_array_equal(from_raw(a.output), y)
        np.testing.assert_array_equal(from_raw(a.topk_ids), ids)
        np.testing.assert_array_equal(from_raw(a.topk_weights), w)

    def test_truncated_answers_fail_where_protobuf_fails(self):
        m = _proto.ForwardResponse(request_id=300, kernel="k", batch_rows=2)
        m.output.dtype = _proto.DType["DTYPE_F32"]
        m.output.shape.extend([1, 4])
        m.output.data = self.rng.standard_normal(4).astype(np.float32).tobytes()
        m.timing.total_us = 12345
        raw = m.SerializeToString()
        for cut in range(len(raw) + 1):
            try:
                want = _proto.ForwardResponse.FromString(raw[:cut])
            except DecodeError:
                with self.assertRaises((ValueError, IndexError), msg=f"cut {cut}"):
                    wire.decode_forward_response(raw[:cut])
                continue
            a = wire.decode_forward_response(raw[:cut])
            self.assertEqual((a.request_id, a.kernel, a.total_us),
                             (want.request_id, want.kernel, want.timing.total_us))
            if want.HasField("output"):
                self.assertEqual(bytes(a.output.data or b""), want.output.data)


if __name__ == "__main__":
    unittest.main(verbosity=2)
