"""stepgraph for Python: topology, placement, and the StepExecutor.

Everything is the C++ library underneath (the compiled ``_stepgraph``
module); see docs/embedding.md ("Python") for the zero-copy and GIL rules.

    import numpy as np, stepgraph as sg
    topo = sg.Topology.load("dgx1.xml")
    topo.cost_matrix().bandwidth_gbps          # numpy, n x n
    sg.place(sg.Graph.load_json("g.json"), topo, "heft").devices
    ex = sg.StepExecutor(step, backend="host")  # step: a sg.Step of registered kernels
    slot = ex.acquire_inputs()
    np.asarray(slot.input("x"))[:] = x          # writes the pinned input in place
    h = ex.replay(slot); h.result(timeout=10)
"""

import atexit as _atexit

from ._stepgraph import (  # noqa: F401  (the public API)
    CostMatrix,
    DeviceFault,
    Error,
    Graph,
    InputSlot,
    InvalidArgument,
    InvalidState,
    PinnedBuffer,
    Placement,
    Platform,
    ReplayHandle,
    Step,
    StepError,
    StepExecutor,
    Timeout,
    Topology,
    demo,
    kernels,
    place,
)
from ._stepgraph import _bench_cpp_replays  # noqa: F401  (bench/bm_python.py)
from .mlp import mlp_step  # noqa: F401
from ._stepgraph import _at_exit

# Note [Interpreter shutdown] (python/src/module.h): from here on, callbacks
# of executors still alive are no longer called.
_atexit.register(_at_exit)

__all__ = [
    "CostMatrix", "DeviceFault", "Error", "Graph", "InputSlot", "InvalidArgument", "InvalidState",
    "PinnedBuffer", "Placement", "Platform", "ReplayHandle", "Step", "StepError", "StepExecutor",
    "Timeout", "Topology", "demo", "kernels", "place", "mlp_step",
]
