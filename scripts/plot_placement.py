#!/usr/bin/python3
"""Turn bm_placement's Google Benchmark JSON into the plots and tables of
docs/placement.md.

    build/bench/bm_placement --benchmark_out=placement.json --benchmark_out_format=json
    scripts/plot_placement.py placement.json [more.json ...] --out docs [--tables tables.md]

Writes docs/placement_slr.png, docs/placement_blind_ratio.png,
docs/placement_scale.png and prints Markdown tables (or writes --tables):
the grid's, the scaling benchmark's, the transformer step's and the search
benchmark's (BM_Placement_Search), each for the results it is given. The
grid split over two processes, as docs/placement.md runs it, is merged here.
"""
import argparse
import collections
import json
import os
import re
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALGOS = ["heft", "heft-blind", "rr", "greedy"]
GRID = re.compile(
    r"BM_Placement_Grid/(?P<topo>\w+)/(?P<set>\w+)/n:(?P<n>\d+)/alpha:(?P<alpha>[\d.]+)/deg:(?P<deg>\d+)"
    r"/ccr:(?P<ccr>[\d.]+)/beta:(?P<beta>[\d.]+)")
SCALE = re.compile(r"BM_Placement_Scale/(?P<algo>[\w-]+)/(?P<n>\d+)")
TRANS = re.compile(r"BM_Placement_Transformer/(?P<topo>\w+)/(?P<algo>[\w-]+)")
SEARCH = re.compile(
    r"BM_Placement_Search/(?P<topo>\w+)/(?P<set>\w+)/n:(?P<n>\d+)/alpha:(?P<alpha>[\d.]+)/deg:(?P<deg>\d+)"
    r"/ccr:(?P<ccr>[\d.]+)")
UNEVEN = {"dgx1", "ndv2", "power8"}
TOPOS = ["dgx1", "ndv2", "power8", "dgx2"]


def load(paths):
    """Merge the benchmarks of several JSON files (later files win per name)."""
    benches = {}
    ctx = {}
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        ctx.update(doc.get("context", {}))
        for b in doc["benchmarks"]:
            # With --benchmark_repetitions keep the median only.
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") != "median":
                    continue
                benches[b["run_name"]] = b
            elif b.get("repetitions", 1) <= 1 or b["run_name"] not in benches:
                benches[b.get("run_name", b["name"])] = b
    grid, scale, trans, search = [], [], [], []
    for name, b in benches.items():
        m = GRID.match(name)
        if m:
            row = {k: m.group(k) for k in ("topo", "set")}
            row.update(n=int(m.group("n")), alpha=float(m.group("alpha")), deg=int(m.group("deg")),
                       ccr=float(m.group("ccr")), beta=float(m.group("beta")))
            row.update({k: v for k, v in b.items() if isinstance(v, (int, float))})
            grid.append(row)
            continue
        m = SCALE.match(name)
        if m:
            scale.append(dict(algo=m.group("algo"), n=int(m.group("n")), time_ms=b["cpu_time"],
                              real_ms=b["real_time"], unit=b["time_unit"], peak=b["peak_bytes"], edges=b["edges"]))
            continue
        m = TRANS.match(name)
        if m:
            trans.append(dict(topo=m.group("topo"), algo=m.group("algo"), makespan=b["makespan_us"],
                              lb_ratio=b["lb_ratio"]))
            continue
        m = SEARCH.match(name)
        if m:
            row = m.groupdict()
            row.update({k: v for k, v in b.items() if isinstance(v, (int, float))})
            search.append(row)
    return ctx, grid, scale, trans, search


def plot_slr(grid, out):
    ccrs = sorted({r["ccr"] for r in grid})
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), sharex=True)
    for row, dset in enumerate(["gpus", "mixed"]):
        for col, topo in enumerate(TOPOS):
            ax = axes[row][col]
            for algo in ALGOS:
                ys = []
                for c in ccrs:
                    cells = [r for r in grid if r["topo"] == topo and r["set"] == dset and r["ccr"] == c]
                    ys.append(statistics.mean(r["slr_" + algo] for r in cells) if cells else float("nan"))
                ax.plot(ccrs, ys, marker="o", label=algo)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{topo} / {dset}")
            ax.grid(True, which="both", alpha=0.3)
            if col == 0:
                ax.set_ylabel("mean SLR (log)")
            if row == 1:
                ax.set_xlabel("CCR")
    axes[0][0].legend()
    fig.suptitle("Schedule length ratio vs CCR (mean over n, shape, out-degree, 10 seeds)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "placement_slr.png"), dpi=90)
    plt.close(fig)


def plot_blind(grid, out):
    ccrs = sorted({r["ccr"] for r in grid})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for topo in TOPOS:
        for dset, style in (("gpus", "-"), ("mixed", "--")):
            ys = []
            for c in ccrs:
                cells = [r for r in grid if r["topo"] == topo and r["set"] == dset and r["ccr"] == c]
                ys.append(statistics.mean(r["heft_over_blind"] for r in cells))
            ax.plot(ccrs, ys, style, marker="o", label=f"{topo}/{dset}")
    ax.axhline(0.9, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("CCR")
    ax.set_ylabel("makespan HEFT / HEFT blind to topology")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Topology-aware over topology-blind HEFT (mean of cells)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "placement_blind_ratio.png"), dpi=90)
    plt.close(fig)


