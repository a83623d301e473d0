"""numpy arrays <-> qlayer.v1.Tensor.

numpy has no bfloat16: send bf16 by passing ``dtype="bf16"`` with a float32
(or float16) array, which is rounded to bf16 (nearest even) here; bf16
answers come back widened to float32, which is exact.
"""

import numpy as np

from . import _proto
from .wire import WireTensor

_WIRE = {
    "f16": (_proto.DType["DTYPE_F16"], np.dtype("<f2")),
    "bf16": (_proto.DType["DTYPE_BF16"], np.dtype("<u2")),
    "f32": (_proto.DType["DTYPE_F32"], np.dtype("<f4")),
    "i32": (_proto.DType["DTYPE_I32"], np.dtype("<i4")),
    "i64": (_proto.DType["DTYPE_I64"], np.dtype("<i8")),
}
_BY_CODE = {code: (name, np_dtype) for name, (code, np_dtype) in _WIRE.items()}
_NATURAL = {np.dtype("float16"): "f16", np.dtype("float32"): "f32",
            np.dtype("float64"): "f32", np.dtype("int32"): "i32",
            np.dtype("int64"): "i64"}


def float_to_bf16_bits(x):
    """float array -> uint16 bf16 bit patterns, round to nearest even, NaN kept quiet."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (u >> np.uint32(16)) | np.uint32(0x40)
    return np.where(nan, quiet, rounded).astype("<u2")


def bf16_bits_to_float(b):
    return (np.asarray(b, dtype="<u2").astype("<u4") << np.uint32(16)).view("<f4")


def wire_dtype_name(x, dtype=None):
    """The wire dtype for array x: `dtype` if given, else float16 -> f16,
    float32/float64 -> f32, int32 -> i32, int64 -> i64."""
    if dtype is not None:
        if dtype not in _WIRE:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(_WIRE)}")
        return dtype
    name = _NATURAL.get(np.asarray(x).dtype)
    if name is None:
        raise ValueError(f"numpy dtype {np.asarray(x).dtype} has no wire dtype; "
                         "pass dtype='f16'|'bf16'|'f32'")
    return name


def to_wire(x, dtype=None):
    """numpy array -> Tensor with raw little-endian `data`."""
    name = wire_dtype_name(x, dtype)
    code, np_dtype = _WIRE[name]
    a = np.asarray(x)
    data = float_to_bf16_bits(a) if name == "bf16" else np.ascontiguousarray(a, dtype=np_dtype)
    t = _proto.Tensor(dtype=code, shape=list(a.shape))
    t.data = data.tobytes()
    return t


def wire_tensor(x, dtype=None):
    """numpy array -> qlayer.wire.WireTensor over x's own bytes when x is
    already contiguous little-endian of the wire dtype (no copy), else over a
    converted copy (bf16 rounding, float64 -> f32)."""
    name = wire_dtype_name(x, dtype)
    code, np_dtype = _WIRE[name]
    a = np.asarray(x)
    data = float_to_bf16_bits(a) if name == "bf16" else np.ascontiguousarray(a, dtype=np_dtype)
    return WireTensor(code, a.shape, data)


def wire_np_dtype(code):
    """The little-endian numpy dtype of wire dtype `code` (ValueError if unknown)."""
    if code not in _BY_CODE:
        raise ValueError(f"answer has unknown wire dtype code {code}")
    return _BY_CODE[code][1]


def from_raw(t):
    """qlayer.wire.RawTensor -> numpy array (one copy out of the message); bf16
    widened to float32."""
    shape = tuple(t.shape)
    if t.values is not None:
        return np.asarray(t.values, dtype=np.float32).reshape(shape)
    name, np_dtype = _BY_CODE.get(t.dtype, (None, None))
    if name is None:
        raise ValueError(f"answer has unknown wire dtype code {t.dtype}")
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = 0 if t.data is None else t.data.nbytes
    if nbytes != count * np_dtype.itemsize:
        raise ValueError(f"answer {name}{list(shape)} has {nbytes} bytes, "
                         f"expected {count * np_dtype.itemsize}")
    if count == 0:
        return np.zeros(shape, np.float32 if name == "bf16" else np_dtype)
    a = np.frombuffer(t.data, dtype=np_dtype).reshape(shape)
    return bf16_bits_to_float(a).reshape(shape) if name == "bf16" else a.copy()


def from_wire(t):
    """Tensor (data or values form) -> numpy array; bf16 widened to float32."""
    shape = tuple(t.shape)
    if len(t.values) > 0:
        return np.asarray(t.values, dtype=np.float32).reshape(shape)
    if t.dtype not in _BY_CODE:
        raise ValueError(f"answer has unknown wire dtype code {t.dtype}")
    name, np_dtype = _BY_CODE[t.dtype]
    count = int(np.prod(shape, dtype=np.int64))
    if len(t.data) != count * np_dtype.itemsize:
        raise ValueError(f"answer {name}{list(shape)} has {len(t.data)} bytes, "
                         f"expected {count * np_dtype.itemsize}")
    a = np.frombuffer(t.data, dtype=np_dtype).reshape(shape)
    return bf16_bits_to_float(a).reshape(shape) if name == "bf16" else a.copy()
