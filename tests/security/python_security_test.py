"""The Python client (qlayer.Client) against a qlayer-server with mutual TLS
and a bearer token: refused without a client certificate or token, served
with them, and the answer matches a float64 numpy reference computed from
qlayer-quantize's canonical dump (helpers shared with tests/cli). Run by ctest
with QLAYER_BUILD_DIR, PYTHONPATH=client/python and QLAYER_PROTO_DESCRIPTORS;
seeded by QLAYER_TEST_SEED (else the clock), printed.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
import python_client_test as pct  # noqa: E402  (read_safetensors, dequantize, rel_err)

import qlayer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@unittest.skipUnless(os.access(pct.SERVER, os.X_OK) and os.access(pct.QUANTIZE, os.X_OK),
                     "qlayer-server / qlayer-quantize not built")
class PythonSecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        print(f"QLAYER_TEST_SEED={pct.SEED}", file=sys.stderr)
        cls.dir = tempfile.mkdtemp(prefix="qlayer_pysec_")
        cls.certs = os.path.join(cls.dir, "certs")
        subprocess.run(["/bin/sh", os.path.join(HERE, "make_test_certs.sh"), cls.certs],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([pct.QUANTIZE, "--format=gptq", "--bits=4", "--group_size=32",
                        "--bias", f"--seed={pct.SEED}", f"--shape={pct.LAYER}={pct.N}x{pct.K}",
                        f"--out={cls.dir}/model",
                        f"--dump_canonical={cls.dir}/canonical.safetensors"],
                       check=True, stdout=subprocess.DEVNULL)
        tensors, meta = pct.read_safetensors(f"{cls.dir}/canonical.safetensors")
        cls.w = pct.dequantize(tensors, meta, pct.LAYER)
        cls.bias = tensors.get(pct.LAYER + ".bias")
        cls.token = f"py-{pct.SEED}-token"
        cls.token_file = os.path.join(cls.dir, "token")
        with open(cls.token_file, "w") as f:
            f.write("# the accepted token\n" + cls.token + "\n")
        cls.log = open(f"{cls.dir}/server.log", "w+")
        cls.server = subprocess.Popen(
            [pct.SERVER, "--model", f"{cls.dir}/model", "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", "--tls-cert", cls.cert("server.pem"),
             "--tls-key", cls.cert("server.key"), "--tls-client-ca", cls.cert("ca.pem"),
             "--auth-token-file", cls.token_file],
            stdout=cls.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        cls.address = None
        for _ in range(600):
            with open(f"{cls.dir}/server.log") as f:
                m = re.search(r"listening on (\S+)", f.read())
            if m:
                cls.address = m.group(1)
                break
            if cls.server.poll() is not None:
                break
            time.sleep(0.05)
        if cls.address is None:
            with open(f"{cls.dir}/server.log") as f:
                raise RuntimeError("qlayer-server did not start:\n" + f.read())

    @classmethod
    def cert(cls, name):
        return os.path.join(cls.certs, name)

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.server.wait(timeout=15)
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def client(self, **security):
        return qlayer.Client(self.address, timeout=5, retry_timeout=0, **security)

    def full(self, **extra):
        args = dict(tls_ca=self.cert("ca.pem"), tls_cert=self.cert("client.pem"),
                    tls_key=self.cert("client.key"), auth_token_file=self.token_file)
        args.update(extra)
        return args

    def test_forward_with_tls_client_cert_and_token_matches_reference(self):
        rng = np.random.default_rng(pct.SEED)
        x = rng.uniform(-1, 1, size=(3, pct.K)).astype(np.float16)
        with self.client(**self.full()) as c:
            self.assertIn(pct.LAYER, [l.name for l in c.list_layers()])
            y, _ = c.forward(pct.LAYER, x, timeout=10)
        ref = x.astype(np.float64) @ self.w
        if self.bias is not None:
            ref = ref + self.bias
        self.assertLess(pct.rel_err(y, ref), 4e-3)
        # The token given inline (PEM bytes for the CA) works the same.
        with open(self.cert("ca.pem"), "rb") as f:
            ca = f.read()
        with self.client(**self.full(tls_ca=ca, auth_token_file=None,
                                     auth_token=self.token)) as c:
            self.assertIn(pct.LAYER, [l.name for l in c.list_layers()])

    def test_missing_or_wrong_token_is_unauthenticated(self):
        for extra in ({"auth_token_file": None}, {"auth_token_file": None, "auth_token": "nope"},
                      {"auth_token_file": None, "auth_token": self.token + "x"}):
            with self.subTest(**{k: v for k, v in extra.items() if v}):
                with self.client(**self.full(**extra)) as c:
                    with self.assertRaises(qlayer.QlayerError) as e:
                        c.list_layers()
                    self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)

    def test_without_client_certificate_or_tls_is_refused(self):
        for args in (self.full(tls_cert=None, tls_key=None), {}):
            with self.client(**args) as c:
                with self.assertRaises(qlayer.QlayerError) as e:
                    c.list_layers()
                self.assertEqual(e.exception.code, grpc.StatusCode.UNAVAILABLE)

    def test_token_without_tls_is_refused_locally(self):
        with self.assertRaises(ValueError):
            qlayer.Client(self.address, auth_token=self.token)


if __name__ == "__main__":
    unittest.main()