def plot_scale(scale, out):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for algo in sorted({s["algo"] for s in scale}):
        pts = sorted((s["n"], s["time_ms"], s["peak"]) for s in scale if s["algo"] == algo)
        a1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=algo)
        a2.plot([p[0] for p in pts], [p[2] / 2**20 for p in pts], marker="o", label=algo)
    for ax, yl in ((a1, "scheduling CPU time (ms)"), (a2, "peak heap growth (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes")
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("place() on the DGX-1 layout, 8 GPUs (random DAG, out-degree 3, CCR 1)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "placement_scale.png"), dpi=90)
    plt.close(fig)


def tables(ctx, grid, scale, trans, search):
    lines = []
    p = lines.append
    if grid:
        p("### Target 1: HEFT vs the best baseline, every cell (mean over seeds)\n")
        p("HEFT's portfolio contains heft-blind's list schedules (docs/placement.md, Note [HEFT portfolio]), so HEFT <= "
          "heft-blind holds by construction; the last two columns leave heft-blind out and compare with round-robin and "
          "greedy only. 'uniform kept', 'NUMA kept' and 'shared kept' count the placements (of 10 seeds x cells) where "
          "HEFT returned a list built on the uniform view, on one NUMA node's devices (Note [NUMA subsets]), or with "
          "links as shared bandwidth (Note [Shared bandwidth in HEFT]).\n")
        p("| topology | device set | cells | cells HEFT <= best baseline | worst HEFT / best baseline | "
          "mean HEFT / best baseline | uniform kept | NUMA kept | shared kept | worst HEFT / best of rr, greedy | "
          "mean HEFT / best of rr, greedy |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

        def over_rr_greedy(r):
            return r["makespan_heft"] / min(r["makespan_rr"], r["makespan_greedy"])

        for topo in TOPOS:
            for dset in ("gpus", "mixed"):
                cells = [r for r in grid if r["topo"] == topo and r["set"] == dset]
                if not cells:
                    continue
                ok = sum(r["heft_over_best_baseline"] <= 1.0 + 1e-9 for r in cells)
                kept = sum(int(r.get("heft_uniform_view", 0)) for r in cells)
                numa = sum(int(r.get("heft_numa_subset", 0)) for r in cells)
                shared = sum(int(r.get("heft_shared_view", 0)) for r in cells)
                p(f"| {topo} | {dset} | {len(cells)} | {ok} | {max(r['heft_over_best_baseline'] for r in cells):.3f} | "
                  f"{statistics.mean(r['heft_over_best_baseline'] for r in cells):.3f} | {kept} | {numa} | {shared} | "
                  f"{max(over_rr_greedy(r) for r in cells):.3f} | {statistics.mean(over_rr_greedy(r) for r in cells):.3f} |")
        failing = [r for r in grid if r["heft_over_best_baseline"] > 1.0 + 1e-9]
        if failing:
            p("\nCells where HEFT is above the best baseline:\n")
            p("| topology | set | n | alpha | deg | CCR | HEFT / best baseline |")
            p("|---|---|---:|---:|---:|---:|---:|")
            for r in sorted(failing, key=lambda r: -r["heft_over_best_baseline"])[:25]:
                p(f"| {r['topo']} | {r['set']} | {r['n']} | {r['alpha']} | {r['deg']} | {r['ccr']} | "
                  f"{r['heft_over_best_baseline']:.4f} |")
            if len(failing) > 25:
                p(f"\n({len(failing) - 25} more)")
        p("\n### Target 2: HEFT vs topology-blind HEFT on the uneven topologies, CCR >= 1\n")
        p("| topology | device set | CCR | cells | cells >= 10 % below blind | mean HEFT / blind | worst HEFT / blind |")
        p("|---|---|---:|---:|---:|---:|---:|")
        for topo in TOPOS:
            for dset in ("gpus", "mixed"):
                for c in (1.0, 5.0, 10.0):
                    cells = [r for r in grid if r["topo"] == topo and r["set"] == dset and r["ccr"] == c]
                    if not cells:
                        continue
                    ok = sum(r["heft_over_blind"] <= 0.9 for r in cells)
                    tag = "" if topo in UNEVEN else " (uniform, not a target)"
                    p(f"| {topo}{tag} | {dset} | {c:g} | {len(cells)} | {ok} | "
                      f"{statistics.mean(r['heft_over_blind'] for r in cells):.3f} | "
                      f"{max(r['heft_over_blind'] for r in cells):.3f} |")
        p("\n### Mean SLR and ratio to the lower bound, per topology and CCR (n = 1000, mean over shape and out-degree)\n")
        p("| topology | set | CCR | SLR heft | SLR heft-blind | SLR rr | SLR greedy | LB-ratio heft | LB-ratio heft-blind | LB-ratio rr | LB-ratio greedy |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for topo in TOPOS:
            for dset in ("gpus", "mixed"):
                for c in sorted({r["ccr"] for r in grid}):
                    cells = [r for r in grid if r["topo"] == topo and r["set"] == dset and r["ccr"] == c and r["n"] == 1000]
                    if not cells:
                        continue
                    slr = [statistics.mean(r["slr_" + a] for r in cells) for a in ALGOS]
                    lbr = [statistics.mean(r["lb_ratio_" + a] for r in cells) for a in ALGOS]
                    p(f"| {topo} | {dset} | {c:g} | " + " | ".join(f"{x:.2f}" for x in slr + lbr) + " |")
    if scale:
        p("\n### Scheduling time and peak memory (DGX-1 layout, 8 GPUs)\n")
        p("| algorithm | nodes | edges | CPU time | wall time | peak heap growth |")
        p("|---|---:|---:|---:|---:|---:|")
        for s in sorted(scale, key=lambda s: (s["algo"], s["n"])):
            p(f"| {s['algo']} | {s['n']} | {int(s['edges'])} | {s['time_ms']:.2f} {s['unit']} | "
              f"{s['real_ms']:.2f} {s['unit']} | {s['peak'] / 2**20:.2f} MiB |")
        by = {(s["algo"], s["n"]): s for s in scale}
        for algo in sorted({s["algo"] for s in scale}):
            if (algo, 10000) in by and (algo, 100000) in by:
                t = by[(algo, 100000)]["time_ms"] / by[(algo, 10000)]["time_ms"]
                m = by[(algo, 100000)]["peak"] / by[(algo, 10000)]["peak"]
                p(f"\n{algo}: t(100k)/t(10k) = {t:.2f} on CPU time (target <= 15), "
                  f"peak memory ratio = {m:.2f} (target <= 11)")
    if trans:
        p("\n### 12-layer transformer step (simulated makespan, ms; ratio to the lower bound)\n")
        p("| topology | " + " | ".join(ALGOS) + " |")
        p("|---|" + "---:|" * len(ALGOS))
        for topo in TOPOS:
            row = {t["algo"]: t for t in trans if t["topo"] == topo}
            if row:
                p(f"| {topo} | " + " | ".join(
                    f"{row[a]['makespan'] / 1e3:.2f} ({row[a]['lb_ratio']:.2f})" if a in row else "-" for a in ALGOS) + " |")
    if search:
        p("\n### Placement search: the list portfolio alone and with the default search (mean over seeds)\n")
        p("| topology | set | n | α | deg | CCR | lists / best baseline | lists+search / best baseline | "
          "lists / blind | lists+search / blind | search gain | evaluations | search time per graph |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in search:
            p(f"| {r['topo']} | {r['set']} | {r['n']} | {r['alpha']} | {r['deg']} | {r['ccr']} | "
              f"{r['heft_over_best_baseline']:.3f} | **{r['search_over_best_baseline']:.3f}** | "
              f"{r['heft_over_blind']:.3f} | **{r['search_over_blind']:.3f}** | {r['search_over_heft']:.3f} | "
              f"{r['evaluations']:.0f} | {r['search_seconds_per_graph']:.3f} s |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="one or more bm_placement JSON files (merged)")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--tables", help="write the Markdown tables here instead of stdout")
    a = ap.parse_args()
    ctx, grid, scale, trans, search = load(a.json)
    if not grid and not scale and not search:
        sys.exit("no BM_Placement_* results in " + ", ".join(a.json))
    os.makedirs(a.out, exist_ok=True)
    if grid:
        plot_slr(grid, a.out)
        plot_blind(grid, a.out)
    if scale:
        plot_scale(scale, a.out)
    text = tables(ctx, grid, scale, trans, search)
    if a.tables:
        with open(a.tables, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
