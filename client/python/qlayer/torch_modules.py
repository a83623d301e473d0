"""PyTorch modules whose weights live on a qlayer-server.

    import qlayer, qlayer.torch_modules as qt
    client = qlayer.Client("127.0.0.1:50051")
    replaced = qt.offload(model, client, ["model.layers.*.self_attn.*_proj",
                                          "model.layers.*.mlp.*"])
    y = model(x)                     # the offloaded layers run on the server

``RemoteLinear`` replaces a ``torch.nn.Linear`` ([..., K] -> [..., N]) and
``RemoteMoE`` an MoE block ([..., H] -> [..., H]); ``offload`` swaps every
submodule whose module path (the name the checkpoint uses) matches one of
the patterns and that the server serves. Both keep the call signature of
what they replace and add ``forward_async`` (a Future of the output) so a
frontend can overlap independent layers: ``parallel_forward([q, k, v], x)``
sends all three before waiting on any.

The input's own dtype travels: float16 -> f16, bfloat16 -> bf16 (its bits,
through an int16 view: numpy has no bfloat16), float32 -> f32 (float64 is
sent as f32), and the answer comes back in that dtype on the input's device.
``wire_dtype="f16"`` sends a float32 model's activations at half the bytes.
The tensor's bytes are copied once into the request and the answer's once
into the output tensor (qlayer.wire). Inference only: outputs carry no
autograd history.

Failures: per-call ``timeout`` (the module's default, or ``module(x,
timeout=...)``); when the server restarts the client re-sends unanswered
calls (Client.retry_timeout); a call that fails raises qlayer.QlayerError
with the gRPC code and the server's message.
"""

import concurrent.futures
import fnmatch
import sys
import threading
import time

import numpy as np
import torch

from . import _proto
from .tensors import from_raw
from .wire import WireTensor

if sys.byteorder != "little":  # the wire is little-endian; numpy views here are native
    raise ImportError("qlayer.torch_modules needs a little-endian host")

# torch dtype -> (wire dtype code, numpy dtype of the same bits)
_WIRE_OF_TORCH = {
    torch.float16: (_proto.DType["DTYPE_F16"], np.dtype("<f2")),
    torch.bfloat16: (_proto.DType["DTYPE_BF16"], np.dtype("<i2")),
    torch.float32: (_proto.DType["DTYPE_F32"], np.dtype("<f4")),
}
_TORCH_OF_NAME = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
# transformers' MoE blocks that return (hidden_states, router_logits).
_TUPLE_MOE_CLASSES = frozenset({"MixtralSparseMoeBlock", "Qwen2MoeSparseMoeBlock",
                                "Qwen3MoeSparseMoeBlock"})


def _wire_tensor(x2d):
    """A contiguous CPU tensor of a wire dtype -> WireTensor over its own memory."""
    code, _ = _WIRE_OF_TORCH[x2d.dtype]
    a = x2d.view(torch.int16).numpy() if x2d.dtype == torch.bfloat16 else x2d.numpy()
    return WireTensor(code, x2d.shape, a)


def _torch_decoder(wire_torch_dtype, shape, out_dtype, device):
    """decode(RawTensor) -> tensor of `shape`, `out_dtype` on `device`: one copy
    from the message into a fresh tensor (then a cast / device move if asked)."""
    code, np_dtype = _WIRE_OF_TORCH[wire_torch_dtype]

    def decode(t):
        if t.values is not None or t.dtype != code:
            y = torch.from_numpy(np.ascontiguousarray(from_raw(t)))  # rare: another form
        else:
            count = 1
            for d in t.shape:
                count *= d
            nbytes = 0 if t.data is None else t.data.nbytes
            if nbytes != count * np_dtype.itemsize:
                raise ValueError(f"answer {list(t.shape)} has {nbytes} bytes, expected "
                                 f"{count * np_dtype.itemsize}")
            y = torch.empty(tuple(t.shape), dtype=wire_torch_dtype)
            if count:
                out = y.view(torch.int16) if wire_torch_dtype == torch.bfloat16 else y
                out.numpy()[...] = np.frombuffer(t.data, np_dtype).reshape(tuple(t.shape))
        y = y.reshape(shape)
        if y.dtype != out_dtype or y.device != device:
            y = y.to(device=device, dtype=out_dtype)
        return y

    return decode


