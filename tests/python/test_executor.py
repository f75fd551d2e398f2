"""The StepExecutor from Python: training bit-identical to the C++ demo,
zero-copy inputs and outputs, errors, callbacks and the GIL."""

import gc
import os
import subprocess
import sys
import threading
import time

import pytest

from sgtest import np, sg

B, I, H = 64, 16, 32
SEED, LR = 1, 0.05
TIMEOUT = 30  # seconds: every wait is bounded


def mlp_executor(**kw):
    kw.setdefault("backend", "host")
    return sg.StepExecutor(sg.mlp_step(B, I, H), **kw)


def train_in_python(steps, warmup, backend="host"):
    """The loop of stepgraph::demo::train_mlp, written against the Python API."""
    ex = mlp_executor(warmup=warmup, max_in_flight=2, backend=backend)
    ex.write_state("params", sg.demo.init_params(B, I, H, SEED))
    losses = []
    for step in range(steps):
        x, y = sg.demo.make_batch(B, I, H, SEED, step)
        ex.set_learning_rate(sg.demo.learning_rate(LR, step, steps))
        slot = ex.acquire_inputs()
        xv = np.asarray(slot.input("x"))
        assert xv.__array_interface__["data"][0] == slot.address("x")  # zero copy, every step
        xv[:] = x
        np.asarray(slot.input("y"))[:] = y
        h = ex.replay(slot)
        h.result(timeout=TIMEOUT)
        losses.append(np.asarray(h.output("loss"))[0])
        h.release()
    ex.synchronize()
    params = ex.read_state("params")
    nodes = ex.graph_nodes
    ex.close()
    return params, np.array(losses, dtype=np.float32), nodes


def test_training_through_python_is_bit_identical_to_the_cpp_demo():
    steps, warmup = 40, 3
    params, losses, nodes = train_in_python(steps, warmup)
    ref_params, ref_losses = sg.demo.train_mlp(B, I, H, steps, warmup, SEED, LR)
    assert params.dtype == np.float32 and params.shape == ref_params.shape
    np.testing.assert_array_equal(params, ref_params)
    np.testing.assert_array_equal(losses, ref_losses)
    assert losses[-1] < losses[0]  # it learns
    assert len(nodes) == 7  # the demo's seven kernels were captured


def test_training_on_cuda_is_bit_identical_to_the_cpp_demo():
    """The same comparison on the cuda backend (pinned inputs mapped to the
    device, read in place by the kernels). Skipped with the reason where no
    CUDA device (or no cuda backend) is present."""
    try:
        sg.StepExecutor(sg.mlp_step(B, I, H), backend="cuda").close()
    except sg.Error as e:
        pytest.skip(f"cuda backend unavailable: {e}")
    steps, warmup = 40, 3
    params, losses, _ = train_in_python(steps, warmup, backend="cuda")
    ref_params, ref_losses = sg.demo.train_mlp(B, I, H, steps, warmup, SEED, LR, backend="cuda")
    np.testing.assert_array_equal(params, ref_params)
    np.testing.assert_array_equal(losses, ref_losses)


def mlp_loss_reference(params, x, y):
    """The MLP's forward pass and MSE in float64 (numpy), independent of the kernels."""
    p = params.astype(np.float64)
    w1 = p[:H * I].reshape(H, I)
    b1 = p[H * I:H * I + H]
    w2 = p[H * I + H:H * I + 2 * H]
    b2 = p[H * I + 2 * H]
    act = np.maximum(x.astype(np.float64) @ w1.T + b1, 0.0)
    out = act @ w2 + b2
    return np.mean((out - y) ** 2)


