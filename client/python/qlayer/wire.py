"""The Forward / MoEForward messages encoded and decoded by hand, around raw tensor bytes.

Why not the protobuf classes on this path: building a ``Tensor`` message
copies the payload into the message (``tobytes()`` first, then the
message's own storage), ``SerializeToString`` copies it again, and parsing an
answer copies ``data`` out once more before numpy or torch sees it. Here a
request is ``b"".join([header, memoryview(tensor), trailer])``: the one copy
of the tensor's bytes is into the message gRPC sends. An answer is walked in
place; its output tensor is a ``memoryview`` slice of the received bytes
that the caller copies once into the array it returns.

The field numbers and types are read from the same descriptors as
``_proto`` (proto/qlayer/v1), and checked at import: a contract change this
codec does not know fails loudly here instead of mis-encoding. The unit test
(tests/e2e/python_wire_test.py) checks both directions against protobuf's own
serializer and parser.
"""

from google.protobuf import descriptor

from . import _proto

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_FD = descriptor.FieldDescriptor


def _fields(message_class, expected):
    """{name: number} for `expected` {name: (type, repeated)}, checked against the descriptor."""
    desc = message_class.DESCRIPTOR
    out = {}
    for name, (ftype, repeated) in expected.items():
        f = desc.fields_by_name.get(name)
        if f is None or f.type != ftype or (f.label == _FD.LABEL_REPEATED) != repeated:
            raise ImportError(f"qlayer.wire: {desc.full_name}.{name} is not the "
                              f"{'repeated ' if repeated else ''}type {ftype} this codec writes; "
                              "update client/python/qlayer/wire.py with the proto")
        out[name] = f.number
    return out


_TENSOR = _fields(_proto.Tensor, {
    "dtype": (_FD.TYPE_ENUM, False), "shape": (_FD.TYPE_INT64, True),
    "data": (_FD.TYPE_BYTES, False), "values": (_FD.TYPE_FLOAT, True)})
_FWD_REQ = _fields(_proto.ForwardRequest, {
    "request_id": (_FD.TYPE_UINT64, False), "layer": (_FD.TYPE_STRING, False),
    "input": (_FD.TYPE_MESSAGE, False), "output_encoding": (_FD.TYPE_ENUM, False),
    "timeout_us": (_FD.TYPE_INT64, False)})
_MOE_REQ = _fields(_proto.MoEForwardRequest, {
    "request_id": (_FD.TYPE_UINT64, False), "layer": (_FD.TYPE_STRING, False),
    "hidden_states": (_FD.TYPE_MESSAGE, False), "router_logits": (_FD.TYPE_MESSAGE, False),
    "topk_ids": (_FD.TYPE_MESSAGE, False), "topk_weights": (_FD.TYPE_MESSAGE, False),
    "return_routing": (_FD.TYPE_BOOL, False), "output_encoding": (_FD.TYPE_ENUM, False),
    "timeout_us": (_FD.TYPE_INT64, False)})
_FWD_RESP = _fields(_proto.ForwardResponse, {
    "request_id": (_FD.TYPE_UINT64, False), "output": (_FD.TYPE_MESSAGE, False),
    "kernel": (_FD.TYPE_STRING, False), "timing": (_FD.TYPE_MESSAGE, False),
    "error": (_FD.TYPE_MESSAGE, False), "batch_rows": (_FD.TYPE_INT64, False)})
_MOE_RESP = _fields(_proto.MoEForwardResponse, {
    "request_id": (_FD.TYPE_UINT64, False), "output": (_FD.TYPE_MESSAGE, False),
    "kernels": (_FD.TYPE_STRING, True), "timing": (_FD.TYPE_MESSAGE, False),
    "error": (_FD.TYPE_MESSAGE, False), "topk_ids": (_FD.TYPE_MESSAGE, False),
    "topk_weights": (_FD.TYPE_MESSAGE, False), "batch_rows": (_FD.TYPE_INT64, False)})
_TIMING = _fields(_proto.Timing, {
    "queue_us": (_FD.TYPE_INT64, False), "compute_us": (_FD.TYPE_INT64, False),
    "total_us": (_FD.TYPE_INT64, False)})
_STATUS = _fields(_proto.RpcStatus, {
    "code": (_FD.TYPE_INT32, False), "message": (_FD.TYPE_STRING, False)})
