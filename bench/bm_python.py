#!/usr/bin/env python3
"""Overhead of a replay through Python against the same replay from C++
(issue 20's target: <= 1.10x), measured in the same process on the same
executor.

Each replay is one step of the demo MLP (the "demo.mlp_step" kernel: seven
host kernels) on the host backend: acquire_inputs, replay, wait, release.
The Python loop makes those four calls through the module; the baseline is
the same loop in C++ (_stepgraph._bench_cpp_replays), on the same executor,
with the GIL released. Rounds alternate which loop goes first; the ratio is
of the medians of the per-round times per replay.

    PYTHONPATH=build/python /usr/bin/python3 bench/bm_python.py [--replays N] [--rounds R] [--json out.json]
"""

import argparse
import json
import platform
import statistics
import sys
import time

import stepgraph as sg


def python_loop(ex, n):
    t0 = time.perf_counter()
    for _ in range(n):
        slot = ex.acquire_inputs()
        h = ex.replay(slot)
        if h.wait() != "done":
            raise RuntimeError(f"replay of step {h.step} ended {h.status}")
        h.release()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replays", type=int, default=2000, help="replays per loop and round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--inputs", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    ex = sg.StepExecutor(sg.mlp_step(args.batch, args.inputs, args.hidden), backend="host", warmup=3,
                         max_in_flight=2)
    ex.write_state("params", sg.demo.init_params(args.batch, args.inputs, args.hidden, 1))
    ex.set_learning_rate(0.0)  # the parameters stay finite however many replays run
    ex.prepare()
    python_loop(ex, min(args.replays, 200))  # warm both paths (caches, the executor's thread)
    sg._bench_cpp_replays(ex, min(args.replays, 200))

    py_us, cpp_us = [], []
    for r in range(args.rounds):
        order = [("py", python_loop), ("cpp", sg._bench_cpp_replays)]
        if r % 2:
            order.reverse()
        for name, loop in order:
            us = loop(ex, args.replays) / args.replays * 1e6
            (py_us if name == "py" else cpp_us).append(us)
    ex.close()

    py_med, cpp_med = statistics.median(py_us), statistics.median(cpp_us)
    ratios = sorted(p / c for p, c in zip(py_us, cpp_us))
    result = {
        "benchmark": "BM_Python_ReplayDemoStep",
        "replays_per_round": args.replays,
        "rounds": args.rounds,
        "shape": {"batch": args.batch, "inputs": args.inputs, "hidden": args.hidden},
        "python_us_per_replay": py_us,
        "cpp_us_per_replay": cpp_us,
        "python_median_us": py_med,
        "cpp_median_us": cpp_med,
        "ratio": py_med / cpp_med,
        "round_ratio_min": ratios[0],
        "round_ratio_median": statistics.median(ratios),
        "round_ratio_max": ratios[-1],
        "context": {"python": sys.version.split()[0], "machine": platform.machine(), "node": platform.node(),
                    "backend": "host"},
    }
    print(f"replay of the demo step (host backend), {args.rounds} rounds x {args.replays} replays:")
    print(f"  python  median {py_med:9.2f} us/replay")
    print(f"  c++     median {cpp_med:9.2f} us/replay")
    print(f"  ratio   {result['ratio']:.3f}  (per round: min {ratios[0]:.3f}, median "
          f"{result['round_ratio_median']:.3f}, max {ratios[-1]:.3f}; target <= 1.10)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
