#!/usr/bin/env bash
# The end-to-end service check on the GPU machine (issue 8): qlayer-server
# with --device auto must choose the GPU, list the CUDA kernels per layer, and
# answer Forward over the real wire within tolerance of the float64 reference
# that `qlayer-cli verify` computes from the same checkpoint, for every weight
# type, f16 and bf16, at M = 1, 2, 16 and 64 (which kernel serves 16 and 64
# depends on the crossover measured at load, which DescribeLayer must report).
# Usage: tests/gpu/service_e2e.sh BIN_DIR WORK_DIR   (BIN_DIR holds qlayer-server,
# qlayer-cli, qlayer-quantize). Exit 0 only when every check passed.
set -uo pipefail
BIN=$1
WORK=$2
mkdir -p "$WORK"
fail=0
check() {  # check NAME CONDITION-EXIT-CODE
  if [[ $2 -eq 0 ]]; then echo "  ok    $1"; else echo "  FAIL  $1"; fail=1; fi
}
port=50161
# name format extra-flags
cases=(
  "gptq_actorder gptq --bits 4 --act-order"
  "awq awq --bits 4"
  "gptq8 gptq --bits 8"
  "ct8_zeros compressed-tensors --bits 8"
)
for c in "${cases[@]}"; do
  read -r name format flags <<<"$c"
  dir=$WORK/$name
  rm -rf "$dir"
  # shellcheck disable=SC2086
  "$BIN/qlayer-quantize" --format "$format" $flags --group-size 128 --seed "$RANDOM" \
    --shape model.layers.0.self_attn.q_proj=4096x4096 \
    --shape model.layers.0.mlp.down_proj=4096x11008 --out "$dir" >"$WORK/$name.quantize.log" 2>&1
  check "$name: qlayer-quantize" $?
  port=$((port + 2))
  "$BIN/qlayer-server" --model "$dir" --device auto --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$((port + 1))" >"$WORK/$name.server.log" 2>&1 &
  pid=$!
  up=1
  for _ in $(seq 1 120); do
    if "$BIN/qlayer-cli" --server "127.0.0.1:$port" list >"$WORK/$name.list.txt" 2>/dev/null; then
      up=0
      break
    fi
    sleep 0.5
  done
  check "$name: server up with --device auto" $up
  # The CUDA build's /metrics threads (cuBLAS TLS once broke them).
  python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" \
    "http://127.0.0.1:$((port + 1))/metrics" 2>/dev/null | grep -q '^qlayer_layer_info{.*cuda'
  check "$name: /metrics answers and shows the CUDA kernels" $?
  grep -iE "device|cuda" "$WORK/$name.server.log" | head -3
  for layer in model.layers.0.self_attn.q_proj model.layers.0.mlp.down_proj; do
    "$BIN/qlayer-cli" --server "127.0.0.1:$port" describe "$layer" --json >"$WORK/$name.describe.json"
    grep -q '"device": *"cuda:0"' "$WORK/$name.describe.json"
    check "$name $layer: device cuda:0" $?
    grep -q 'cuda_mma_w' "$WORK/$name.describe.json" &&
      grep -q 'cuda_dequant_cublas' "$WORK/$name.describe.json"
    check "$name $layer: kernels mma / dequant+cuBLAS chosen" $?
    # The hand-over row count was timed on this GPU at load.
    grep -q '"max_rows_source": *"measured"' "$WORK/$name.describe.json" &&
      grep -q '"crossover_timings": *"M=1 ' "$WORK/$name.describe.json"
    check "$name $layer: crossover measured at load" $?
    grep -oE '"max_rows": *"?[0-9]+"?|"crossover_timings": *"[^"]*"' "$WORK/$name.describe.json" |
      head -2 | sed 's/^/        /'
    for dt in f16 bf16; do
      tol=2e-3
      [[ $dt == bf16 ]] && tol=6e-3
      for rows in 2 16 64; do
        # verify sends 1 row and then `rows` rows.
        "$BIN/qlayer-cli" --server "127.0.0.1:$port" verify --layer "$layer" --model "$dir" \
          --rows "$rows" --dtype "$dt" --tolerance "$tol" >"$WORK/verify.txt" 2>&1
        rc=$?
        sed 's/^/        /' "$WORK/verify.txt" | grep -E "rows" | head -2
        check "$name $layer $dt: verify 1 and $rows rows (tolerance $tol)" $rc
      done
    done
  done
  "$BIN/qlayer-cli" --server "127.0.0.1:$port" bench --layer model.layers.0.self_attn.q_proj \
    --rows 1 --streams 1 --seconds 2 2>&1 | sed 's/^/    /'
  kill -TERM "$pid"
  wait "$pid"
  check "$name: SIGTERM exit" $?
done
exit $fail
