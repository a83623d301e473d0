"""Builds qlayer_v1.desc (the wire contract's descriptors) into the package.

Run from a source checkout: `pip install ./client/python` compiles
../../proto with protoc (Debian: protobuf-compiler) and installs the set as
package data beside qlayer/_proto.py, so the installed package needs neither
the checkout nor QLAYER_PROTO_DESCRIPTORS. Offline on Debian 12 (README):

  /usr/bin/python3 -m venv --system-site-packages VENV
  VENV/bin/pip install --no-build-isolation --no-deps ./client/python

Metadata lives in pyproject.toml.
"""

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("QLAYER_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))


class BuildWithDescriptors(build_py):
    def run(self):
        super().run()
        # Say what is missing rather than a bare FileNotFoundError from protoc.
        if not os.path.isdir(os.path.join(PROTO_DIR, "qlayer", "v1")):
            raise SystemExit(f"qlayer: no qlayer/v1 protos under {os.path.abspath(PROTO_DIR)}: "
                             "install from a qlayer checkout or set QLAYER_PROTO_DIR")
        protoc = shutil.which("protoc")
        if protoc is None:
            raise SystemExit("qlayer: protoc not found (Debian: protobuf-compiler)")
        out = os.path.join(self.build_lib, "qlayer", "qlayer_v1.desc")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([protoc, "--proto_path=" + PROTO_DIR, "--include_imports",
                        "--descriptor_set_out=" + out, "qlayer/v1/tensor.proto",
                        "qlayer/v1/layer_service.proto"], check=True)


setup(cmdclass={"build_py": BuildWithDescriptors})
