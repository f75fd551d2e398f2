"""Shared fixtures of the Python module's tests (ctest label python).

ctest sets PYTHONPATH to the build tree's package, STEPGRAPH_CLI to the
`stepgraph` program (the C++ reference for topology and placement) and
STEPGRAPH_TEST_DATA to tests/. Each test file skips itself, with the reason,
where numpy or the module cannot be imported.
"""

import os
import pathlib
import shutil

import pytest

TESTS = pathlib.Path(os.environ.get("STEPGRAPH_TEST_DATA", pathlib.Path(__file__).resolve().parents[1]))


@pytest.fixture
def fixture_path():
    return lambda name: TESTS / "topology" / "fixtures" / name


@pytest.fixture
def cli():
    path = os.environ.get("STEPGRAPH_CLI") or shutil.which("stepgraph")
    if not path or not os.path.exists(path):
        pytest.skip("the stepgraph program is not built (set STEPGRAPH_CLI)")
    return path
