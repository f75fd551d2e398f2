"""numpy and stepgraph for the test files: under ctest (which sets
STEPGRAPH_REQUIRE_MODULE=1 once CMake has seen numpy and pytest) a module
that does not import is a failure; elsewhere the test file is skipped with
the reason."""

import os

import pytest

if os.environ.get("STEPGRAPH_REQUIRE_MODULE") == "1":
    import numpy as np  # noqa: F401
    import stepgraph as sg  # noqa: F401
else:
    np = pytest.importorskip("numpy", reason="numpy is not installed for this Python")
    sg = pytest.importorskip("stepgraph", reason="the stepgraph module is not importable (PYTHONPATH=<build>/python?)")
