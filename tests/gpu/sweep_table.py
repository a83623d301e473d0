#!/usr/bin/env python3
"""Compares the decode kernel's schedules from `qlayer_gpu_bench --mma-only`
runs: one column per run (NAME=CSV), time in µs and fraction of the
bandwidth floor (int4 bytes / copy bandwidth of that same run).
Usage: sweep_table.py NAME=bench.csv [NAME=bench.csv ...]
"""
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_table import read  # noqa: E402


def main():
    runs = []
    for arg in sys.argv[1:]:
        name, _, path = arg.partition("=")
        try:
            facts, rows = read(path)
        except OSError as e:
            print(f"({name}: {e})", file=sys.stderr)
            continue
        bw = float(facts["copy_GBps"]) * 1e9
        t = {(int(r["K"]), int(r["N"]), int(r["M"])): float(r["us"])
             for r in rows if r["path"] == "mma"}
        runs.append((name, bw, t))
    if not runs:
        return
    print("| K x N | M | " + " | ".join(f"{n} µs (of floor)" for n, _, _ in runs) + " |")
    print("|---|---:|" + "---:|" * len(runs))
    keys = sorted(set().union(*(t.keys() for _, _, t in runs)))
    for K, N, M in keys:
        q_bytes = K * N / 2 + K / 128 * N * 2
        cells = []
        for _, bw, t in runs:
            us = t.get((K, N, M))
            cells.append("–" if us is None else f"{us:.1f} ({q_bytes / bw / (us * 1e-6):.0%})")
        print(f"| {K}x{N} | {M} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