_STATUS_DETAILS = 3  # google.rpc.Status.details: repeated google.protobuf.Any
# google.protobuf.Any and google.rpc.ErrorInfo (proto/google/rpc/): public,
# fixed definitions; ErrorInfo is not in the qlayer.v1 descriptor set.
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_ERROR_INFO_URL = "type.googleapis.com/google.rpc.ErrorInfo"
_ERROR_INFO_REASON, _ERROR_INFO_DOMAIN = 1, 2
# An error detail that says the server is draining (layer_service.proto,
# ForwardResponse.error): Answer.draining.
_DRAINING = ("SERVER_DRAINING", "qlayer.v1")
_ENCODING_DATA = _proto.Encoding["ENCODING_DATA"]


def _varint(n):
    if n < 0:
        n += 1 << 64  # int64 / int32 negatives are ten-byte two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(field, wire_type):
    return _varint((field << 3) | wire_type)


def _len_field(field, payload_len):
    return _key(field, _LEN) + _varint(payload_len)


class WireTensor:
    """A tensor to send: a wire dtype code, a shape, and a buffer of exactly
    product(shape) little-endian elements (anything memoryview accepts,
    C-contiguous: a numpy array, a bytes object)."""

    __slots__ = ("dtype", "shape", "buffer")

    def __init__(self, dtype, shape, buffer):
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self.buffer = memoryview(buffer).cast("B")

    def parts(self, field):
        """The message bytes of this tensor as field `field`, in pieces for one join."""
        head = bytearray()
        if self.dtype:
            head += _key(_TENSOR["dtype"], _VARINT) + _varint(self.dtype)
        if self.shape:
            dims = b"".join(_varint(d) for d in self.shape)
            head += _len_field(_TENSOR["shape"], len(dims)) + dims
        n = self.buffer.nbytes
        if n:
            head += _len_field(_TENSOR["data"], n)
        return [_len_field(field, len(head) + n), bytes(head), self.buffer]


def encode_forward_request(request_id, layer, x, timeout_us=0):
    """ForwardRequest bytes; `x` a WireTensor. The one copy of x's bytes is the join."""
    layer_b = layer.encode()
    head = (_key(_FWD_REQ["request_id"], _VARINT) + _varint(request_id)
            + _len_field(_FWD_REQ["layer"], len(layer_b)) + layer_b)
    tail = _key(_FWD_REQ["output_encoding"], _VARINT) + _varint(_ENCODING_DATA)
    if timeout_us:
        tail += _key(_FWD_REQ["timeout_us"], _VARINT) + _varint(timeout_us)
    return b"".join([head, *x.parts(_FWD_REQ["input"]), tail])


def encode_moe_request(request_id, layer, hidden, *, router_logits=None, topk_ids=None,
                       topk_weights=None, return_routing=False, timeout_us=0):
    """MoEForwardRequest bytes; tensors are WireTensors (or None)."""
    layer_b = layer.encode()
    parts = [_key(_MOE_REQ["request_id"], _VARINT) + _varint(request_id)
             + _len_field(_MOE_REQ["layer"], len(layer_b)) + layer_b]
    parts += hidden.parts(_MOE_REQ["hidden_states"])
    for name, t in (("router_logits", router_logits), ("topk_ids", topk_ids),
                    ("topk_weights", topk_weights)):
        if t is not None:
            parts += t.parts(_MOE_REQ[name])
    tail = _key(_MOE_REQ["output_encoding"], _VARINT) + _varint(_ENCODING_DATA)
    if return_routing:
        tail += _key(_MOE_REQ["return_routing"], _VARINT) + b"\x01"
    if timeout_us:
        tail += _key(_MOE_REQ["timeout_us"], _VARINT) + _varint(timeout_us)
    parts.append(tail)
    return b"".join(parts)


def _read_varint(mv, i):
    n = shift = 0
    while True:
        b = mv[i]
        i += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _walk(mv):
    """Yields (field, wire_type, value): ints for varints, memoryview slices for LEN."""
    i, end = 0, len(mv)
    while i < end:
        k, i = _read_varint(mv, i)
        field, wt = k >> 3, k & 7
        if wt == _VARINT:
            v, i = _read_varint(mv, i)
        elif wt == _LEN:
            n, i = _read_varint(mv, i)
            if i + n > end:
                raise ValueError(f"field {field}: {n} bytes past the end of the message")
            v, i = mv[i:i + n], i + n
        elif wt == _I64:
            v, i = mv[i:i + 8], i + 8
        elif wt == _I32:
            v, i = mv[i:i + 4], i + 4
        else:
            raise ValueError(f"field {field}: unsupported wire type {wt}")
        if i > end:
            raise ValueError(f"field {field} runs past the end of the message")
        yield field, wt, v