def _prepare(x, features, wire_dtype, what):
    """x [..., features] -> (contiguous CPU [M, features] of the wire dtype, lead shape)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0 or x.shape[-1] != features:
        raise ValueError(f"{what}: input has shape {list(x.shape)}, expected [..., {features}]")
    if wire_dtype is not None:
        wt = _TORCH_OF_NAME[wire_dtype]
    elif x.dtype in _WIRE_OF_TORCH:
        wt = x.dtype
    elif x.dtype == torch.float64:
        wt = torch.float32
    else:
        raise TypeError(f"{what}: dtype {x.dtype} has no wire dtype (float16, bfloat16, "
                        "float32, float64)")
    x2 = x.detach()
    if x2.device.type != "cpu":
        x2 = x2.to("cpu")
    if x2.dtype != wt:
        x2 = x2.to(wt)
    return x2.reshape(-1, features).contiguous(), tuple(x.shape[:-1])


def _done_future(value):
    f = concurrent.futures.Future()
    f.set_result(value)
    return f


class CallStats:
    """Sums over a module's answered calls of ForwardInfo's timings (microseconds)."""

    FIELDS = ("latency_us", "encode_us", "decode_us", "queue_us", "compute_us", "total_us")

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        with self._lock:
            self.calls = 0
            self.retried = 0
            self.sums = dict.fromkeys(self.FIELDS, 0)
            self.last = None

    def add(self, info):
        with self._lock:
            self.calls += 1
            self.retried += info.attempts > 1
            for f in self.FIELDS:
                self.sums[f] += getattr(info, f)
            self.last = info


class _Remote(torch.nn.Module):
    def _chain(self, inner, finish):
        """A Future of finish(answer) that records the answer's timings."""
        out = concurrent.futures.Future()

        def done(f):
            try:
                y, info = f.result()
            except BaseException as e:  # noqa: B902 -- QlayerError or a decode error
                out.set_exception(e)
                return
            self.stats.add(info)
            out.set_result(finish(y))

        inner.add_done_callback(done)
        return out

    def forward(self, *args, **kwargs):
        return self.forward_async(*args, **kwargs).result()


class RemoteLinear(_Remote):
    """y = x W^T + b with W on the server: a drop-in for torch.nn.Linear.

    client: a qlayer.Client; layer: the server's layer name (module path in
    the checkpoint). timeout: default per-call deadline in seconds. lane:
    which stream of this layer carries the calls (modules sharing a layer
    from several threads may use different lanes). wire_dtype: "f16" |
    "bf16" | "f32" to convert activations for the wire (default: their own).
    in_features / out_features: given, the constructor trusts them; else it
    asks the server (DescribeLayer)."""

    def __init__(self, client, layer, *, in_features=None, out_features=None, timeout=None,
                 lane=0, wire_dtype=None):
        super().__init__()
        if wire_dtype is not None and wire_dtype not in _TORCH_OF_NAME:
            raise ValueError(f"wire_dtype {wire_dtype!r} is not one of {sorted(_TORCH_OF_NAME)}")
        if in_features is None or out_features is None:
            info = client.describe_layer(layer)
            if info.kind != "linear":
                raise ValueError(f"{layer} is a {info.kind!r} layer on {client.address}, "
                                 "not a linear one")
            in_features, out_features = info.in_features, info.out_features
        self.client, self.layer = client, layer
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.timeout, self.lane, self.wire_dtype = timeout, lane, wire_dtype
        self.stats = CallStats()

    def extra_repr(self):
        return (f"layer={self.layer!r}, in_features={self.in_features}, "
                f"out_features={self.out_features}, server={self.client.address!r}")

    def forward_async(self, x, *, timeout=None):
        """A Future of y [..., out_features] (x's dtype and device)."""
        start = time.perf_counter()
        x2, lead = _prepare(x, self.in_features, self.wire_dtype, self.layer)
        shape = lead + (self.out_features,)
        out_dtype = torch.float64 if x.dtype == torch.float64 else x.dtype
        if x2.shape[0] == 0:
            return _done_future(torch.empty(shape, dtype=out_dtype, device=x.device))
        decode = _torch_decoder(x2.dtype, shape, out_dtype, x.device)
        inner = self.client.forward_raw_async(
            self.layer, _wire_tensor(x2), decode,
            timeout=self.timeout if timeout is None else timeout, lane=self.lane, start=start)
        return self._chain(inner, lambda y: y)


