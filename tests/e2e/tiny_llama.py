"""A tiny Llama-style decoder in plain torch, and what the offload test and
benchmark need around it: safetensors files, an independent dequantizer of
qlayer-quantize's canonical dump, and qlayer-server / qlayer-quantize runs.

The model names its modules as Hugging Face checkpoints do
(model.layers.L.self_attn.{q,k,v,o}_proj, .mlp.{gate,up,down}_proj, and for
Mixtral-style MoE layers .block_sparse_moe.gate / .experts.e.{w1,w2,w3}),
so that qlayer.torch_modules.offload finds the server's layers by module
path. Independent layers go through parallel_forward (q/k/v, gate/up): local
modules run in order, remote ones overlap. Inference only, batch of one or
more sequences of equal length, with a KV cache for decode steps.
"""

import dataclasses
import json
import math
import os
import re
import signal
import struct
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F

from qlayer.torch_modules import parallel_forward

# False: independent projections are called one after another even when
# remote (the benchmark's "sequential" case).
PIPELINE = True


def _independent(modules, x):
    return parallel_forward(modules, x) if PIPELINE else [m(x) for m in modules]


@dataclasses.dataclass
class Config:
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    layers: int = 2
    moe_layers: tuple = (1,)   # decoder layers whose MLP is a Mixtral-style MoE block
    experts: int = 4
    top_k: int = 2
    moe_intermediate: int = 64
    vocab: int = 97
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self):
        return self.hidden // self.heads


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * h).to(x.dtype)


