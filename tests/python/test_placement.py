"""stepgraph.place() against a reference kept by the test (round robin on a
chain) and against the C++ `stepgraph place` program (HEFT, the same graph
and topology)."""

import json
import subprocess

import pytest

from sgtest import np, sg


def chain(n, cost_us=10.0, edge_bytes=1 << 20):
    g = sg.Graph()
    buf = [g.add_buffer(f"b{i}", edge_bytes) for i in range(n)]
    nodes = []
    for i in range(n):
        acc = [(buf[i], 0, edge_bytes, "write")]
        if i:
            acc.append((buf[i - 1], 0, edge_bytes, "read"))
        nodes.append(g.add_kernel(f"k{i}", gpu_us=cost_us, accesses=acc))
    for a, b in zip(nodes, nodes[1:]):
        g.connect(a, b)
    return g


def test_round_robin_on_a_chain_cycles_the_devices():
    g = chain(7)
    assert g.node_count == 7 and g.edge_count == 6
    assert all(e[2] == 1 << 20 for e in g.edges)  # connect() without bytes: the write/read overlap
    p = sg.place(g, sg.Platform.uniform(3), "rr")
    assert p.algorithm == "rr"
    assert p.devices == [i % 3 for i in range(7)]  # the chain's only topological order, device i mod 3
    # A chain runs one node after another.
    for i in range(1, 7):
        assert p.start_us[i] >= p.finish_us[i - 1]


def test_heft_matches_the_cli(cli, fixture_path, tmp_path):
    graph = tmp_path / "g.json"
    out = tmp_path / "placement.json"
    topo = fixture_path("dgx1-v100-layout.xml")
    subprocess.run([cli, "graph", "--generate", "forkjoin", "--stages", "3", "--width", "6", "-o", str(graph)],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([cli, "place", "--graph", str(graph), "--topo", str(topo), "--algo", "heft", "--placement-out",
                    str(out)], check=True, capture_output=True, timeout=120)
    ref = json.loads(out.read_text())
    g = sg.Graph.load_json(graph)
    p = sg.place(g, sg.Topology.load(topo), "heft")
    assert p.devices == [n["device"] for n in ref["nodes"]]
    assert p.start_us == [n["start_us"] for n in ref["nodes"]]
    assert p.estimated_makespan_us == ref["estimated_makespan_us"]
    assert p.device_order == ref["device_order"]
    assert len(p.device_names) == 8
    assert json.loads(p.to_json()) == ref


def test_bad_placement_input_raises_value_errors():
    g = chain(3)
    with pytest.raises(sg.InvalidArgument) as e:
        sg.place(g, sg.Platform.uniform(2), "nonsense")
    assert isinstance(e.value, ValueError)
    with pytest.raises(ValueError):
        g.add_kernel("bad", gpu_us=-1.0)
    with pytest.raises(ValueError):
        sg.Platform.uniform(0)
