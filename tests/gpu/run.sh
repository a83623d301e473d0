#!/usr/bin/env bash
# The one script for the lent GPU machine (issue 8): configure with
# QLAYER_CUDA=on, build the GPU targets, run the GPU correctness tests, then
# the benchmark and its same-run PyTorch peers, and write everything to $OUT:
#   device.txt build.log tests.log service_e2e.log bench_cuda.csv bench_torch.csv bench_table.md
#   (+ sanitize.log with QLAYER_GPU_SANITIZE=1: compute-sanitizer memcheck on
#   two of the test's weight-type/dtype pairs; + sweep_table.md with
#   QLAYER_GPU_SWEEP=1: the decode kernel alone, M 1..64, under its schedules
#   (one-shot split-K, one wave with 1/2/4 units per block); + ncu.txt with QLAYER_GPU_NCU=1: Nsight Compute's DRAM and SM
#   figures for the decode kernel at M = 1 and 16 under both schedules)
# Usage: tests/gpu/run.sh [--quick]     (--quick: 2 shapes, 4 values of M)
# QLAYER_GPU_SKIP=tests,service,bench,peers (any of them) leaves parts out, so
# that correctness and the long benchmark fit separate 10-minute calls.
#
# The GPU image may lack the Debian -dev packages the whole project needs
# (Abseil, oneDNN, gRPC, ...). Then, if QLAYER_GPU_PREBUILT names a folder with
# bin/qlayer_gpu_{tests,bench} and lib/ (built with CUDA on a developer
# machine, see tests/gpu/carry_prebuilt.sh), those binaries are run instead;
# the output says which.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${QLAYER_GPU_BUILD_DIR:-$ROOT/build-gpu}
OUT=${OUT:-$BUILD/out}
PREBUILT=${QLAYER_GPU_PREBUILT:-}
QUICK=""
[[ "${1:-}" == "--quick" ]] && QUICK=--quick
LOGS=$BUILD/logs
mkdir -p "$OUT" "$LOGS"
cd "$ROOT" || exit 1
say() { echo "== $*"; }
skip() { [[ ",${QLAYER_GPU_SKIP:-}," == *",$1,"* ]]; }
tests_rc=0
service_rc=0
bench_rc=0

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
  --format=csv | tee "$OUT/device.txt"
{ date -u +"date: %Y-%m-%dT%H:%M:%SZ"; nvcc --version | tail -1; } | tee -a "$OUT/device.txt"

BIN=""
start=$SECONDS
if cmake -S "$ROOT" -B "$BUILD" -G Ninja -DQLAYER_CUDA=on -DCMAKE_BUILD_TYPE=Release \
     >"$OUT/build.log" 2>&1 &&
   ninja -C "$BUILD" -j16 qlayer_gpu_tests qlayer_gpu_bench qlayer-server qlayer-cli qlayer-quantize >>"$OUT/build.log" 2>&1; then
  BIN=$BUILD/tests/gpu
  say "built here in $((SECONDS - start)) s"
elif [[ -n "$PREBUILT" && -x "$PREBUILT/bin/qlayer_gpu_tests" ]]; then
  say "building here failed after $((SECONDS - start)) s (end of build.log below);" \
      "running the prebuilt binaries from $PREBUILT"
  grep -m3 -iE "error|could not|needs" "$OUT/build.log"
  BIN=$PREBUILT/bin
  export LD_LIBRARY_PATH=$PREBUILT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
  tail -30 "$OUT/build.log"
  exit 1
fi
# cuBLAS 13 comes from the machine: the CUDA toolkit or PyTorch's wheels.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -e $d/libcublas.so.13 ]] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d
done
if ! ldconfig -p | grep -q libcublas.so.13 && [[ ":${LD_LIBRARY_PATH:-}:" != *cuda* ]]; then
  lib=$(find /opt /usr/local /usr/lib -name libcublas.so.13 2>/dev/null | head -1)
  [[ -n "$lib" ]] && export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$(dirname "$lib")
fi
if ldd "$BIN/qlayer_gpu_tests" | grep -q "not found"; then
  say "missing libraries:"; ldd "$BIN/qlayer_gpu_tests" | grep "not found"
fi

