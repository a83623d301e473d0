#!/usr/bin/env bash
# Regenerates the seed corpora fuzz/corpus/<target>/ (committed; ~100 KB) from
# tiny qlayer-quantize checkpoints of every format and MoE family, and from
# requests the client library builds (qlayer-fuzz-seeds requests).
#   fuzz/make_corpus.sh [BUILD_DIR]
# BUILD_DIR (default build) is a configured build (scripts/build.sh); its
# qlayer-quantize and qlayer-fuzz-seeds are built here if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -f "$build/build.ninja" ] && ninja -C "$build" qlayer-quantize qlayer-fuzz-seeds >/dev/null
quantize=$build/server/qlayer-quantize
seeds=$build/fuzz/qlayer-fuzz-seeds
for b in "$quantize" "$seeds"; do
  [ -x "$b" ] || { echo "make_corpus: $b not built" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=fuzz/corpus
for t in safetensors index quant_config formats moe_catalog tensor_request moe_request; do
  rm -rf "${out:?}/$t"
  mkdir -p "$out/$t"
done

shapes=model.layers.0.self_attn.q_proj=16x32,model.layers.0.mlp.down_proj=24x64
n=0
ckpt() {  # NAME FLAGS...: one checkpoint, its files filed under each target
  local name=$1
  shift
  "$quantize" --seed $((++n)) --out "$work/$name" "$@" >/dev/null
  cp "$work/$name/config.json" "$out/quant_config/$name.json"
  for f in "$work/$name"/*.safetensors; do cp "$f" "$out/safetensors/$name-$(basename "$f")"; done
  [ -f "$work/$name/model.safetensors.index.json" ] &&
    cp "$work/$name/model.safetensors.index.json" "$out/index/$name.json"
  "$seeds" formats "$work/$name" "$out/formats"
}
ckpt gptq4 --format gptq --bits 4 --group-size 16 --shape "$shapes" --bias
ckpt gptq8-sym-actorder --format gptq --bits 8 --group-size 16 --sym --act-order --shape "$shapes"
ckpt gptq_v2-channel --format gptq_v2 --bits 4 --group-size -1 --shape "$shapes"
ckpt awq4 --format awq --bits 4 --group-size 32 --shape "$shapes" --scale-dtype bf16
ckpt ct4-actorder --format compressed-tensors --bits 4 --group-size 16 --act-order --shape "$shapes"
ckpt ct8-sym --format compressed-tensors --bits 8 --group-size -1 --sym --shape "$shapes"
ckpt ar-gptq --format auto-round-gptq --bits 4 --group-size 16 --sym --shape "$shapes"
ckpt ar-awq --format auto-round-awq --bits 4 --group-size 16 --shape "$shapes"
ckpt dense --format dense --scale-dtype f32 --shape "$shapes" --bias
ckpt sharded --format gptq --bits 4 --group-size 16 --shape "$shapes" --shard-bytes 1000

# The index target's scratch directory holds two fixed shards (index_fuzz.cc).
cat > "$out/index/fixed-shards.json" <<'JSON'
{"metadata": {"total_size": 72}, "weight_map": {
  "model.layers.0.mlp.down_proj.weight": "model-00001-of-00002.safetensors",
  "model.layers.0.mlp.up_proj.weight": "model-00001-of-00002.safetensors",
  "model.layers.1.mlp.down_proj.weight": "model-00002-of-00002.safetensors",
  "model.layers.1.mlp.up_proj.weight": "model-00002-of-00002.safetensors"}}
JSON

moe() {  # FAMILY FORMAT EXTRA...: one MoE checkpoint for the catalog target
  local fam=$1 fmt=$2
  shift 2
  "$quantize" --seed $((++n)) --out "$work/moe-$fam" --format "$fmt" --group-size 8 \
    --moe "$fam" --layers-moe 1 --hidden 16 --intermediate 8 --experts 4 --topk 2 "$@" >/dev/null
  "$seeds" moe_catalog "$work/moe-$fam" "$out/moe_catalog/$fam-$fmt"
  cp "$work/moe-$fam/config.json" "$out/quant_config/moe-$fam.json"
}
moe mixtral gptq
moe qwen2_moe awq --shared-intermediate 8
moe qwen3_moe compressed-tensors
moe deepseek_v2 gptq_v2 --n-group 2 --topk-group 1 --shared-intermediate 8
moe deepseek_v3 compressed-tensors --n-group 2 --topk-group 1

"$seeds" requests "$out"
du -sh "$out"
for t in "$out"/*; do echo "$(basename "$t"): $(ls "$t" | wc -l) files, $(du -sb "$t" | cut -f1) bytes"; done