def test_numpy_views_are_the_pinned_buffers_and_replays_read_what_numpy_wrote():
    ex = mlp_executor(warmup=1)
    params = sg.demo.init_params(B, I, H, 7)
    ex.write_state("params", params)
    ex.set_learning_rate(0.0)  # parameters stay put: each loss is a pure function of the inputs
    ex.prepare()  # warm-up and capture on slot 0's zero inputs
    rng = np.random.default_rng(3)
    for trial in range(4):
        slot = ex.acquire_inputs()
        buf = slot.input("x")
        x = np.asarray(buf)
        y = np.asarray(slot.input("y"))
        # Zero copy: the array's memory is the pinned input C++ hands the graph.
        assert x.__array_interface__["data"][0] == slot.address("x") == buf.address
        assert y.__array_interface__["data"][0] == slot.address("y")
        assert x.shape == (B, I) and x.dtype == np.float32 and not x.flags.owndata
        x[:] = rng.uniform(-1, 1, size=(B, I))
        y[:] = rng.uniform(-1, 1, size=B)
        xs, ys = x.copy(), y.copy()
        h = ex.replay(slot)
        assert h.wait(TIMEOUT) == "done"
        out = h.output("loss")
        loss = np.asarray(out)
        assert loss.__array_interface__["data"][0] == out.address
        assert not loss.flags.writeable
        np.testing.assert_allclose(loss[0], mlp_loss_reference(params, xs, ys), rtol=1e-5)
        with pytest.raises(ValueError):
            loss[0] = 1.0  # outputs are read-only views
        h.release()
    np.testing.assert_array_equal(ex.read_state("params"), params)
    ex.close()


def test_a_view_outlives_its_executor():
    ex = mlp_executor(warmup=0)
    slot = ex.acquire_inputs()
    x = np.asarray(slot.input("x"))
    x[:] = 2.5
    del slot
    ex.close()
    del ex
    gc.collect()
    assert float(x.sum()) == 2.5 * B * I  # the memory is still there (the view holds it)


def test_dlpack_views_share_the_pinned_memory():
    ex = mlp_executor(warmup=0)
    slot = ex.acquire_inputs()
    buf = slot.input("x")
    assert buf.__dlpack_device__() == (1, 0)  # kDLCPU: host memory on both backends
    view = np.from_dlpack(buf)
    assert view.__array_interface__["data"][0] == slot.address("x")
    assert view.shape == (B, I) and view.dtype == np.float32
    np.asarray(buf)[:] = np.arange(B * I, dtype=np.float32).reshape(B, I)
    np.testing.assert_array_equal(view, np.arange(B * I, dtype=np.float32).reshape(B, I))
    unconsumed = buf.__dlpack__()  # a capsule nobody consumes frees its export itself
    del unconsumed
    gc.collect()
    with pytest.raises(ValueError, match="stream"):
        buf.__dlpack__(stream=1)
    h = ex.replay(slot)
    assert h.wait(TIMEOUT) == "done"
    loss = np.from_dlpack(h.output("loss"))
    assert loss.__array_interface__["data"][0] == h.output("loss").address
    h.release()
    ex.close()
    del ex, slot, buf
    gc.collect()
    assert float(view[1, 0]) == I  # the export holds the memory


def test_handles_outlive_their_executor():
    ex = mlp_executor(warmup=0)
    h = ex.replay()
    assert h.wait(TIMEOUT) == "done"
    ex.close()
    del ex
    gc.collect()
    assert h.status == "done" and h.poll()
    assert h.wait(0) == "done"
    h.release()  # no crash: the handle shares state with the executor's remains


