#!/usr/bin/env bash
# README command 2: set up, build (warnings are errors), run every test.
# GPU-labelled tests skip themselves, with the reason, where no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh ci
ctest --preset ci -j "$(nproc)"
