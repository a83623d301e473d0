#!/usr/bin/env bash
# Builds Debian's own gRPC source -- the exact version of the installed
# libgrpc29 / libgrpc++1.51, Debian's patches applied, Debian's CMake options
# (debian/rules: every dependency from the system, shared libraries, the same
# SONAMEs libgrpc.so.29, libgrpc++.so.1.51, ...) -- with -fsanitize=thread,
# into ${QLAYER_TSAN_GRPC_DIR:-build-tsan-grpc}/prefix/lib.
# Once; later calls see prefix/.done and return at once.
#
# Why (RELIABILITY.md, Sanitizers): with only Abseil rebuilt (tsan_absl.sh),
# TSan still cannot see the lock-free hand-offs inside libgrpc.so.29 (its
# combiner, work serializer, completion-queue and call-state atomics are
# compiled uninstrumented), so every buffer or protobuf message gRPC passes
# from one thread to another is reported as a race. Built with TSan, those
# atomics are instrumented and the hand-offs become happens-before edges.
# Only the libraries qlayer links are built (grpc++, grpc++_reflection and
# what they need: grpc, gpr, upb, address_sorting); the TSan build of qlayer
# finds them, before Debian's, through the same DT_RPATH as the TSan Abseil.
#
# Needs the deb-src entry, dpkg-dev and libprotoc-dev (installed here). 864 build steps:
# about 35 min on 2 cores shared with other work (2026-12-08).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${QLAYER_TSAN_GRPC_DIR:-$PWD/build-tsan-grpc}
[ -f "$dir/prefix/.done" ] && exit 0

version=$(dpkg-query -W -f='${source:Version}' libgrpc29)
echo "qlayer: building Debian's gRPC $version with -fsanitize=thread into $dir (once)"
# libprotoc-dev: gRPC's CMake links grpc_plugin_support against libprotoc
# even when only the runtime libraries are built.
source scripts/debian_source_setup.sh libprotoc-dev

rm -rf "$dir/src" "$dir/build" "$dir/prefix"
mkdir -p "$dir/src"
(cd "$dir/src" && apt-get source -qq "grpc=$version")
src=$(find "$dir/src" -mindepth 1 -maxdepth 1 -type d -name 'grpc-*')
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# debian/rules' COMMON_BUILD_FLAGS for the shared build, tests and plugins off.
# -O1 as TSan recommends. No build-tree RUNPATH in the copied libraries: a
# RUNPATH would take their libabsl lookups away from the executable's DT_RPATH.
flags="-fsanitize=thread -O1 -g1 -fno-omit-frame-pointer"
cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=None "${launcher[@]}" \
  -DBUILD_SHARED_LIBS=ON -DgRPC_BUILD_TESTS=OFF \
  -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package \
  -DgRPC_PROTOBUF_PROVIDER=package -DgRPC_RE2_PROVIDER=package \
  -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
  -DgRPC_BENCHMARK_PROVIDER=none -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF \
  -DgRPC_BUILD_CODEGEN=ON -DgRPC_BUILD_CSHARP_EXT=OFF \
  -DgRPC_BUILD_GRPC_CSHARP_PLUGIN=OFF -DgRPC_BUILD_GRPC_NODE_PLUGIN=OFF \
  -DgRPC_BUILD_GRPC_OBJECTIVE_C_PLUGIN=OFF -DgRPC_BUILD_GRPC_PHP_PLUGIN=OFF \
  -DgRPC_BUILD_GRPC_PYTHON_PLUGIN=OFF -DgRPC_BUILD_GRPC_RUBY_PLUGIN=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" -DCMAKE_SKIP_BUILD_RPATH=ON \
  -DCMAKE_INSTALL_PREFIX="$dir/prefix" -DgRPC_INSTALL_LIBDIR=lib >/dev/null
cmake --build "$dir/build" --target grpc++ grpc++_reflection -- -j"${QLAYER_JOBS:-$(nproc)}"
mkdir -p "$dir/prefix/lib"
# Only the shared objects (and their SONAME links): headers and CMake files
# stay Debian's, which these are built from.
for lib in grpc++ grpc++_reflection grpc gpr upb address_sorting; do
  cp -a "$dir/build/lib$lib.so"* "$dir/prefix/lib/"
done
touch "$dir/prefix/.done"
