#!/usr/bin/env bash
# README command 2: set up, build (warnings are errors), run every test.
# GPU-labelled tests skip themselves, with the reason, where no GPU is present.
# Then the cpu suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# and under ThreadSanitizer (CMakePresets.json asan, tsan: host backend, no
# benchmarks, build-asan/ and build-tsan/; what they exclude and why, and the
# measured times: docs/reliability.md). SG_SKIP_SANITIZERS=1 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keyed on paths relative to the checkout (and not on the build
# directory), so that a fresh clone elsewhere reuses what an earlier one
# compiled; debug info then names the first checkout's paths.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
bash scripts/setup.sh
bash scripts/build.sh ci
ctest --preset ci -j "$(nproc)"
SG_FUZZ_RUNS=0 bash scripts/fuzz.sh 30  # libFuzzer over each seed corpus only: reproducible (docs/reliability.md, "Fuzzing")
if [ "${SG_SKIP_SANITIZERS:-0}" != 1 ]; then
  for preset in asan tsan; do
    start=$SECONDS
    cmake --preset "$preset"
    cmake --build --preset "$preset" -j "$(nproc)"
    ctest --preset "$preset" -j "$(nproc)"
    echo "test.sh: $preset suite: $((SECONDS - start)) s (configure, build, ctest)"
  done
fi
echo "test.sh: everything passed in $SECONDS s"
