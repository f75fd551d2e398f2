// python/src/module.h — what the binding files of the `stepgraph` Python
// module (_stepgraph) share: the exception classes and one bind_* function
// per file.
//
// Note [Python exceptions]
// C++ exceptions become Python ones (module.cpp): stepgraph::InvalidArgument
// -> stepgraph.InvalidArgument (a ValueError), InvalidState ->
// stepgraph.InvalidState (a RuntimeError), Timeout -> stepgraph.Timeout (a
// TimeoutError), DeviceFault -> stepgraph.DeviceFault (.node), every other
// stepgraph::Error -> stepgraph.Error, the base of them all. A failed replay
// is a stepgraph.StepError (.step, .node, .kind, .message): what
// ReplayHandle.error returns, ReplayHandle.result() raises and an on_error
// callback receives.
#pragma once

#include <pybind11/pybind11.h>

#include <stepgraph/runtime/executor.h>

namespace stepgraph::python {

namespace py = pybind11;

struct ExceptionTypes {
  py::object error, invalid_argument, invalid_state, timeout, device_fault, step_error;
};
/// Created by the module's init (module.cpp); valid while the module is.
[[nodiscard]] const ExceptionTypes& exception_types();

/// A stepgraph.StepError instance for `e` (needs the GIL).
[[nodiscard]] py::object make_step_error(const runtime::StepError& e);

/// Note [Interpreter shutdown]
/// Threads other than the main one must not take the GIL once the
/// interpreter finalizes (CPython ends such a thread inside
/// PyGILState_Ensure, unwinding through our frames). So the module's
/// atexit hook (stepgraph/__init__.py) marks the interpreter as going
/// away; from then on callbacks are no longer called, and references held
/// on other threads are dropped without the GIL (leaked) rather than
/// released. True from that point on, and where Python is not initialized.
[[nodiscard]] bool python_going_away() noexcept;

void bind_topology(py::module_& m);  // topology_bindings.cpp: Topology, CostMatrix
void bind_graphs(py::module_& m);    // graphs_bindings.cpp: Graph, Platform, place
void bind_executor(py::module_& m);  // executor_bindings.cpp: Step, StepExecutor, buffers
void bind_demo(py::module_& m);      // executor_bindings.cpp: the demo MLP's data and reference

}  // namespace stepgraph::python
