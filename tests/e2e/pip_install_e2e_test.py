"""`pip install ./client/python` the way a Debian 12 user does it offline,
then the installed package (and nothing of the checkout) against a real
qlayer-server.

The commands are read from README.md's ```sh block that runs pip install
(its first two lines, ~/.venvs/qlayer replaced by a temp VENV), so README and
test cannot drift apart:

  /usr/bin/python3 -m venv --system-site-packages VENV
  VENV/bin/pip install --no-build-isolation --no-deps ./client/python

run from the root of a throwaway copy of the checkout's client/python and
proto/ (the same files; the build then writes its build/ and qlayer.egg-info
there, not into the source tree, and ctest -j runs share nothing).

Why these flags: Debian's /usr/bin/python3 is EXTERNALLY-MANAGED (PEP 668),
so pip refuses to install into it and a venv is needed (Debian's
python3-venv); --system-site-packages lets the venv see python3-grpcio,
python3-numpy and python3-wheel; --no-build-isolation builds with the
setuptools the venv already has instead of fetching setuptools>=61 from PyPI;
--no-deps keeps pip from resolving grpcio / protobuf / numpy against an index.
pip runs with no index, no find-links and no config file, so nothing can come
from anywhere but the copy. setup.py runs protoc (protobuf-compiler) on
proto/ and installs qlayer_v1.desc as package data.

Then VENV/bin/python, from cwd / with neither PYTHONPATH nor
QLAYER_PROTO_DESCRIPTORS set and only VENV/bin on PATH (no protoc to fall
back on), runs this file's --installed half: qlayer must come from the venv
with its descriptors beside it (and in the wheel's RECORD); list_layers and
describe_layer see the layer of a qlayer-quantize GPTQ checkpoint (4-bit,
act-order, bias), and forward answers f16 and f32 inputs within 5e-3 of a
float64 numpy reference dequantized from the tool's canonical dump
(tests/cli/python_client_test.py's helpers). Seeded by QLAYER_TEST_SEED (else
the clock), printed. Needs QLAYER_BUILD_DIR.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("QLAYER_BUILD_DIR", "")
SERVER = os.path.join(BUILD, "server", "qlayer-server")
QUANTIZE = os.path.join(BUILD, "server", "qlayer-quantize")
LAYER = "model.layers.0.self_attn.o_proj"
K, N = 256, 96  # python_client_test.dequantize() assumes K = 256
README_VENV = "~/.venvs/qlayer"  # where README's commands put the venv
SEED = int(os.environ.get("QLAYER_TEST_SEED") or (time.time_ns() % 1000000007))


def readme_install_commands(venv):
    """README's venv + pip install lines as argv lists, for this venv."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = [b for b in re.findall(r"^```sh\n(.*?)^```", f.read(), re.S | re.M)
                  if "pip install" in b]
    assert len(blocks) == 1, f"README.md: {len(blocks)} ```sh blocks run pip install, want 1"
    lines = blocks[0].strip().splitlines()[:2]
    cmds = [[a.replace(README_VENV, venv) for a in shlex.split(line)] for line in lines]
    assert cmds[0][:3] == ["/usr/bin/python3", "-m", "venv"] and cmds[0][-1] == venv, cmds[0]
    assert cmds[1][:2] == [f"{venv}/bin/pip", "install"], cmds[1]
    assert cmds[1][-1] == "./client/python", cmds[1]
    return cmds


