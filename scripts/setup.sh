#!/usr/bin/env bash
# Installs the Debian packages stepgraph's build, tests and benchmarks need.
# Idempotent: installs only what is missing (apt-get update only then).
# The CUDA 13 toolkit and NCCL come with the machine image; without them the
# build still succeeds with the host backend alone.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config ccache
  libhwloc-dev hwloc
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin iproute2
  libtorch-dev
  nlohmann-json3-dev libcli11-dev libpugixml-dev libfmt-dev libspdlog-dev
  python3 python3-matplotlib python3-dev python3-numpy python3-pytest pybind11-dev
  libcpp-httplib-dev prometheus golang-go
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
if command -v nvcc >/dev/null 2>&1; then
  echo "setup: $(nvcc --version | tail -1)"
else
  echo "setup: nvcc not found: the cuda backend will not be built (host backend only)"
fi
