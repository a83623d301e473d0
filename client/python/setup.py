"""Builds qlayer_v1.desc (the wire contract's descriptors) into the package.

Run from a source checkout: `pip install ./client/python` compiles
../../proto with protoc (Debian: protobuf-compiler). Metadata lives in
pyproject.toml.
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.environ.get("QLAYER_PROTO_DIR", os.path.join(HERE, "..", "..", "proto"))


class BuildWithDescriptors(build_py):
    def run(self):
        super().run()
        out = os.path.join(self.build_lib, "qlayer", "qlayer_v1.desc")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run(["protoc", "--proto_path=" + PROTO_DIR, "--include_imports",
                        "--descriptor_set_out=" + out, "qlayer/v1/tensor.proto",
                        "qlayer/v1/layer_service.proto"], check=True)


setup(cmdclass={"build_py": BuildWithDescriptors})
