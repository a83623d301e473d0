#!/usr/bin/env python3
"""Joins the C++ benchmark CSV and the PyTorch peers CSV into the markdown
table of BENCHMARKS.md ("CUDA linear kernels").

ours = the kernel a server selects at that M: cuda_mma_w4a16 up to the
crossover measured for the shape in the same run (the benchmark's
"crossover_max_m" rows, what the server measures at load), else up to the
factory's max_m ("# mma_max_m"); cuda_dequant_cublas above. (cuda_gemv_w4a16
first when the registry selects it, "# gemv_max_m".) floor = max(int4 bytes / copy bandwidth, 2MKN / cuBLAS fp16 dense
rate), both measured in the same run; int4 bytes = K*N/2 plus the f16
group-128 scales.
Usage: bench_table.py bench_cuda.csv [bench_torch.csv]
"""
import csv
import sys



def read(path):
    facts, rows = {}, []
    with open(path) as f:
        lines = [l for l in f if l.strip()]
    for l in lines:
        if l.startswith("#"):
            k, _, v = l[1:].strip().partition("=")
            facts[k] = v
    body = [l for l in lines if not l.startswith("#")]
    for r in csv.DictReader(body):
        rows.append(r)
    return facts, rows


def main():
    facts, rows = read(sys.argv[1])
    if len(sys.argv) > 2:
        try:
            rows += read(sys.argv[2])[1]
        except OSError as e:
            print(f"(no torch peers: {e})", file=sys.stderr)
    t = {}
    for r in rows:
        t[(int(r["K"]), int(r["N"]), int(r["M"]), r["path"])] = float(r["us"])
    max_m = int(facts.get("mma_max_m", 64))
    gemv_max_m = int(facts.get("gemv_max_m", 0))
    bw = float(facts["copy_GBps"]) * 1e9
    peak = float(facts["cublas_fp16_tflops"]) * 1e12
    print(f"Device: {facts.get('device')}, {facts.get('sms')} SMs, L2 "
          f"{int(facts.get('l2_bytes', 0)) >> 20} MiB. Copy bandwidth (read + write) "
          f"{bw / 1e9:.0f} GB/s (faster of cudaMemcpy {float(facts.get('copy_memcpy_GBps', 0)):.0f} "
          f"and an SM copy kernel {float(facts.get('copy_kernel_GBps', 0)):.0f}); cuBLAS fp16 dense "
          f"8192^3 {peak / 1e12:.0f} TFLOP/s. Selection: "
          + (f"cuda_gemv_w4a16 for M <= {gemv_max_m}, " if gemv_max_m else "")
          + f"cuda_mma_w4a16 for M <= {max_m}, cuda_dequant_cublas above.\n")
    shapes = sorted({(k, n) for (k, n, m, p) in t if m > 0}, key=lambda s: s[0] * s[1])
    print("| K x N | M | ours (µs) | kernel | floor (µs) | of floor | vs cuBLAS fp16 | "
          "vs int4pack_mm | gemv / mma / dequant+cuBLAS (µs) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---|")
    for k, n in shapes:
        ms = sorted({m for (kk, nn, m, p) in t if (kk, nn) == (k, n) and m > 0})
        for m in ms:
            mma = t.get((k, n, m, "mma"))
            dq = t.get((k, n, m, "dequant_cublas"))
            gemv = t.get((k, n, m, "gemv"))
            shape_max_m = int(t.get((k, n, 0, "crossover_max_m"), max_m))
            if m <= gemv_max_m and gemv is not None:
                ours, name = gemv, "gemv"
            elif m <= shape_max_m:
                ours, name = mma, "mma"
            else:
                ours, name = dq, "dequant_cublas"
            if ours is None:
                continue
            q_bytes = k * n / 2 + (k / 128) * n * 2
            floor = max(q_bytes / bw, 2.0 * m * k * n / peak) * 1e6
            cub = t.get((k, n, m, "cublas_fp16"))
            i4 = t.get((k, n, m, "int4pack_mm_bf16"))
            alt = f"{gemv:.1f} / " if gemv is not None else "– / "
            alt += f"{mma:.1f} / " if mma is not None else "– / "
            alt += f"{dq:.1f}" if dq is not None else "–"
            print(f"| {k}x{n} | {m} | {ours:.1f} | {name} | {floor:.1f} | "
                  f"{floor / ours:.0%} | {cub / ours:.2f}x | "
                  f"{(f'{i4 / ours:.2f}x' if i4 else 'n/a')} | {alt} |")
    cross = [(k, n, int(t[(k, n, 0, "crossover_max_m")]), t.get((k, n, 0, "crossover_time"), 0))
             for (k, n) in shapes if (k, n, 0, "crossover_max_m") in t]
    if cross:
        print("\nCrossover measured at load (cuda_mma_w4a16 against cuda_dequant_cublas, "
              "M in 1, 4, 8, 16, 24, 32, 48, 64, weights cold; what the server does per shape):\n")
        print("| K x N | mma serves M <= | time to measure (ms) |")
        print("|---|---:|---:|")
        for k, n, mm, ms_ in cross:
            print(f"| {k}x{n} | {mm} | {ms_ / 1000:.1f} |")
    host = [(k, n, m) for (k, n, m, p) in t if p == "host_forward_direct"]
    if host:
        print("\nHost-tensor Forward of cuda_mma_w4a16 (what a server call pays: staging copies, "
              "launches, the one synchronisation; wall time per call, median of 200), without and "
              "with its CUDA graphs, beside the kernel alone:\n")
        print("| K x N | M | kernel alone (µs) | Forward, direct (µs) | Forward, graph (µs) | "
              "saved by the graph |")
        print("|---|---:|---:|---:|---:|---:|")
        for k, n, m in sorted(host):
            d = t[(k, n, m, "host_forward_direct")]
            g = t.get((k, n, m, "host_forward_graph"))
            kern = t.get((k, n, m, "mma"))
            print(f"| {k}x{n} | {m} | {kern:.1f} | {d:.1f} | "
                  + (f"{g:.1f} | {d - g:.1f} µs |" if g is not None else "– | – |"))
    prep = [(k, n, t.get((k, n, 0, "prepare_gemv"), 0), t[(k, n, 0, "prepare_mma")],
             t.get((k, n, 0, "prepare_dequant_cublas")))
            for (k, n) in shapes if (k, n, 0, "prepare_mma") in t]
    if prep:
        print("\nLoad time (Prepare: upload + repack on the GPU, host tensors in):\n")
        print("| K x N | cuda_gemv_w4a16 (ms) | cuda_mma_w4a16 (ms) | cuda_dequant_cublas (ms) |")
        print("|---|---:|---:|---:|")
        for k, n, g, a, b in prep:
            print(f"| {k}x{n} | {g / 1000:.1f} | {a / 1000:.1f} | {(b or 0) / 1000:.1f} |")


if __name__ == "__main__":
    main()
