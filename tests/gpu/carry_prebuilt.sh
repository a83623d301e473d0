#!/usr/bin/env bash
# Packs the GPU test binaries (and the service binaries) built on this (developer) machine with
# QLAYER_CUDA=on, plus the shared libraries they need that a CUDA image may
# lack (Abseil, oneDNN, libstdc++, cudart; not glibc, not the driver, not
# cuBLAS), into DEST/{bin,lib}, for tests/gpu/run.sh's QLAYER_GPU_PREBUILT.
# Usage: tests/gpu/carry_prebuilt.sh BUILD_DIR DEST [SM80_PTX_BUILD_DIR]
# SM80_PTX_BUILD_DIR: a build with -DCMAKE_CUDA_ARCHITECTURES=80-virtual (the
# sm_80 code as PTX only); its GPU tests are carried as
# qlayer_gpu_tests_sm80ptx, which run.sh runs: the driver compiles that PTX
# for the GPU at hand, so the Ampere code path is checked on a Hopper.
set -euo pipefail
build=$1
dest=$2
sm80=${3:-}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib"
cp "$build/tests/gpu/qlayer_gpu_tests" "$build/tests/gpu/qlayer_gpu_bench" "$dest/bin/"
if [[ -n "$sm80" ]]; then
  cp "$sm80/tests/gpu/qlayer_gpu_tests" "$dest/bin/qlayer_gpu_tests_sm80ptx"
fi
# The service binaries, for tests/gpu/service_e2e.sh (when they were built).
for b in server/qlayer-server server/qlayer-quantize client/qlayer-cli; do
  [[ -x "$build/$b" ]] && cp "$build/$b" "$dest/bin/"
done
for b in "$dest"/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | ld-linux* | libcuda.so* | \
      libcublas* ) ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
strip --strip-debug "$dest"/bin/* "$dest"/lib/* 2>/dev/null || true
du -sh "$dest"
