#!/usr/bin/env bash
# Configures and builds qlayer into ${QLAYER_BUILD_DIR:-build}.
#   QLAYER_CUDA=auto|on|off (default off here: CI has no GPU; tests/gpu/run.sh sets on)
#   QLAYER_SANITIZE=address,undefined | thread
#   QLAYER_TSAN_ABSL_LIBDIR: TSan-built Abseil to link with a rpath (scripts/test sets it)
#   QLAYER_FUZZ_ONLY=ON: only the fuzz targets and the sources they need
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${QLAYER_BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE="${QLAYER_BUILD_TYPE:-RelWithDebInfo}" \
  -DQLAYER_CUDA="${QLAYER_CUDA:-off}" \
  -DQLAYER_SANITIZE="${QLAYER_SANITIZE:-}" \
  -DQLAYER_TSAN_ABSL_LIBDIR="${QLAYER_TSAN_ABSL_LIBDIR:-}" \
  -DQLAYER_FUZZ_ONLY="${QLAYER_FUZZ_ONLY:-OFF}" >/dev/null
cmake --build "$build_dir" -- -j"${QLAYER_JOBS:-$(nproc)}"
