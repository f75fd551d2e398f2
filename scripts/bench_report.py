#!/usr/bin/env python3
"""Turns bm_backend JSON into the ratio tables of docs/benchmarks.md.

usage: bench_report.py bm_backend.json [--backend Host|Cuda]
Prints, per chain length N: replay wall / serial-loop wall (host only),
stream-launch wall / replay wall, and the submitting thread's CPU time of N
enqueues / one graph launch. Uses the median of repetitions when present.
"""
import json
import re
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        data = json.load(f)
    rows = defaultdict(dict)
    for b in data["benchmarks"]:
        name = b["name"]
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        m = re.match(r"BM_(\w+?)_(\w+)/(\d+)", name)
        if not m:
            continue
        backend, what, n = m.group(1), m.group(2), int(m.group(3))
        rows[(backend, n)][what] = b
    return data.get("context", {}), rows


def main():
    path = sys.argv[1]
    backend = sys.argv[sys.argv.index("--backend") + 1] if "--backend" in sys.argv else "Host"
    ctx, rows = load(path)
    print(f"context: {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} cpus, "
          f"cuda: {ctx.get('cuda', '?')} {ctx.get('cuda_device', '')}")
    print()
    print("| N | replay / serial loop (wall) | stream launch / replay (wall) | "
          "submit CPU: N enqueues / 1 graph launch | replay wall (us) |")
    print("|---:|---:|---:|---:|---:|")
    for (b, n) in sorted(k for k in rows if k[0] == backend):
        r = rows[(b, n)]
        replay = r.get("GraphReplay")
        stream = r.get("StreamLaunch")
        serial = rows.get(("Host", n), {}).get("SerialLoop")
        if not replay or not stream:
            continue
        rt = replay["real_time"]
        ratio_serial = f"{rt / serial['real_time']:.3f}" if serial and b == "Host" else "—"
        ratio_stream = f"{stream['real_time'] / rt:.2f}"
        submit = stream["submit_cpu_us"] / replay["submit_cpu_us"]
        print(f"| {n} | {ratio_serial} | {ratio_stream} | {submit:.1f} | {rt:.1f} |")


if __name__ == "__main__":
    main()
