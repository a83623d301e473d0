"""The Python client (client/python/qlayer) against a live qlayer-server.

qlayer-quantize writes a GPTQ checkpoint (asymmetric 4-bit, act-order, bias)
plus a dump of its canonical weights; the float64 reference is computed here
in numpy from that dump, independently of the C++ code. Run by ctest with
QLAYER_BUILD_DIR, PYTHONPATH=client/python and QLAYER_PROTO_DESCRIPTORS set;
seeded by QLAYER_TEST_SEED (else the clock), printed.
"""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import zlib

import grpc
import numpy as np

import qlayer

BUILD = os.environ.get("QLAYER_BUILD_DIR", "")
SERVER = os.path.join(BUILD, "server", "qlayer-server")
QUANTIZE = os.path.join(BUILD, "server", "qlayer-quantize")
LAYER = "model.layers.0.self_attn.o_proj"
K, N = 256, 96
SEED = int(os.environ.get("QLAYER_TEST_SEED") or (time.time_ns() % 1000000007))


def read_safetensors(path):
    """name -> numpy array (the dtypes the dump uses), and the metadata."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    dtypes = {"I32": "<i4", "F16": "<f2", "F32": "<f4", "BF16": "<u2"}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, t = e["data_offsets"]
        a = np.frombuffer(buf[b:t], dtype=dtypes[e["dtype"]]).reshape(e["shape"])
        if e["dtype"] == "BF16":
            a = qlayer.bf16_bits_to_float(a)
        out[name] = a.astype(np.float64) if e["dtype"] != "I32" else a
    return out, header.get("__metadata__", {})


def dequantize(tensors, meta, name):
    """w [K, N] in float64 from the canonical layout (DESIGN.md)."""
    info = json.loads(meta["qlayer.layer." + name])
    wtype = info["wtype"]
    bits = 8 if wtype.startswith("uint8") else 4
    pack = 32 // bits
    qw = tensors[name + ".qweight"].view(np.uint32)
    k = np.arange(K)
    q = (qw[k // pack, :] >> (bits * (k % pack))[:, None].astype(np.uint32)) & ((1 << bits) - 1)
    group = info.get("group_size", K)
    group = K if group is None or group <= 0 else group
    g = tensors[name + ".g_idx"] if name + ".g_idx" in tensors else k // group
    if name + ".zeros" in tensors:
        z = tensors[name + ".zeros"][g, :]
    else:
        z = 8 if bits == 4 else 128
    return (q.astype(np.float64) - z) * tensors[name + ".scales"][g, :]


def rel_err(y, ref):
    return float(np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref))


@unittest.skipUnless(os.access(SERVER, os.X_OK) and os.access(QUANTIZE, os.X_OK),
                     "qlayer-server / qlayer-quantize not built")
class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print(f"QLAYER_TEST_SEED={SEED}", file=sys.stderr)
        cls.dir = tempfile.mkdtemp(prefix="qlayer_py_")
        subprocess.run([QUANTIZE, "--format=gptq", "--bits=4", "--group_size=32", "--act_order",
                        "--bias", f"--seed={SEED}", f"--shape={LAYER}={N}x{K}",
                        f"--out={cls.dir}/model", f"--dump_canonical={cls.dir}/canonical.safetensors"],
                       check=True, stdout=subprocess.DEVNULL)
        tensors, meta = read_safetensors(f"{cls.dir}/canonical.safetensors")
        cls.w = dequantize(tensors, meta, LAYER)
        cls.bias = tensors.get(LAYER + ".bias")
        cls.log = open(f"{cls.dir}/server.log", "w+")
        cls.server = subprocess.Popen(
            [SERVER, "--model", f"{cls.dir}/model", "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0"], stdout=cls.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        address = None
        for _ in range(600):
            with open(f"{cls.dir}/server.log") as f:
                m = re.search(r"listening on (\S+)", f.read())
            if m:
                address = m.group(1)
                break
            if cls.server.poll() is not None:
                break
            time.sleep(0.05)
        if address is None:
            with open(f"{cls.dir}/server.log") as f:
                raise RuntimeError("qlayer-server did not start:\n" + f.read())
        cls.client = qlayer.Client(address)
        cls.client.wait_for_ready(10)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.terminate()
        cls.server.wait(timeout=15)
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.rng = np.random.default_rng(SEED + zlib.crc32(self._testMethodName.encode()))

    def reference(self, x):
        y = x.astype(np.float64) @ self.w
        return y + self.bias if self.bias is not None else y

    def test_list_and_describe(self):
        layers = self.client.list_layers()
        self.assertIn(LAYER, [l.name for l in layers])
        info = self.client.describe_layer(LAYER)
        self.assertEqual((info.in_features, info.out_features), (K, N))
        self.assertTrue(info.act_order)
        self.assertTrue(len(info.kernels) > 0)
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.describe_layer("no.such.layer")
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)

    def test_forward_matches_numpy_reference_in_every_dtype(self):
        for dtype, tol in (("f16", 5e-3), ("bf16", 1e-2), ("f32", 5e-3)):
            x = self.rng.uniform(-1, 1, size=(3, K)).astype(np.float32)
            if dtype == "f16":
                x = x.astype(np.float16)
            sent = qlayer.bf16_bits_to_float(qlayer.float_to_bf16_bits(x)) if dtype == "bf16" else x
            y, info = self.client.forward(LAYER, x, dtype=dtype, timeout=30)
            self.assertEqual(y.shape, (3, N))
            self.assertLess(rel_err(y, self.reference(sent)), tol, dtype)
            self.assertTrue(info.kernel)
            self.assertGreaterEqual(info.latency_us, info.total_us)
            self.assertGreaterEqual(info.batch_rows, 3)

    def test_one_row_input(self):
        x = self.rng.uniform(-1, 1, size=(K,)).astype(np.float16)
        y, _ = self.client.forward(LAYER, x)
        self.assertEqual(y.shape, (1, N))  # the answer is [M, N]; M = 1
        self.assertLess(rel_err(y[0], self.reference(x)), 5e-3)

    def test_pipelined_calls_are_matched_by_id(self):
        xs = [self.rng.uniform(-1, 1, size=(1 + i % 4, K)).astype(np.float16) for i in range(48)]
        futures = [self.client.forward_async(LAYER, x) for x in xs]
        ids = set()
        for x, f in zip(xs, futures):
            y, info = f.result(timeout=60)
            self.assertLess(rel_err(y, self.reference(x)), 5e-3)
            ids.add(info.request_id)
        self.assertEqual(len(ids), len(xs))

    def test_bad_requests_fail_and_the_stream_lives_on(self):
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward(LAYER, np.ones((2, K + 1), np.float16))
        self.assertEqual(e.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward("no.such.layer", np.ones((1, K), np.float16))
        self.assertEqual(e.exception.code, grpc.StatusCode.NOT_FOUND)
        x = self.rng.uniform(-1, 1, size=(2, K)).astype(np.float16)
        y, _ = self.client.forward(LAYER, x)
        self.assertLess(rel_err(y, self.reference(x)), 5e-3)

    def test_deadline(self):
        x = self.rng.uniform(-1, 1, size=(1, K)).astype(np.float16)
        with self.assertRaises(qlayer.QlayerError) as e:
            self.client.forward(LAYER, x, timeout=1e-6)
        self.assertEqual(e.exception.code, grpc.StatusCode.DEADLINE_EXCEEDED)
        y, _ = self.client.forward(LAYER, x, timeout=30)
        self.assertLess(rel_err(y, self.reference(x)), 5e-3)


if __name__ == "__main__":
    unittest.main(verbosity=2)
