#!/usr/bin/env bash
# Configures and builds with the given preset (default: default).
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keyed on paths relative to the checkout (and not on the build
# directory), so that a fresh clone elsewhere reuses what an earlier one
# compiled; debug info then names the first checkout's paths.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
preset=${1:-default}
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$(nproc)"