def _rope(x, pos, theta):
    """x [B, heads, T, D] rotated by absolute positions pos [T] (rotate_half form)."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    ang = pos.float()[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(x.dtype)
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Attention(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = torch.nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k_proj = torch.nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.v_proj = torch.nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.o_proj = torch.nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)

    def forward(self, x, cache, pos):
        c = self.c
        b, t, _ = x.shape
        q, k, v = _independent([self.q_proj, self.k_proj, self.v_proj], x)
        q = _rope(q.view(b, t, c.heads, c.head_dim).transpose(1, 2), pos, c.rope_theta)
        k = _rope(k.view(b, t, c.kv_heads, c.head_dim).transpose(1, 2), pos, c.rope_theta)
        v = v.view(b, t, c.kv_heads, c.head_dim).transpose(1, 2)
        if cache:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        cache[:] = [k, v]
        rep = c.heads // c.kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(c.head_dim)
        total = k.shape[2]
        causal = torch.arange(total)[None, :] > (total - t + torch.arange(t))[:, None]
        p = s.masked_fill(causal, float("-inf")).softmax(-1)
        o = (p @ v.float()).to(x.dtype).transpose(1, 2).reshape(b, t, -1)
        return self.o_proj(o)


class MLP(torch.nn.Module):
    def __init__(self, hidden, inter, names=("gate_proj", "up_proj", "down_proj")):
        super().__init__()
        self._names = names
        for n, (i, o) in zip(names, ((hidden, inter), (hidden, inter), (inter, hidden))):
            self.add_module(n, torch.nn.Linear(i, o, bias=False))

    def forward(self, x):
        gate, up, down = (getattr(self, n) for n in self._names)
        g, u = _independent([gate, up], x)
        return down(F.silu(g) * u)


class SparseMoeBlock(torch.nn.Module):
    """Mixtral's block: softmax over the router logits (float32), top-k,
    renormalised, experts w2(silu(w1 x) * w3 x). Returns the tensor only."""

    def __init__(self, c):
        super().__init__()
        self.top_k = c.top_k
        self.gate = torch.nn.Linear(c.hidden, c.experts, bias=False)
        self.experts = torch.nn.ModuleList(
            [MLP(c.hidden, c.moe_intermediate, ("w1", "w3", "w2")) for _ in range(c.experts)])

    def forward(self, x):
        h = x.reshape(-1, x.shape[-1])
        p = self.gate(h).float().softmax(-1)
        w, ids = p.topk(self.top_k, -1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros(h.shape, dtype=torch.float32)
        for e, expert in enumerate(self.experts):
            rows, slot = (ids == e).nonzero(as_tuple=True)
            if rows.numel():
                out[rows] += w[rows, slot, None] * expert(h[rows]).float()
        return out.to(x.dtype).reshape(x.shape)


class DecoderLayer(torch.nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        if moe:
            self.block_sparse_moe = SparseMoeBlock(c)
        else:
            self.mlp = MLP(c.hidden, c.intermediate)

    def forward(self, x, cache, pos):
        x = x + self.self_attn(self.input_layernorm(x), cache, pos)
        ffn = self.block_sparse_moe if hasattr(self, "block_sparse_moe") else self.mlp
        return x + ffn(self.post_attention_layernorm(x))


class Decoder(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(c.vocab, c.hidden)
        self.layers = torch.nn.ModuleList(
            [DecoderLayer(c, i in c.moe_layers) for i in range(c.layers)])
        self.norm = RMSNorm(c.hidden, c.eps)


class TinyLlama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Decoder(c)

    def new_cache(self):
        return [[] for _ in self.model.layers]

    @torch.no_grad()
    def forward(self, ids, cache, start, dtype=torch.float32):
        """ids [B, T] at positions start..start+T-1 -> hidden states after each
        layer, and after the final norm (float32 copies)."""
        pos = torch.arange(start, start + ids.shape[1])
        x = self.model.embed_tokens(ids).to(dtype)
        states = []
        for layer, kv in zip(self.model.layers, cache):
            x = layer(x, kv, pos)
            states.append(x.float())
        states.append(self.model.norm(x).float())
        return states


def linear_names(c):
    """Every Linear of the model: module path -> (out_features, in_features)."""
    out = {}
    for L in range(c.layers):
        p = f"model.layers.{L}"
        hd = c.head_dim
        out[f"{p}.self_attn.q_proj"] = (c.heads * hd, c.hidden)
        out[f"{p}.self_attn.k_proj"] = (c.kv_heads * hd, c.hidden)
        out[f"{p}.self_attn.v_proj"] = (c.kv_heads * hd, c.hidden)
        out[f"{p}.self_attn.o_proj"] = (c.hidden, c.heads * hd)
        if L in c.moe_layers:
            out[f"{p}.block_sparse_moe.gate"] = (c.experts, c.hidden)
            for e in range(c.experts):
                q = f"{p}.block_sparse_moe.experts.{e}"
                out[f"{q}.w1"] = (c.moe_intermediate, c.hidden)
                out[f"{q}.w3"] = (c.moe_intermediate, c.hidden)
                out[f"{q}.w2"] = (c.hidden, c.moe_intermediate)
        else:
            out[f"{p}.mlp.gate_proj"] = (c.intermediate, c.hidden)
            out[f"{p}.mlp.up_proj"] = (c.intermediate, c.hidden)
            out[f"{p}.mlp.down_proj"] = (c.hidden, c.intermediate)
    return out


def random_weights(c, gen):
    """Dense weights written by the test: Linear weights ~ N(0, 1/K) (unit-scale
    activations), router gates ~ N(0, 4/H) (decisive routing, as trained
    models have), norms near one, embeddings N(0, 1)."""
    w = {}
    for name, (n, k) in linear_names(c).items():
        std = 2.0 / math.sqrt(k) if name.endswith(".gate") else 1.0 / math.sqrt(k)
        w[name + ".weight"] = torch.randn(n, k, generator=gen) * std
    for L in range(c.layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            w[f"model.layers.{L}.{norm}.weight"] = 1 + 0.1 * torch.randn(c.hidden, generator=gen)
    w["model.norm.weight"] = 1 + 0.1 * torch.randn(c.hidden, generator=gen)
    w["model.embed_tokens.weight"] = torch.randn(c.vocab, c.hidden, generator=gen)
    return w


def load_weights(model, weights):
    """Copies `weights` (name -> tensor, nn.Linear layout) into the model."""
    missing = model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing


# safetensors, read and written here (the format: FORMATS.md §7).

_ST_DTYPES = {"F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"),
              "BF16": (torch.bfloat16, "<i2"), "I32": (torch.int32, "<i4"),
              "I64": (torch.int64, "<i8")}
_ST_NAMES = {t: n for n, (t, _) in _ST_DTYPES.items()}


def write_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        t = t.detach().contiguous()
        b = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    """(name -> torch tensor, metadata dict)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype, np_dtype = _ST_DTYPES[e["dtype"]]
        b, t = e["data_offsets"]
        a = np.frombuffer(buf[b:t], np_dtype).reshape(e["shape"]).copy()
        out[name] = torch.from_numpy(a).view(dtype) if e["dtype"] == "BF16" else torch.from_numpy(a)
    return out, header.get("__metadata__", {})