class RemoteMoE(_Remote):
    """An MoE block on the server: [..., H] -> [..., H].

    block: the server's name of the block (e.g. model.layers.1.block_sparse_moe).
    gate: optional local router (torch.nn.Linear [E, H]): its logits (float32)
    are sent as router_logits, else the server routes with the gate it loaded.
    return_router_logits: return (y, router_logits [T, E]) as transformers'
    Mixtral / Qwen2-MoE blocks do (needs `gate`)."""

    def __init__(self, client, block, *, hidden_size=None, gate=None, return_router_logits=False,
                 timeout=None, lane=0, wire_dtype=None):
        super().__init__()
        if return_router_logits and gate is None:
            raise ValueError(f"{block}: return_router_logits needs a local gate")
        if wire_dtype is not None and wire_dtype not in _TORCH_OF_NAME:
            raise ValueError(f"wire_dtype {wire_dtype!r} is not one of {sorted(_TORCH_OF_NAME)}")
        if hidden_size is None:
            info = client.describe_layer(block)
            if info.kind != "moe":
                raise ValueError(f"{block} is a {info.kind!r} layer on {client.address}, "
                                 "not an MoE block")
            hidden_size = info.in_features
        self.client, self.block = client, block
        self.hidden_size = int(hidden_size)
        self.gate = gate
        self.return_router_logits = return_router_logits
        self.timeout, self.lane, self.wire_dtype = timeout, lane, wire_dtype
        self.stats = CallStats()

    def extra_repr(self):
        return (f"block={self.block!r}, hidden_size={self.hidden_size}, "
                f"router={'local' if self.gate is not None else 'server'}, "
                f"server={self.client.address!r}")

    def forward_async(self, hidden_states, *, timeout=None):
        """A Future of y [..., H] (or (y, router_logits) with return_router_logits)."""
        start = time.perf_counter()
        x = hidden_states
        x2, lead = _prepare(x, self.hidden_size, self.wire_dtype, self.block)
        out_dtype = torch.float64 if x.dtype == torch.float64 else x.dtype
        logits = None
        if self.gate is not None:
            with torch.no_grad():
                logits = self.gate(x.reshape(-1, self.hidden_size)).float()
        if x2.shape[0] == 0:
            y = torch.empty(lead + (self.hidden_size,), dtype=out_dtype, device=x.device)
            return _done_future((y, logits) if self.return_router_logits else y)
        decode = _torch_decoder(x2.dtype, lead + (self.hidden_size,), out_dtype, x.device)
        routing = {}
        if logits is not None:
            routing["router_logits"] = _wire_tensor(logits.detach().cpu().contiguous())
        inner = self.client.moe_forward_raw_async(
            self.block, _wire_tensor(x2), decode,
            timeout=self.timeout if timeout is None else timeout, lane=self.lane, start=start,
            **routing)
        if self.return_router_logits:
            return self._chain(inner, lambda y: (y, logits))
        return self._chain(inner, lambda y: y)


def parallel_forward(modules, x, **kwargs):
    """[m(x) for m in modules], with every remote module's call sent before
    waiting on any (q/k/v, gate/up): their server times overlap. Local
    modules run in order meanwhile."""
    futures = [m.forward_async(x, **kwargs) if isinstance(m, _Remote) else None for m in modules]
    return [f.result() if f is not None else m(x) for m, f in zip(modules, futures)]


def _set_submodule(model, path, module):
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def offload(model, client, patterns, *, timeout=None, lane=0, wire_dtype=None,
            name_map=None, strict=False, moe_local_router=None):
    """Replaces every submodule of `model` whose module path matches one of
    `patterns` (fnmatch globs, e.g. "model.layers.*.mlp.*_proj") and which
    the server serves, by a RemoteLinear (served kind "linear") or RemoteMoE
    ("moe"); returns {path: new module}. The replaced modules' weights are
    dropped from the model.

    name_map(path) -> server name, when the model's paths differ from the
    checkpoint's (e.g. a wrapper's prefix). strict: a matching nn.Linear the
    server does not serve is an error (default: it stays local).
    moe_local_router: keep the block's own `gate` and send its logits (True),
    let the server route (False); None = keep it where the block must return
    router logits (transformers' Mixtral / Qwen-MoE blocks)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    served = {s.name: s for s in client.list_layers()}
    replaced = {}
    for name, module in list(model.named_modules()):
        if not name or any(name.startswith(p + ".") for p in replaced):
            continue  # the model itself, or inside a block already replaced
        if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        remote_name = name_map(name) if name_map else name
        s = served.get(remote_name)
        if s is None:
            if strict and isinstance(module, torch.nn.Linear):
                raise ValueError(f"offload: {name} matches {patterns} but {client.address} "
                                 f"does not serve {remote_name!r}")
            continue
        if s.kind == "linear":
            if isinstance(module, torch.nn.Linear) and (
                    module.in_features, module.out_features) != (s.in_features, s.out_features):
                raise ValueError(
                    f"offload: {name} is Linear({module.in_features} -> {module.out_features}) "
                    f"but the server's {remote_name} is {s.in_features} -> {s.out_features}")
            new = RemoteLinear(client, remote_name, in_features=s.in_features,
                               out_features=s.out_features, timeout=timeout, lane=lane,
                               wire_dtype=wire_dtype)
        elif s.kind == "moe":
            tuple_out = type(module).__name__ in _TUPLE_MOE_CLASSES
            local = tuple_out if moe_local_router is None else moe_local_router
            gate = getattr(module, "gate", None) if local else None
            if local and not isinstance(gate, torch.nn.Module):
                raise ValueError(f"offload: {name} has no `gate` module for a local router")
            new = RemoteMoE(client, remote_name, hidden_size=s.in_features, gate=gate,
                            return_router_logits=tuple_out and gate is not None,
                            timeout=timeout, lane=lane, wire_dtype=wire_dtype)
        else:
            raise ValueError(f"offload: {remote_name} has unknown kind {s.kind!r}")
        new.train(module.training)
        _set_submodule(model, name, new)
        replaced[name] = new
    if not replaced:
        raise ValueError(f"offload: no submodule matches {patterns} and is served by "
                         f"{client.address} (it serves {sorted(served)[:8]}"
                         f"{'...' if len(served) > 8 else ''})")
    return replaced
