#!/usr/bin/python3
"""Render a stepgraph replay trace (Chrome trace event JSON, as
`stepgraph demo --trace FILE` writes it) to a PNG timeline for the docs.

    build/tools/stepgraph demo --backend host --trace trace.json
    scripts/plot_trace.py trace.json --out docs/observability_trace.png [--replays 3]

One row per track (the device stream, its parallel lanes, the executor's
and the callers' threads); a bar per span, coloured by node name on the
stream, by kind elsewhere; replay spans drawn as outlines around their
nodes. --replays N shows the last N replays (and what the threads did
meanwhile), so that the bars are wide enough to read.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    tracks = {}
    spans = []
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            tracks[e["tid"]] = e["args"]["name"]
        elif e.get("ph") == "X":
            spans.append(e)
    return tracks, spans


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--replays", type=int, default=3, help="show the last N replays (0: everything)")
    args = ap.parse_args(argv)

    tracks, spans = load(args.trace)
    replays = sorted((s for s in spans if s["cat"] == "replay"), key=lambda s: s["ts"])
    if not replays:
        sys.exit(f"{args.trace}: no replay spans (was the run traced, and did it replay?)")
    if args.replays > 0:
        first = replays[-args.replays]
        lo = first["ts"] - 0.15 * first["dur"] - 20
        hi = replays[-1]["ts"] + replays[-1]["dur"] + 20
    else:
        lo = min(s["ts"] for s in spans)
        hi = max(s["ts"] + s["dur"] for s in spans)
    shown = [s for s in spans if s["ts"] >= lo and s["ts"] + s["dur"] <= hi]
    used = sorted({s["tid"] for s in shown}, key=lambda t: (0 if "stream" in tracks.get(t, "") else 1, t))
    row = {tid: i for i, tid in enumerate(used)}

    node_names = sorted({s["name"] for s in shown if s["cat"] == "node"})
    cmap = plt.get_cmap("tab10")
    node_colour = {n: cmap(i % 10) for i, n in enumerate(node_names)}
    kind_colour = {"executor": "#9e9e9e"}

    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.7 * len(used)))
    t0 = lo
    for s in shown:
        y = row[s["tid"]]
        x, w = (s["ts"] - t0), s["dur"]
        if s["cat"] == "replay":
            ax.add_patch(plt.Rectangle((x, y - 0.42), w, 0.84, fill=False, lw=1.2, ec="black"))
            ax.text(x + w / 2, y - 0.47, s["name"], ha="center", va="bottom", fontsize=7)
        elif s["cat"] == "node":
            ax.add_patch(plt.Rectangle((x, y - 0.32), w, 0.64, color=node_colour[s["name"]], lw=0))
        else:
            ax.add_patch(plt.Rectangle((x, y - 0.25), w, 0.5, color=kind_colour.get(s["cat"], "#bdbdbd"), lw=0.3,
                                       ec="white"))
            if w > 0.04 * (hi - lo):
                ax.text(x + w / 2, y, s["name"], ha="center", va="center", fontsize=6)
    ax.set_xlim(0, hi - lo)
    ax.set_ylim(-0.9, len(used) - 0.3)
    ax.set_yticks(range(len(used)))
    ax.set_yticklabels([tracks.get(t, str(t)) for t in used], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time (µs)")
    ax.set_title(f"{args.trace}: last {len(replays) if args.replays <= 0 else min(args.replays, len(replays))} "
                 "replay(s); nodes coloured by name, replays outlined", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in node_colour.values()]
    if handles:
        ax.legend(handles, node_colour.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  title="node", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"{args.out}: {len(shown)} span(s) on {len(used)} track(s)")


if __name__ == "__main__":
    main(sys.argv[1:])
