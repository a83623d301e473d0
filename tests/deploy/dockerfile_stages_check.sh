#!/usr/bin/env bash
# Checks the Dockerfile's two stages without a Docker engine (none runs on the
# dev/CI machines): a Debian 12 root made by debootstrap stands in for the
# debian:12 / debian:12-slim base images. The package lists are read from the
# Dockerfile itself, so the check follows it.
#   tests/deploy/dockerfile_stages_check.sh [--full-build] [ROOTFS_DIR]
# Build stage: installs the build packages and configures the project with the
# Dockerfile's cmake flags (--full-build also compiles the three programs there;
# ~15 min on 2 cores). Runtime stage: a second root with only the runtime
# packages runs the programs (this checkout's build/, or the chroot's with
# --full-build) as uid 10001: qlayer-quantize writes a model, qlayer-server serves
# it with the ENTRYPOINT's flags, the HEALTHCHECK command answers SERVING and
# qlayer-cli verify matches the float64 reference. Needs root and Debian's mirror.
set -euo pipefail
cd "$(dirname "$0")/../.."
full=0
if [[ "${1:-}" == "--full-build" ]]; then full=1; shift; fi
base=${1:-/tmp/qlayer-dockerfile-check}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
  echo http://deb.debian.org/debian)

# The packages of the Dockerfile's Nth `apt-get install` (1: build, 2: runtime;
# a ${NAME} in the list is the default of its ARG).
packages() {
  /usr/bin/python3 - "$1" <<'EOF'
import re, sys
text = open("Dockerfile").read().replace("\\\n", " ")
args = dict(re.findall(r'^ARG (\w+)="([^"]*)"', text, re.M))
runs = [l for l in text.splitlines() if "apt-get install" in l]
cmd = runs[int(sys.argv[1]) - 1].split("apt-get install", 1)[1].split("&&")[0]
cmd = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], cmd)
print(" ".join(w for w in cmd.split() if not w.startswith("-")))
EOF
}

make_root() {  # $1: dir; debootstrap once, reused by later runs
  [[ -x "$1/bin/bash" ]] || debootstrap --variant=minbase bookworm "$1" "$mirror" >/dev/null
  cp /etc/resolv.conf "$1/etc/"
  mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"
}
cleanup() {
  pkill -f 'qlayer-server --model /model --listen 127.0.0.1:50779' 2>/dev/null || true
  for d in "$base/build-stage" "$base/runtime-stage"; do
    mountpoint -q "$d/proc" && umount "$d/proc" || true
  done
}
trap cleanup EXIT

echo "== build stage: $(packages 1)"
b="$base/build-stage"
make_root "$b"
chroot "$b" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends $(packages 1) >/dev/null"
rm -rf "$b/src" && mkdir -p "$b/src" && git archive HEAD | tar -x -C "$b/src"
cmake_flags=$(/usr/bin/python3 -c '
import re; t = open("Dockerfile").read().replace("\\\n", " ")
print(re.search(r"cmake -S \. -B /build (.*?)&&", t).group(1).replace("${QLAYER_CUDA}", "off"))')
chroot "$b" bash -c "cd /src && cmake -S . -B /build $cmake_flags >/dev/null" && echo "configure: ok"
bin_dir=build
if ((full)); then
  chroot "$b" cmake --build /build --target qlayer-server qlayer-cli qlayer-quantize >/dev/null
  echo "build: ok"
  bin_dir="$b/build"
fi

echo "== runtime stage: $(packages 2)"
r="$base/runtime-stage"
make_root "$r"
chroot "$r" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends $(packages 2) >/dev/null;
  id 10001 >/dev/null 2>&1 || useradd --system --uid 10001 --no-create-home qlayer 2>/dev/null"
cp "$bin_dir/server/qlayer-server" "$bin_dir/server/qlayer-quantize" \
  "$bin_dir/client/qlayer-cli" "$r/usr/local/bin/"
missing=$(for p in qlayer-server qlayer-quantize qlayer-cli; do
  chroot "$r" ldd "/usr/local/bin/$p" | grep 'not found' || true; done)
[[ -z "$missing" ]] || { echo "runtime stage lacks libraries: $missing"; exit 1; }
rm -rf "$r/model" && mkdir -p "$r/model"
chroot "$r" qlayer-quantize --format gptq --bits 4 --group-size 128 --seed 3 \
  --shape model.layers.0.mlp.up_proj=512x256 --out /model >/dev/null
chmod -R a-w "$r/model"  # the model is mounted read-only
chroot --userspec=10001:10001 "$r" qlayer-server --model /model --listen 127.0.0.1:50779 \
  --metrics-listen 127.0.0.1:9479 >"$base/server.log" 2>&1 &
for _ in $(seq 1 50); do
  chroot "$r" qlayer-cli --server 127.0.0.1:50779 --timeout 2 health >/dev/null 2>&1 && break
  sleep 0.2
done
chroot --userspec=10001:10001 "$r" qlayer-cli --server 127.0.0.1:50779 --timeout 2 health
chroot "$r" qlayer-cli --server 127.0.0.1:50779 verify --layer model.layers.0.mlp.up_proj \
  --model /model | tail -1
curl -sf 127.0.0.1:9479/metrics | grep -q '^qlayer_layer_info' && echo "metrics: ok"
chmod -R u+w "$r/model"
echo "dockerfile stages: ok"