def test_bad_shapes_and_names_raise_value_errors():
    step = sg.Step()
    step.input("x", (B, I + 1))  # the wrong size for the demo step
    for name, shape in [("y", (B,)), ("loss", (1,))]:
        step.input(name, shape) if name == "y" else step.output(name, shape)
    n = sg.demo.param_count(B, I, H)
    step.state("params", (n,))
    for name, shape in [("grads", (n,)), ("act", (B, H)), ("dact", (B, H)), ("out", (B,)), ("dout", (B,))]:
        step.scratch(name, shape)
    names = ["x", "y", "loss", "params", "grads", "act", "dact", "out", "dout"]
    with pytest.raises(sg.InvalidArgument, match="parameter 'x'"):
        step.launch("demo.mlp_step", {k: k for k in names}, {"batch": B, "inputs": I, "hidden": H})
    with pytest.raises(ValueError, match="no kernel is registered"):
        step.launch("no.such.kernel", {})
    with pytest.raises(ValueError, match="not bound"):
        step.launch("demo.mlp_step", {"x": "x"}, {"batch": B, "inputs": I, "hidden": H})
    with pytest.raises(ValueError, match="declared already"):
        step.input("x", (1,))
    with pytest.raises(ValueError, match="dtype"):
        step.input("z", (1,), dtype="complex64")
    with pytest.raises(ValueError, match="larger than 2\\^48"):
        step.input("huge", (1 << 62, 4))  # the byte count would wrap to 0
    with pytest.raises(ValueError, match="sizes >= 1"):
        step.input("empty", (4, 0))
    with pytest.raises(ValueError, match="no launch"):
        sg.StepExecutor(step, backend="host")
    probe = probe_step()
    with pytest.raises(ValueError, match="node 'probe' is used already"):
        probe.launch("test.sleep_fault_if", {"flag": "flag"}, {"sleep_us": 0}, node="probe")

    ex = mlp_executor()
    with pytest.raises(ValueError, match="bytes"):
        ex.write_state("params", np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        ex.write_state("params", np.zeros((2, sg.demo.param_count(B, I, H)), dtype=np.float32)[0, ::1][::-1])
    with pytest.raises(ValueError, match="no state buffer"):
        ex.read_state("x")
    slot = ex.acquire_inputs()
    with pytest.raises(ValueError):
        slot.input("nope")
    ex.close()


def test_a_used_slot_and_a_closed_executor_raise_invalid_state():
    ex = mlp_executor(warmup=0)
    slot = ex.acquire_inputs()
    h = ex.replay(slot)
    with pytest.raises(sg.InvalidState, match="replay\\(\\) already"):
        slot.input("x")
    with pytest.raises(sg.InvalidState):
        ex.replay(slot)
    assert h.wait(TIMEOUT) == "done"
    h.release()
    ex.close()
    assert ex.state == "closed"
    with pytest.raises(sg.InvalidState) as e:
        ex.replay()
    assert isinstance(e.value, RuntimeError)
    with pytest.raises(sg.InvalidState):
        ex.acquire_inputs()


def probe_step(sleep_us=0):
    """One host kernel (test.sleep_fault_if, node "probe") that sleeps and then
    faults if the int32 input `flag` is nonzero."""
    step = sg.Step()
    step.input("flag", (1,), dtype="int32")
    step.output("unused", (1,))
    step.launch("test.sleep_fault_if", {"flag": "flag"}, {"sleep_us": sleep_us}, node="probe")
    return step


def replay_with_flag(ex, value):
    slot = ex.acquire_inputs()
    np.asarray(slot.input("flag"))[0] = value
    return ex.replay(slot)


def test_a_device_fault_reaches_the_handle_and_the_callback_with_step_and_node():
    errors, fired = [], threading.Event()

    def on_error(err):
        errors.append(err)
        fired.set()

    ex = sg.StepExecutor(probe_step(), backend="host", warmup=1, on_error=on_error)
    for _ in range(3):  # warm-up, capture, replay: flag 0
        h = replay_with_flag(ex, 0)
        h.result(TIMEOUT)
        h.release()
    h = replay_with_flag(ex, 7)
    assert h.wait(TIMEOUT) == "failed"
    assert fired.wait(TIMEOUT)
    err = h.error
    assert isinstance(err, sg.StepError)
    assert err.step == 3 and err.node == "probe" and err.kind == "device fault"
    assert "flag is 7" in err.message
    with pytest.raises(sg.StepError) as raised:
        h.result(TIMEOUT)
    assert raised.value.step == 3 and raised.value.node == "probe"
    assert len(errors) == 1 and errors[0].step == 3 and errors[0].node == "probe"
    assert ex.state == "failed"
    assert ex.failure.step == 3
    with pytest.raises(sg.InvalidState):
        ex.replay()
    ex.close()


def test_a_callback_that_raises_is_reported_and_the_process_stays_up(monkeypatch):
    seen, reported = threading.Event(), []

    def hook(unraisable):
        reported.append(unraisable)
        seen.set()

    monkeypatch.setattr(sys, "unraisablehook", hook)

    def on_error(err):
        raise RuntimeError(f"callback saw step {err.step}")

    ex = sg.StepExecutor(probe_step(), backend="host", warmup=0, on_error=on_error)
    h = replay_with_flag(ex, 1)
    assert h.wait(TIMEOUT) == "failed"
    assert seen.wait(TIMEOUT)
    assert ex.callback_errors == 1
    assert isinstance(reported[0].exc_value, RuntimeError)
    assert "callback saw step 0" in str(reported[0].exc_value)
    assert ex.state == "failed"
    ex.close()  # and the interpreter goes on
    assert ex.state == "closed"


def test_a_callback_runs_while_the_main_thread_waits():
    """wait() releases the GIL: the on_complete callback of the first replay
    (on the executor's thread, with the GIL) runs while the main thread is
    blocked waiting for the second, which is still sleeping in its kernel.
    Were the GIL held by the waiter, the callback could only run after the
    wait returned, so after the second replay had finished."""
    ex = sg.StepExecutor(probe_step(sleep_us=1_000_000), backend="host", warmup=0, max_in_flight=2)
    seen = {}
    done = threading.Event()
    handles = {}

    def on_complete(handle):
        seen["second_finished"] = handles["h2"].poll()
        seen["thread"] = threading.get_ident()
        seen["status"] = handle.status
        done.set()

    h1 = replay_with_flag(ex, 0)
    h1.on_complete(on_complete)
    handles["h2"] = h2 = replay_with_flag(ex, 0)
    assert h2.wait(TIMEOUT) == "done"
    assert done.wait(TIMEOUT)
    assert seen["second_finished"] is False
    assert seen["thread"] != threading.get_ident()
    assert seen["status"] == "done"
    h1.release()
    h2.release()
    ex.close()


def test_wait_with_a_timeout_returns_none_and_result_raises_timeout():
    ex = sg.StepExecutor(probe_step(sleep_us=500_000), backend="host", warmup=0)
    h = replay_with_flag(ex, 0)
    assert h.wait(0.01) is None
    assert not h.poll()
    with pytest.raises(sg.Timeout) as e:
        h.result(0.01)
    assert isinstance(e.value, TimeoutError)
    with pytest.raises(ValueError):
        h.wait(-1.0)
    with pytest.raises(ValueError):
        h.wait(float("nan"))
    assert h.wait(1e300) == "done" and h.poll()  # past 1e9 s: no timeout (no overflow)
    h.release()
    with pytest.raises(ValueError, match="deadline_ms"):
        sg.StepExecutor(probe_step(), backend="host", deadline_ms=1e300)
    ex.close()


EXIT_SCRIPT = """
import numpy as np, stepgraph as sg
step = sg.Step()
step.input("flag", (1,), dtype="int32")
step.output("unused", (1,))
step.launch("test.sleep_fault_if", {"flag": "flag"}, {"sleep_us": 200000}, node="probe")
errors = []
ex = sg.StepExecutor(step, backend="host", warmup=0, on_error=errors.append)
slot = ex.acquire_inputs()
np.asarray(slot.input("flag"))[0] = 1
h = ex.replay(slot)
h.on_complete(lambda handle: print("complete", handle.status, flush=True))
print("exiting with a replay in flight", flush=True)
"""


def test_the_interpreter_exits_with_replays_and_callbacks_in_flight():
    """An executor still running (a fault coming, callbacks registered) at
    interpreter exit: the process ends at once and cleanly, whatever the
    callbacks' timing (Note [Interpreter shutdown], module.h)."""
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ))
        assert r.returncode == 0, r.stderr
        assert "exiting with a replay in flight" in r.stdout
