#!/usr/bin/env bash
# The full soak (issue 19, item 3; docs/reliability.md): the demo step
# replayed 10 000 times with 2 slots and pipelined callbacks; RSS after the
# first 1 000 replays and at the end within 1%, no fd or thread gained, every
# replay done, and the result bit-identical to an eager run.
#   bash scripts/soak.sh [replays] [backend]    (defaults: 10000, auto)
# ctest runs the short form (soak_demo_1000) in the normal and asan suites.
set -euo pipefail
cd "$(dirname "$0")/.."
replays=${1:-10000}
backend=${2:-auto}
cmake --preset soak
cmake --build --preset soak -j "$(nproc)"
timeout 1800 build-soak/tests/soak/soak_demo "$replays" "$backend"
