#!/usr/bin/python3
"""Offload from PyTorch: per decode step, local vs offloaded to qlayer-server.

Two models, both Llama-style decoders from tests/e2e/tiny_llama.py with
random weights quantized by qlayer-quantize (GPTQ 4-bit):
  tiny   the end-to-end test's model: H 64, 2 layers (attention + MLP, and a
         Mixtral MoE block of 4 experts, top-2), group 32;
  4096   one decoder layer of Llama-2-7B's shape: H 4096, 32 heads,
         MLP 11008, group 128 (q/k/v/o 4096x4096, gate/up 11008x4096,
         down 4096x11008).
For each: a prompt of 8 tokens, then decode steps of one token (batch 1)
with a KV cache, timed one by one:
  local       torch float32 with the weights dequantized from the checkpoint;
  sequential  every quantized layer a RemoteLinear / RemoteMoE, called one
              after another;
  pipelined   the same, with q/k/v and gate/up sent together
              (parallel_forward) before any answer is awaited.
Per remote call the answers' timing fields give the breakdown: encode
(torch -> request bytes) and decode (answer -> torch) measured in the
client, queue and compute from the server, server other = its total minus
those, transport = the rest of the client-measured latency (gRPC in Python,
loopback TCP, thread hand-offs).

    PYTHONPATH=client/python QLAYER_PROTO_DESCRIPTORS=build/client/python/qlayer_v1.desc \\
      /usr/bin/python3 client/python/bench_offload.py --build build [--steps 64] [--only tiny]

Prints a Markdown section (machine, date, command, tables) to stdout.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "e2e"))
import tiny_llama as tl  # noqa: E402

import qlayer  # noqa: E402
import qlayer.torch_modules as qt  # noqa: E402

PROMPT = 8
PATTERNS = ["model.layers.*.self_attn.*_proj", "model.layers.*.mlp.*_proj",
            "model.layers.*.block_sparse_moe"]
# name: (config, group size, local torch threads). The tiny model's ops are
# microseconds long: a second OpenMP thread only adds wake-ups (measured 68 ms
# a step with 2 threads vs 1 ms with 1 on the loaded 2-vCPU machine of
# BENCHMARKS.md).
MODELS = {
    "tiny": (tl.Config(), 32, 1),
    "4096": (tl.Config(hidden=4096, heads=32, kv_heads=32, intermediate=11008, layers=1,
                       moe_layers=(), vocab=256), 128, os.cpu_count()),
}


def build_checkpoint(name, c, group, work, build, seed):
    """Random weights -> dense.safetensors -> GPTQ checkpoint; returns the
    model's local float32 weights (linears dequantized from the dump)."""
    dense = tl.random_weights(c, torch.Generator().manual_seed(seed))
    linears = tl.linear_names(c)
    to_quantize = {k: (v.half() if k.endswith(".gate.weight") else v)
                   for k, v in dense.items() if k[:-len(".weight")] in linears}
    tl.write_safetensors(f"{work}/dense.safetensors", to_quantize)
    del to_quantize
    ckpt = f"{work}/model"
    tool = os.path.join(build, "server", "qlayer-quantize")
    r = subprocess.run([tool, "--format=gptq", "--bits=4", f"--group_size={group}",
                        f"--seed={seed}", f"--from={work}/dense.safetensors", f"--out={ckpt}",
                        f"--dump_canonical={work}/canonical.safetensors",
                        "--keep_dense=*.block_sparse_moe.gate"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        raise RuntimeError(r.stdout)
    if c.moe_layers:
        with open(f"{ckpt}/config.json") as f:
            config = json.load(f)
        config.update(model_type="mixtral", hidden_size=c.hidden, num_local_experts=c.experts,
                      num_experts_per_tok=c.top_k, intermediate_size=c.moe_intermediate)
        with open(f"{ckpt}/config.json", "w") as f:
            json.dump(config, f)
    dump, meta = tl.read_safetensors(f"{work}/canonical.safetensors")
    stored, _ = tl.read_safetensors(f"{ckpt}/model.safetensors")
    weights = dict(dense)
    for lin in linears:
        if lin.endswith(".gate"):
            weights[lin + ".weight"] = stored[lin + ".weight"].float()
        else:
            weights[lin + ".weight"] = tl.dequantize(dump, meta, lin)
    os.remove(f"{work}/canonical.safetensors")
    os.remove(f"{work}/dense.safetensors")
    return weights, ckpt


def decode_steps(model, c, steps, seed, remotes=()):
    """Prompt, then `steps` one-token steps: (wall ms per step, per-step
    lists of ForwardInfo of the remote calls)."""
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(0, c.vocab, size=(1, PROMPT + steps)))
    cache = model.new_cache()
    model(ids[:, :PROMPT], cache, 0)
    walls, infos = [], []
    for i in range(steps):
        for m in remotes:
            m.stats.reset()
        t0 = time.perf_counter()
        model(ids[:, PROMPT + i:PROMPT + i + 1], cache, PROMPT + i)
        walls.append((time.perf_counter() - t0) * 1e3)
        infos.append([m.stats.last for m in remotes if m.stats.calls])
        assert all(m.stats.calls <= 1 for m in remotes)
    return walls, infos


def breakdown(infos):
    """Mean per call (us) of each part, over every call of every step."""
    calls = [i for step in infos for i in step]
    parts = {
        "encode": [i.encode_us for i in calls],
        "decode": [i.decode_us for i in calls],
        "transport": [i.latency_us - i.total_us - i.encode_us - i.decode_us for i in calls],
        "queue": [i.queue_us for i in calls],
        "compute": [i.compute_us for i in calls],
        "server other": [i.total_us - i.queue_us - i.compute_us for i in calls],
        "latency": [i.latency_us for i in calls],
    }
    return {k: statistics.mean(v) for k, v in parts.items()}, len(calls) / len(infos)


def run_model(name, build, steps, threads, seed):
    c, group, default_threads = MODELS[name]
    threads = threads or default_threads
    work = tempfile.mkdtemp(prefix=f"qlayer_bench_{name}_")
    server = None
    client = None
    try:
        weights, ckpt = build_checkpoint(name, c, group, work, build, seed)
        torch.set_num_threads(threads)
        local = tl.TinyLlama(c)
        tl.load_weights(local, weights)
        tl.PIPELINE = True
        local_ms, _ = decode_steps(local, c, steps, seed)
        del local

        # What stays local when offloaded (norms, RoPE, one token's attention)
        # is microseconds of work: one thread, for the reason above.
        torch.set_num_threads(1)
        server = tl.Server(build, ckpt, f"{work}/server.log")
        server.start()
        client = qlayer.Client(server.address)
        client.wait_for_ready(30)
        kernels = sorted({k for s in client.list_layers() for k in s.kernels})
        model = tl.TinyLlama(c)
        tl.load_weights(model, weights)
        del weights
        remotes = list(qt.offload(model, client, PATTERNS, timeout=60).values())
        results = {}
        for mode in ("sequential", "pipelined", "sequential", "pipelined"):  # interleaved
            tl.PIPELINE = mode == "pipelined"
            walls, infos = decode_steps(model, c, steps, seed, remotes)
            results.setdefault(mode, ([], []))
            results[mode][0].extend(walls)
            results[mode][1].extend(infos)
        return {"local": local_ms, "results": results, "kernels": kernels,
                "calls": len(remotes), "threads": threads}
    finally:
        if client:
            client.close()
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def p50(xs):
    return statistics.median(xs)


def report(name, r, out):
    c, group, _ = MODELS[name]
    local = p50(r["local"])
    seq = p50(r["results"]["sequential"][0])
    pipe = p50(r["results"]["pipelined"][0])
    out.append(f"#### {name}: H {c.hidden}, {c.layers} layer(s)"
               f"{', MoE ' + str(c.experts) + ' experts top-' + str(c.top_k) if c.moe_layers else ''}"
               f", GPTQ 4-bit g{group}; {r['calls']} remote modules; server kernels "
               f"{', '.join(r['kernels'])}\n")
    out.append("| per decode step (batch 1), median | ms | vs local |")
    out.append("| --- | ---: | ---: |")
    out.append(f"| local torch f32 (dequantized weights, {r['threads']} thread"
               f"{'s' if r['threads'] > 1 else ''}) | {local:.2f} | 1.00x |")
    out.append(f"| offloaded, sequential | {seq:.2f} | {seq / local:.2f}x |")
    out.append(f"| offloaded, pipelined (q/k/v, gate/up together) | {pipe:.2f} | "
               f"{pipe / local:.2f}x |")
    recovered = (seq - pipe) / (seq - local) if seq > local else float("nan")
    out.append(f"\nPipelining saves {seq - pipe:.2f} ms per step "
               f"({(seq - pipe) / seq:.0%} of the sequential step"
               + (f", {recovered:.0%} of the offload overhead over local" if seq > local
                  else "") + ").\n")
    out.append("| per remote call, mean us | encode | decode | transport | queue | compute "
               "| server other | latency | calls/step |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode in ("sequential", "pipelined"):
        parts, per_step = breakdown(r["results"][mode][1])
        out.append(f"| {mode} | " + " | ".join(f"{parts[k]:.0f}" for k in (
            "encode", "decode", "transport", "queue", "compute", "server other", "latency"))
            + f" | {per_step:.0f} |")
    out.append("")


def machine():
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // (1 << 20)
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem} GiB; {platform.system()} "
            f"{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"grpcio {grpc.__version__}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("QLAYER_BUILD_DIR", "build"))
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed per mode")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: 1 for tiny, all CPUs for 4096)")
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out = ["### Offload from PyTorch", "",
           f"Machine: {machine()}. Date: {datetime.date.today().isoformat()}. "
           f"Load average at the start: {os.getloadavg()[0]:.1f}. Client, server and local "
           "torch share the machine (loopback).", "",
           "Command: `" + " ".join(["/usr/bin/python3", "client/python/bench_offload.py",
                                    *sys.argv[1:]]) + "`", ""]
    for name in args.only or ["tiny", "4096"]:
        print(f"bench_offload: {name}...", file=sys.stderr)
        r = run_model(name, args.build, args.steps, args.threads, args.seed)
        report(name, r, out)
    print("\n".join(out))


if __name__ == "__main__":
    main()