def _int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class RawTensor:
    """A decoded answer tensor: wire dtype code, shape, and either `data`
    (a memoryview into the received message) or `values` (floats, the JSON
    form)."""

    __slots__ = ("dtype", "shape", "data", "values")

    def __init__(self):
        self.dtype, self.shape, self.data, self.values = 0, [], None, None


def _tensor(mv):
    t = RawTensor()
    for field, wt, v in _walk(mv):
        if field == _TENSOR["dtype"] and wt == _VARINT:
            t.dtype = v
        elif field == _TENSOR["shape"]:
            if wt == _VARINT:
                t.shape.append(_int64(v))
            else:
                j = 0
                while j < len(v):
                    d, j = _read_varint(v, j)
                    t.shape.append(_int64(d))
        elif field == _TENSOR["data"] and wt == _LEN:
            t.data = v
        elif field == _TENSOR["values"]:
            import numpy as np  # rare: only a server answering in the values form
            more = np.frombuffer(v, "<f4") if wt in (_LEN, _I32) else []
            t.values = more if t.values is None else np.concatenate([t.values, more])
    return t


class Answer:
    """One decoded ForwardResponse or MoEForwardResponse."""

    __slots__ = ("request_id", "output", "kernel", "queue_us", "compute_us", "total_us",
                 "batch_rows", "error_code", "error_message", "draining", "topk_ids",
                 "topk_weights")

    def __init__(self):
        self.request_id = 0
        self.output = self.topk_ids = self.topk_weights = None
        self.kernel = ""
        self.queue_us = self.compute_us = self.total_us = self.batch_rows = 0
        self.error_code, self.error_message = 0, ""
        # The error carries the SERVER_DRAINING marker: the request was refused
        # (not computed) and the stream should take no more requests.
        self.draining = False


def _error_info(any_mv):
    """(reason, domain) of a google.protobuf.Any holding a google.rpc.ErrorInfo, else None."""
    url = value = None
    for f, w, x in _walk(any_mv):
        if w == _LEN and f == _ANY_TYPE_URL:
            url = bytes(x).decode("utf-8", "replace")
        elif w == _LEN and f == _ANY_VALUE:
            value = x
    if url != _ERROR_INFO_URL or value is None:
        return None
    reason = domain = ""
    for f, w, x in _walk(value):
        if w == _LEN and f == _ERROR_INFO_REASON:
            reason = bytes(x).decode("utf-8", "replace")
        elif w == _LEN and f == _ERROR_INFO_DOMAIN:
            domain = bytes(x).decode("utf-8", "replace")
    return reason, domain


def _decode(raw, numbers, kernel_field):
    mv = memoryview(raw)
    a = Answer()
    kernels = []
    for field, wt, v in _walk(mv):
        if field == numbers["request_id"] and wt == _VARINT:
            a.request_id = v
        elif field == numbers["output"] and wt == _LEN:
            a.output = _tensor(v)
        elif field == numbers[kernel_field] and wt == _LEN:
            kernels.append(bytes(v).decode("utf-8", "replace"))
        elif field == numbers["timing"] and wt == _LEN:
            for f, w, x in _walk(v):
                if w != _VARINT:
                    continue
                if f == _TIMING["queue_us"]:
                    a.queue_us = _int64(x)
                elif f == _TIMING["compute_us"]:
                    a.compute_us = _int64(x)
                elif f == _TIMING["total_us"]:
                    a.total_us = _int64(x)
        elif field == numbers["error"] and wt == _LEN:
            for f, w, x in _walk(v):
                if f == _STATUS["code"] and w == _VARINT:
                    a.error_code = _int64(x)
                elif f == _STATUS["message"] and w == _LEN:
                    a.error_message = bytes(x).decode("utf-8", "replace")
                elif f == _STATUS_DETAILS and w == _LEN:
                    a.draining = a.draining or _error_info(x) == _DRAINING
        elif field == numbers["batch_rows"] and wt == _VARINT:
            a.batch_rows = _int64(v)
        elif "topk_ids" in numbers and field == numbers["topk_ids"] and wt == _LEN:
            a.topk_ids = _tensor(v)
        elif "topk_weights" in numbers and field == numbers["topk_weights"] and wt == _LEN:
            a.topk_weights = _tensor(v)
    a.kernel = "; ".join(kernels)
    return a


def decode_forward_response(raw):
    """ForwardResponse bytes -> Answer (output.data is a view into `raw`)."""
    return _decode(raw, _FWD_RESP, "kernel")


def decode_moe_response(raw):
    """MoEForwardResponse bytes -> Answer (kernels joined with '; ')."""
    return _decode(raw, _MOE_RESP, "kernels")