if ! skip tests; then
say "GPU tests"
start=$SECONDS
timeout 240 "$BIN/qlayer_gpu_tests" --gtest_brief=1 >"$OUT/tests.log" 2>&1
tests_rc=$?
grep -E "seed|FAILED|Failure|error|Expected|Which is|rel|PASSED|SKIPPED|tests ran" "$OUT/tests.log" | head -60
say "tests exit $tests_rc in $((SECONDS - start)) s"
# The decode kernel's other schedules on the same checks: a persistent grid
# capped at 3 blocks (the tests' layers are small, so by default most blocks
# take one unit; capped, every block walks many units, crossing unit
# boundaries inside its pipeline), and the one-shot split-K.
# Also cuda_dequant_cublas without dense copies (each call dequantizes into
# the worker's scratch: what large models get) and Forward without graphs.
for sched in QLAYER_CUDA_DECODE_MAX_GRID=3 QLAYER_CUDA_DECODE_MODE=oneshot \
             QLAYER_CUDA_DECODE_UNITS_PER_BLOCK=4,QLAYER_CUDA_DECODE_MAX_GRID=5 \
             QLAYER_CUDA_DENSE_COPY=never,QLAYER_CUDA_GRAPHS=0; do
  start=$SECONDS
  env ${sched//,/ } timeout 240 "$BIN/qlayer_gpu_tests" --gtest_brief=1 \
    --gtest_filter='*MatchesFloat64*:*Concurrent*' >"$OUT/tests_${sched//[=,]/_}.log" 2>&1
  rc=$?
  [[ $rc -ne 0 ]] && tests_rc=$rc
  grep -E "FAILED|Failure|Expected|Which is|tests ran|PASSED" "$OUT/tests_${sched//[=,]/_}.log" | head -20
  say "tests with $sched: exit $rc in $((SECONDS - start)) s"
done
# The sm_80 code path: the tests built for compute_80 as PTX only (no
# sm_90a SASS), so the driver JIT-compiles the Ampere code for this GPU.
# Correctness only: its timings would not be an A100's.
if [[ -x "$BIN/qlayer_gpu_tests_sm80ptx" ]]; then
  start=$SECONDS
  timeout 300 "$BIN/qlayer_gpu_tests_sm80ptx" --gtest_brief=1 >"$OUT/tests_sm80ptx.log" 2>&1
  rc=$?
  [[ $rc -ne 0 ]] && tests_rc=$rc
  # What the binary embeds (expected: compute_80 PTX, no ELF for this GPU).
  cuobjdump --list-ptx --list-elf "$BIN/qlayer_gpu_tests_sm80ptx" 2>&1 | \
    grep -oE "(ELF|PTX) file.*" | sed -E 's/.*\.(sm_[0-9a]+|compute_[0-9a]+)\..*/\1/' | sort | uniq -c
  grep -E "FAILED|Failure|Expected|Which is|tests ran|PASSED" "$OUT/tests_sm80ptx.log" | head -20
  say "tests as sm_80 PTX (JIT for this GPU): exit $rc in $((SECONDS - start)) s"
fi
fi

if [[ "${QLAYER_GPU_SANITIZE:-0}" == 1 ]]; then
  say "compute-sanitizer memcheck"
  start=$SECONDS
  timeout 180 compute-sanitizer --tool memcheck --leak-check no \
    "$BIN/qlayer_gpu_tests" --gtest_filter='*uint4_f16*:*uint8b128_bf16*:*Concurrent*:*GraphReplays*' \
    >"$OUT/sanitize.log" 2>&1
  echo "sanitizer exit $? in $((SECONDS - start)) s"; grep -E "ERROR SUMMARY|PASSED|FAILED" "$OUT/sanitize.log" | head
fi

if ! skip service; then
say "service end to end (--device auto)"
start=$SECONDS
if [[ -x "$BIN/qlayer-server" || -x "$BUILD/server/qlayer-server" ]]; then
  SVC_BIN=$BIN
  [[ -x "$BIN/qlayer-server" ]] || SVC_BIN=$BUILD/server
  [[ -x "$SVC_BIN/qlayer-cli" ]] || SVC_BIN=$BUILD
  timeout 300 bash tests/gpu/service_e2e.sh "$SVC_BIN" "$BUILD/service_e2e" >"$OUT/service_e2e.log" 2>&1
  service_rc=$?
else
  echo "no qlayer-server binary next to the GPU tests" >"$OUT/service_e2e.log"
  service_rc=1
fi
grep -E "FAIL|device|ok +[a-z0-9_]+: server" "$OUT/service_e2e.log" | head -30
say "service e2e exit $service_rc in $((SECONDS - start)) s"
fi

if ! skip bench; then
say "benchmark"
start=$SECONDS
timeout 300 "$BIN/qlayer_gpu_bench" --out="$OUT/bench_cuda.csv" $QUICK >"$LOGS/bench_cuda.log" 2>&1
bench_rc=$?
[[ $bench_rc -ne 0 ]] && tail -20 "$LOGS/bench_cuda.log"
say "bench exit $bench_rc in $((SECONDS - start)) s"
fi

if [[ "${QLAYER_GPU_SWEEP:-0}" == 1 ]]; then
  say "decode schedules sweep"
  start=$SECONDS
  sweep=()
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv,noheader \
    -lms 500 >"$OUT/sweep_clocks.csv" 2>&1 &
  smi=$!
  for pair in oneshot:QLAYER_CUDA_DECODE_MODE=oneshot upb1:QLAYER_CUDA_DECODE_UNITS_PER_BLOCK=1 \
              upb2:QLAYER_CUDA_DECODE_UNITS_PER_BLOCK=2 upb4:QLAYER_CUDA_DECODE_UNITS_PER_BLOCK=4; do
    name=${pair%%:*} sched=${pair#*:}
    env ${sched//,/ } timeout 150 "$BIN/qlayer_gpu_bench" --mma-only --out="$OUT/sweep_$name.csv" \
      >"$LOGS/sweep_$name.log" 2>&1 || tail -5 "$LOGS/sweep_$name.log"
    sweep+=("$name=$OUT/sweep_$name.csv")
  done
  kill $smi 2>/dev/null
  python3 tests/gpu/sweep_table.py "${sweep[@]}" | tee "$OUT/sweep_table.md"
  sort "$OUT/sweep_clocks.csv" | uniq -c | sort -rn | head -5
  say "sweep done in $((SECONDS - start)) s"
fi

if [[ "${QLAYER_GPU_NCU:-0}" == 1 ]] && command -v ncu >/dev/null; then
  say "ncu"
  metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__cycles_active.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread
  for sched in QLAYER_CUDA_DECODE_MODE=persistent QLAYER_CUDA_DECODE_MODE=oneshot; do
    echo "## $sched" >>"$OUT/ncu.txt"
    env "$sched" timeout 120 ncu --clock-control none -k regex:MmaDecode --metrics "$metrics" \
      "$BIN/qlayer_gpu_bench" --profile >>"$OUT/ncu.txt" 2>&1
  done
  grep -E "^##|MmaDecode|duration|dram__|sm__|smsp__|grid_size" "$OUT/ncu.txt" | \
    sed -E 's/ +/ /g' | cut -c1-150 | head -80
  # Where the warps of the M = 1 kernel on 8192x28672 wait (its first call).
  timeout 120 ncu --clock-control none -k regex:MmaDecode --launch-skip 4 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section Occupancy --section SchedulerStats \
    "$BIN/qlayer_gpu_bench" --profile >"$OUT/ncu_detail.txt" 2>&1
  grep -E "Throughput|Stall|Warp Cycles|Issued|Eligible|Occupancy|Bandwidth|Hit Rate|Duration" \
    "$OUT/ncu_detail.txt" | sed -E 's/ +/ /g' | head -60
fi

PY=python3
for p in /opt/torch/.venv/bin/python3 python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c "import torch" 2>/dev/null; then PY=$p; break; fi
done
if ! skip peers; then
say "PyTorch peers ($PY)"
start=$SECONDS
PYTHONUNBUFFERED=1 timeout 240 "$PY" tests/gpu/torch_peers.py --out "$OUT/bench_torch.csv" $QUICK \
  >"$LOGS/bench_torch.log" 2>&1 || tail -20 "$LOGS/bench_torch.log"
say "peers done in $((SECONDS - start)) s"
cat "$LOGS/bench_cuda.log" "$LOGS/bench_torch.log" >>"$OUT/tests.log"
fi

if [[ -f "$OUT/bench_cuda.csv" ]]; then
  torch_csv=$OUT/bench_torch.csv
  [[ -f $torch_csv ]] || torch_csv=/dev/null
  "$PY" tests/gpu/bench_table.py "$OUT/bench_cuda.csv" "$torch_csv" >"$OUT/bench_table.md"
  cat "$OUT/bench_table.md"
fi
exit $((tests_rc != 0 || bench_rc != 0 || service_rc != 0))
