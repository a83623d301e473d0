#!/usr/bin/env bash
# Installs the Debian packages qlayer needs that are not installed yet.
# Sourced by scripts/test and scripts/run; safe to run on its own.
set -euo pipefail
QLAYER_DEBIAN_PACKAGES=(
  cmake ninja-build g++ ccache pkg-config
  libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libdnnl-dev prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-grpcio python3-torch curl
  # `pip install ./client/python` offline (README, tests/e2e/pip_install_e2e_test):
  # a venv with pip (PEP 668 forbids installing into /usr/bin/python3), built
  # --no-build-isolation with the system's setuptools and wheel
  python3-venv python3-setuptools python3-wheel
  libssl-dev openssl  # token digests; the security tests make a throwaway PKI
  yamllint            # tests/deploy lints deploy/
)
missing=()
for p in "${QLAYER_DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "qlayer: installing missing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
