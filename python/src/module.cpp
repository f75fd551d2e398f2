// The `_stepgraph` extension module: exceptions (module.h, Note [Python
// exceptions]) and the bindings of each file.
#include "module.h"

#include <atomic>
#include <string>

#include <stepgraph/core/error.h>

#include "kernels.h"

namespace stepgraph::python {

namespace {

ExceptionTypes* g_types = nullptr;
std::atomic<bool> g_going_away{false};

py::object new_exception(py::module_& m, const char* name, py::tuple bases, const char* doc) {
  const std::string qualified = std::string("stepgraph.") + name;
  PyObject* cls = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (cls == nullptr) throw py::error_already_set();
  auto type = py::reinterpret_steal<py::object>(cls);
  m.attr(name) = type;
  return type;
}

void raise(const py::object& type, const char* what) {
  py::object e = type(what);
  PyErr_SetObject(type.ptr(), e.ptr());
}

}  // namespace

bool python_going_away() noexcept {
  return g_going_away.load(std::memory_order_acquire) || !Py_IsInitialized();
}

const ExceptionTypes& exception_types() {
  return *g_types;
}

py::object make_step_error(const runtime::StepError& e) {
  py::object err = g_types->step_error(e.message);
  err.attr("step") = e.step;
  err.attr("node") = e.node ? py::object(py::str(*e.node)) : py::object(py::none());
  err.attr("kind") = std::string(runtime::to_string(e.kind));
  err.attr("message") = e.message;
  return err;
}

void init_module(py::module_& m) {
  m.doc() = "stepgraph: topology, placement and the StepExecutor (docs/embedding.md, Python)";

  // Leaked on purpose: its references must not be dropped after the
  // interpreter has finalized (a static's destructor would).
  auto& types = *new ExceptionTypes;
  types.error =
      new_exception(m, "Error", py::make_tuple(py::handle(PyExc_Exception)), "Base of every stepgraph exception.");
  types.invalid_argument =
      new_exception(m, "InvalidArgument", py::make_tuple(types.error, py::handle(PyExc_ValueError)),
                    "The call cannot accept an argument (stepgraph::InvalidArgument).");
  types.invalid_state =
      new_exception(m, "InvalidState", py::make_tuple(types.error, py::handle(PyExc_RuntimeError)),
                    "The object is not in a state that allows the call: closed, failed, already used.");
  types.timeout = new_exception(m, "Timeout", py::make_tuple(types.error, py::handle(PyExc_TimeoutError)),
                                "A wait did not finish within its timeout.");
  types.device_fault = new_exception(m, "DeviceFault", py::make_tuple(types.error),
                                     "The device reported a fault; .node names the node where known.");
  types.step_error =
      new_exception(m, "StepError", py::make_tuple(types.error),
                    "A replay failed: .step, .node (or None), .kind ('device fault', 'timeout', ...), .message.");
  g_types = &types;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const stepgraph::InvalidArgument& e) {
      raise(g_types->invalid_argument, e.what());
    } catch (const stepgraph::InvalidState& e) {
      raise(g_types->invalid_state, e.what());
    } catch (const stepgraph::Timeout& e) {
      raise(g_types->timeout, e.what());
    } catch (const stepgraph::DeviceFault& e) {
      py::object err = g_types->device_fault(e.what());
      err.attr("node") = e.node().empty() ? py::object(py::none()) : py::object(py::str(e.node()));
      PyErr_SetObject(g_types->device_fault.ptr(), err.ptr());
    } catch (const stepgraph::Error& e) {
      raise(g_types->error, e.what());
    }
  });

  m.def(
      "_at_exit", [] { g_going_away.store(true, std::memory_order_release); },
      "Called by the package's atexit hook: Note [Interpreter shutdown] (module.h).");

  register_builtin_kernels();
  bind_topology(m);
  bind_graphs(m);
  bind_executor(m);
  bind_demo(m);
}

}  // namespace stepgraph::python

PYBIND11_MODULE(_stepgraph, m) {
  stepgraph::python::init_module(m);
}
