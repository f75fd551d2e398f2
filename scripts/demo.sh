#!/usr/bin/env bash
# README command 1: set up, build, run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh default
./build/tools/stepgraph demo
# Data-parallel on two devices (host devices where no GPU is present).
./build/tools/stepgraph demo --devices 2 --backend host