def installed_check(venv, address, dump, seed):
    """Runs in VENV/bin/python: the installed package against the server."""
    import importlib.metadata

    import numpy as np

    import qlayer

    assert "PYTHONPATH" not in os.environ and "QLAYER_PROTO_DESCRIPTORS" not in os.environ
    where = os.path.dirname(os.path.abspath(qlayer.__file__))
    venv = os.path.realpath(venv)
    assert os.path.realpath(where).startswith(venv + os.sep), f"qlayer from {where}, not {venv}"
    assert os.path.isfile(os.path.join(where, "qlayer_v1.desc")), f"no qlayer_v1.desc in {where}"
    record = {str(f) for f in importlib.metadata.files("qlayer")}
    assert "qlayer/qlayer_v1.desc" in record, sorted(record)
    print(f"qlayer {importlib.metadata.version('qlayer')} from {where}", file=sys.stderr)

    # The reference helpers import qlayer themselves: the one already loaded.
    sys.path.insert(0, os.path.join(REPO, "tests", "cli"))
    import python_client_test as pct

    tensors, meta = pct.read_safetensors(dump)
    w = pct.dequantize(tensors, meta, LAYER)
    bias = tensors[LAYER + ".bias"]
    rng = np.random.default_rng(seed)
    with qlayer.Client(address) as client:
        client.wait_for_ready(10)
        names = [layer.name for layer in client.list_layers()]
        assert names == [LAYER], names
        info = client.describe_layer(LAYER)
        assert (info.in_features, info.out_features) == (K, N), info
        for dtype in (np.float16, np.float32):
            x = rng.uniform(-1, 1, size=(5, K)).astype(dtype)
            y, fwd = client.forward(LAYER, x, timeout=30)
            assert y.shape == (5, N), y.shape
            err = pct.rel_err(y, x.astype(np.float64) @ w + bias)
            print(f"forward {np.dtype(dtype).name}: relative error {err:.3g} (kernel "
                  f"{fwd.kernel})", file=sys.stderr)
            assert err < 5e-3, err


def start_server(model, log_path):
    log = open(log_path, "w")
    proc = subprocess.Popen([SERVER, "--model", model, "--listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    for _ in range(1200):
        with open(log_path) as f:
            m = re.search(r"listening on (\S+)", f.read())
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    with open(log_path) as f:
        raise RuntimeError("qlayer-server did not start:\n" + f.read())


@unittest.skipUnless(os.access(SERVER, os.X_OK) and os.access(QUANTIZE, os.X_OK),
                     "qlayer-server / qlayer-quantize not built (set QLAYER_BUILD_DIR)")
class PipInstall(unittest.TestCase):
    def setUp(self):
        print(f"QLAYER_TEST_SEED={SEED}", file=sys.stderr)
        self.dir = tempfile.mkdtemp(prefix="qlayer_pip_")
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run_logged(self, args, **kwargs):
        t0 = time.monotonic()
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           **kwargs)
        print(f"$ {' '.join(args)}  ({time.monotonic() - t0:.1f} s, rc {r.returncode})",
              file=sys.stderr)
        if r.returncode != 0:
            self.fail(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}")
        return r.stdout

    def test_pip_install_into_venv_then_use_from_elsewhere(self):
        src, venv = f"{self.dir}/src", f"{self.dir}/venv"
        junk = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*.pyc")
        shutil.copytree(f"{REPO}/client/python", f"{src}/client/python", ignore=junk)
        shutil.copytree(f"{REPO}/proto", f"{src}/proto", ignore=junk)

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PIP_") and k not in
               ("PYTHONPATH", "QLAYER_PROTO_DESCRIPTORS", "QLAYER_PROTO_DIR", "VIRTUAL_ENV")}
        env.update(PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
        make_venv, pip_install = readme_install_commands(venv)
        self.run_logged(make_venv, cwd=src, env=env)
        out = self.run_logged(pip_install, cwd=src, env=env)
        self.assertIn("Successfully installed qlayer", out)

        self.run_logged([QUANTIZE, "--format=gptq", "--bits=4", "--group_size=32", "--act_order",
                         "--bias", f"--seed={SEED}", f"--shape={LAYER}={N}x{K}",
                         f"--out={self.dir}/model",
                         f"--dump_canonical={self.dir}/canonical.safetensors"])
        self.server, address = start_server(f"{self.dir}/model", f"{self.dir}/server.log")

        env["PATH"] = f"{venv}/bin"
        r = subprocess.run([f"{venv}/bin/python", os.path.abspath(__file__), "--installed", venv,
                            address, f"{self.dir}/canonical.safetensors", str(SEED)],
                           cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        sys.stderr.write(r.stdout)
        self.assertEqual(r.returncode, 0, "the installed package failed (above)")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--installed":
        installed_check(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        unittest.main(verbosity=2)
