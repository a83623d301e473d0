# Sourced by tsan_absl.sh and tsan_grpc.sh, which rebuild a Debian package's
# own source with TSan: makes `apt-get source` work and installs the build
# packages named as arguments (dpkg-dev always).
#   source scripts/debian_source_setup.sh [package ...]
# Adds the deb-src entry for Debian's archive (same URIs, suites and key as
# /etc/apt/sources.list.d/debian.sources) when none is configured.
qlayer_sudo=()
[ "$(id -u)" -eq 0 ] || qlayer_sudo=(sudo)
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources |
    "${qlayer_sudo[@]}" tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
  "${qlayer_sudo[@]}" apt-get update -qq
fi
for qlayer_pkg in dpkg-dev "$@"; do
  dpkg -s "$qlayer_pkg" >/dev/null 2>&1 ||
    DEBIAN_FRONTEND=noninteractive "${qlayer_sudo[@]}" apt-get install -y -qq \
      --no-install-recommends "$qlayer_pkg"
done
