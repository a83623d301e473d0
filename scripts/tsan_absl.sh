#!/usr/bin/env bash
# Builds Debian's own Abseil source -- the exact version of the installed
# libabsl20220623, Debian's patches applied, so it is ABI-compatible with
# Debian's libgrpc++ / libgrpc (they link libabsl_*.so.20220623) -- with
# -fsanitize=thread, into ${QLAYER_TSAN_ABSL_DIR:-build-tsan-absl}/prefix/lib.
# Once; later calls see prefix/.done and return at once.
#
# Why (RELIABILITY.md, Sanitizers): Debian's Abseil is not built with TSan, so
# absl::Mutex / CondVar (used by qlayer and, through grpc_core::Mutex / gpr_mu,
# by gRPC) are invisible to TSan and every hand-off they protect is reported as
# a race. Built with -fsanitize=thread, Abseil's ABSL_INTERNAL_HAVE_TSAN_INTERFACE
# annotations tell TSan about every Lock/Unlock/Await/Wait, from our code and
# from gRPC's alike. The TSan build of qlayer links these with a DT_RPATH
# (CMakeLists.txt, QLAYER_TSAN_ABSL_DIR): a rpath, not LD_LIBRARY_PATH, so that
# the Python tests' interpreter (python3-grpcio links libabsl too) keeps
# Debian's uninstrumented Abseil and does not load libtsan late.
#
# Needs the deb-src entry for Debian's archive (added here, same URIs, suites
# and key as /etc/apt/sources.list.d/debian.sources) and dpkg-dev.
# About 250 objects: ~10 min on 2 busy cores.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${QLAYER_TSAN_ABSL_DIR:-$PWD/build-tsan-absl}
[ -f "$dir/prefix/.done" ] && exit 0

version=$(dpkg-query -W -f='${Version}' libabsl20220623)
echo "qlayer: building Debian's Abseil $version with -fsanitize=thread into $dir (once)"
source scripts/debian_source_setup.sh

rm -rf "$dir/src" "$dir/build" "$dir/prefix"
mkdir -p "$dir/src"
(cd "$dir/src" && apt-get source -qq "abseil=$version")
src=$(find "$dir/src" -mindepth 1 -maxdepth 1 -type d -name 'abseil-*')
# debian/rules' shared build: C++17, BUILD_SHARED_LIBS, Debian's SONAMEs
# (debian/patches/configure.diff: libabsl_*.so.20220623, inline namespace
# debian3, the std:: aliases off). -O1 as TSan recommends.
cmake -S "$src" -B "$dir/build" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON -DBUILD_TESTING=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -O1 -g -fno-omit-frame-pointer" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DCMAKE_INSTALL_PREFIX="$dir/prefix" -DCMAKE_INSTALL_LIBDIR=lib >/dev/null
cmake --build "$dir/build" -- -j"${QLAYER_JOBS:-$(nproc)}"
cmake --install "$dir/build" >/dev/null
touch "$dir/prefix/.done"