def dequantize(dump, meta, name):
    """W [N, K] (nn.Linear layout) in float32 from qlayer-quantize's canonical
    dump (DESIGN.md): w[k][n] = (q[k][n] - z[g(k)][n]) * s[g(k)][n], q packed
    along K in int32 words (value k in bits (k % pack) * bits ...)."""
    info = json.loads(meta["qlayer.layer." + name])
    if name + ".dense" in dump:
        return dump[name + ".dense"].float()
    K, N = info["K"], info["N"]
    bits = 8 if info["wtype"].startswith("uint8") else 4
    pack = 32 // bits
    words = dump[name + ".qweight"].numpy().view(np.uint32)            # [K / pack, N]
    k = np.arange(K)
    shifts = (bits * (k % pack)).astype(np.uint32)[:, None]
    q = (words[k // pack, :] >> shifts) & np.uint32((1 << bits) - 1)  # [K, N]
    group = info.get("group_size") or K
    group = K if group <= 0 else group
    g = dump[name + ".g_idx"].numpy() if name + ".g_idx" in dump else k // group
    if name + ".zeros" in dump:
        z = dump[name + ".zeros"].double().numpy()[g, :]
    else:
        z = 8.0 if bits == 4 else 128.0
    s = dump[name + ".scales"].double().numpy()[g, :]
    w = torch.from_numpy(((q.astype(np.float64) - z) * s).T.copy()).float()
    assert tuple(w.shape) == (N, K), (name, tuple(w.shape), (N, K))
    return w


# The programs.

def quantize(build, dense_path, out_dir, dump_path, seed, extra=()):
    tool = os.path.join(build, "server", "qlayer-quantize")
    cmd = [tool, "--format=gptq", "--bits=4", "--group_size=32", f"--seed={seed}",
           f"--from={dense_path}", f"--out={out_dir}", f"--dump_canonical={dump_path}", *extra]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}")
    return r.stdout


class Server:
    """A qlayer-server process; restart() brings one back on the same port."""

    def __init__(self, build, model_dir, log_path, extra=()):
        self.binary = os.path.join(build, "server", "qlayer-server")
        self.model_dir, self.log_path, self.extra = model_dir, log_path, list(extra)
        self.proc, self.port, self.starts, self._mark = None, 0, 0, 0
        self.metrics_address = None  # host:port of /metrics, learnt with the port

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def start(self, wait=True):
        self.starts += 1
        self.log = open(self.log_path, "a")
        self.log.write(f"--- start {self.starts} on port {self.port}\n")
        self.log.flush()
        self._mark = mark = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen(
            [self.binary, "--model", self.model_dir, "--listen", f"127.0.0.1:{self.port}",
             "--metrics-listen", "127.0.0.1:0", *self.extra],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if wait:
            self.wait_listening(mark)

    def wait_listening(self, mark=None, timeout=60):
        """Waits for the latest start's 'listening on' line; learns the port
        and the metrics address."""
        mark = self._mark if mark is None else mark
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with open(self.log_path) as f:
                f.seek(mark)
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)(?: metrics (\S+))?", f.read())
            if m:
                self.port = int(m.group(1))
                self.metrics_address = m.group(2)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        with open(self.log_path) as f:
            raise RuntimeError(f"qlayer-server did not start:\n{f.read()}")

    def kill(self):
        """SIGKILL: no drain, no goodbye; streams just break."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
