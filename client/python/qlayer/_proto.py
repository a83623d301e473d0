"""The qlayer.v1 message classes, built at import time from descriptors.

No generated ``*_pb2`` modules: the proto files (proto/ at the repo root) are
compiled into one FileDescriptorSet, and the classes are made from it in a
private descriptor pool, so they cannot clash with another package's
``google.rpc.Status`` in the default pool. The set is looked up, in order:

1. the file named by ``$QLAYER_PROTO_DESCRIPTORS``;
2. ``qlayer_v1.desc`` beside this module (``pip install`` puts it there);
3. ``<build>/client/python/qlayer_v1.desc`` is what CMake builds; point
   ``$QLAYER_PROTO_DESCRIPTORS`` at it, or
4. in a source checkout, ``protoc`` (Debian's protobuf-compiler) is run on
   the repo's proto/ directory.
"""

import os
import shutil
import subprocess
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_HERE = os.path.dirname(os.path.abspath(__file__))
_PROTO_FILES = ("qlayer/v1/tensor.proto", "qlayer/v1/layer_service.proto")


def _compile(proto_dir):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "qlayer_v1.desc")
        subprocess.run(
            ["protoc", "--proto_path=" + proto_dir, "--include_imports",
             "--descriptor_set_out=" + out, *_PROTO_FILES],
            check=True)
        with open(out, "rb") as f:
            return f.read()


def _descriptor_set_bytes():
    env = os.environ.get("QLAYER_PROTO_DESCRIPTORS")
    if env:
        with open(env, "rb") as f:
            return f.read()
    beside = os.path.join(_HERE, "qlayer_v1.desc")
    if os.path.exists(beside):
        with open(beside, "rb") as f:
            return f.read()
    proto_dir = os.path.normpath(os.path.join(_HERE, "..", "..", "..", "proto"))
    if os.path.isdir(os.path.join(proto_dir, "qlayer", "v1")) and shutil.which("protoc"):
        return _compile(proto_dir)
    raise ImportError(
        "qlayer: no qlayer.v1 descriptors: set QLAYER_PROTO_DESCRIPTORS to "
        "<build>/client/python/qlayer_v1.desc, or install protoc "
        "(Debian: protobuf-compiler)")


_pool = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(_descriptor_set_bytes()).file:
    _pool.Add(_file)  # protoc writes dependencies first


def _message(name):
    desc = _pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(_pool).GetPrototype(desc)


def _enum(name):
    return {v.name: v.number for v in _pool.FindEnumTypeByName(name).values}


Tensor = _message("qlayer.v1.Tensor")
ListLayersRequest = _message("qlayer.v1.ListLayersRequest")
ListLayersResponse = _message("qlayer.v1.ListLayersResponse")
DescribeLayerRequest = _message("qlayer.v1.DescribeLayerRequest")
LayerInfo = _message("qlayer.v1.LayerInfo")
ForwardRequest = _message("qlayer.v1.ForwardRequest")
ForwardResponse = _message("qlayer.v1.ForwardResponse")
MoEForwardRequest = _message("qlayer.v1.MoEForwardRequest")
MoEForwardResponse = _message("qlayer.v1.MoEForwardResponse")
Timing = _message("qlayer.v1.Timing")
RpcStatus = _message("google.rpc.Status")
DType = _enum("qlayer.v1.DType")
Encoding = _enum("qlayer.v1.Encoding")

SERVICE = "/qlayer.v1.LayerService/"
