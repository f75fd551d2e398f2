// stepgraph.Step, stepgraph.StepExecutor, stepgraph.InputSlot,
// stepgraph.ReplayHandle and stepgraph.PinnedBuffer: the runtime's
// StepExecutor (runtime/include/stepgraph/runtime/executor.h) for Python,
// with steps composed from kernels registered in C++ (kernels.h).
//
// Note [Zero copy from Python]
// An input slot's pinned buffers and a replay's pinned outputs are handed to
// Python as PinnedBuffer objects (pinned_buffer.h) exporting the buffer
// protocol and DLPack over the very memory the graph reads and writes:
// numpy.asarray(slot.input("x")) and numpy.from_dlpack(...) are views, not copies (PinnedBuffer.address is the C++
// host_data() address; the tests compare it with the array's). A PinnedBuffer holds a reference to the memory itself
// (Note [Buffer lifetime], buffer.h) and to the Python object it came from, so a view never dangles, even after close()
// or after the executor is gone. What stays the program's job is *when* it touches the memory: fill an input between
// acquire_inputs() and replay(), read an output between the replay's end and release(); after that the executor reuses
// the slot and the view shows whatever the next step writes.
//
// Note [The GIL and the executor's thread]
// Every call that may block (acquire_inputs, replay, wait, synchronize,
// prepare, close, check_against_eager, state copies) releases the GIL, and
// the executor's callbacks (on_error, on_complete) acquire it on the
// executor's thread. So a callback can run while the main thread waits on a
// replay, and a waiter can never hold the GIL that a callback needs. A
// callback that raises does not unwind into the executor: the exception goes
// to sys.unraisablehook (printed by default), StepExecutor.callback_errors
// counts it, and the executor goes on.
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <stepgraph/core/error.h>

#include "kernels.h"
#include "module.h"
#include "pinned_buffer.h"

namespace stepgraph::python {

namespace {

using namespace py::literals;
using Clock = std::chrono::steady_clock;

// --- dtypes a step buffer may have
struct DTypeInfo {
  const char* name;
  rt::DType dtype;
  std::size_t size;
  std::string format;  // the buffer protocol's struct format
};

const std::vector<DTypeInfo>& dtypes() {
  static const std::vector<DTypeInfo> all{
      {"float32", rt::DType::kFloat32, 4, py::format_descriptor<float>::format()},
      {"float64", rt::DType::kFloat64, 8, py::format_descriptor<double>::format()},
      {"int32", rt::DType::kInt32, 4, py::format_descriptor<std::int32_t>::format()},
      {"int64", rt::DType::kInt64, 8, py::format_descriptor<std::int64_t>::format()},
      {"uint8", rt::DType::kUInt8, 1, py::format_descriptor<std::uint8_t>::format()},
  };
  return all;
}

const DTypeInfo& dtype_info(const std::string& name) {
  for (const DTypeInfo& d : dtypes())
    if (name == d.name) return d;
  throw InvalidArgument("dtype '" + name + "' is not one of float32, float64, int32, int64, uint8");
}

// --- a step composed in Python (kernels.h, Note [Composed steps])
struct DeclaredBuffer {
  std::string name;
  Role role = Role::kInput;
  std::vector<py::ssize_t> shape;
  const DTypeInfo* dtype = nullptr;
  std::size_t bytes = 0;
  rt::InputMode mode = rt::InputMode::kZeroCopy;
};

struct Launch {
  ResolvedLaunch resolved;
  std::shared_ptr<const KernelDef> kernel;
};

class StepDefinition {
 public:
  void add(Role role, std::string name, std::vector<py::ssize_t> shape, const std::string& dtype,
           const std::string& mode) {
    STEPGRAPH_CHECK(!name.empty(), InvalidArgument, "Step: a buffer name is empty");
    STEPGRAPH_CHECK(find(name) == nullptr, InvalidArgument,
                    "Step: buffer '{}' is declared already (names are unique over every role)", name);
    DeclaredBuffer b;
    b.name = std::move(name);
    b.role = role;
    b.dtype = &dtype_info(dtype);
    // The byte count must not wrap: the buffer protocol exports `shape` over
    // memory of `bytes` bytes.
    constexpr std::size_t kMaxBytes = std::size_t{1} << 48;
    std::size_t bytes = b.dtype->size;
    for (py::ssize_t d : shape) {
      STEPGRAPH_CHECK(d >= 1, InvalidArgument, "Step: buffer '{}' has a dimension {}; give sizes >= 1", b.name, d);
      STEPGRAPH_CHECK(static_cast<std::size_t>(d) <= kMaxBytes / bytes, InvalidArgument,
                      "Step: buffer '{}' of shape ({}) is larger than 2^48 bytes", b.name, fmt::join(shape, ", "));
      bytes *= static_cast<std::size_t>(d);
    }
    b.shape = std::move(shape);
    b.bytes = bytes;
    if (mode == "copy_in") {
      STEPGRAPH_CHECK(role == Role::kInput, InvalidArgument, "Step: mode 'copy_in' is for inputs only ('{}')", b.name);
      b.mode = rt::InputMode::kCopyIn;
    } else {
      STEPGRAPH_CHECK(mode == "zero_copy", InvalidArgument,
                      "Step: buffer '{}': mode '{}' is not 'zero_copy' or 'copy_in'", b.name, mode);
    }
    buffers_.push_back(std::move(b));
  }

  void launch(const std::string& kernel, const std::map<std::string, std::string>& buffers,
              const std::map<std::string, std::int64_t>& attrs, const std::optional<std::string>& node) {
    Launch l;
    l.kernel = find_kernel(kernel);
    l.resolved.kernel = kernel;
    l.resolved.node = node.value_or(kernel);
    // Unique node names: a test or a user looks nodes up by name (GraphInfo::find).
    for (const Launch& other : launches_)
      STEPGRAPH_CHECK(other.resolved.node != l.resolved.node, InvalidArgument,
                      "Step.launch('{}'): node '{}' is used already; give each launch its own node=", kernel,
                      l.resolved.node);
    for (const auto& [param, buffer] : buffers) {
      STEPGRAPH_CHECK(std::find(l.kernel->buffers.begin(), l.kernel->buffers.end(), param) != l.kernel->buffers.end(),
                      InvalidArgument, "kernel '{}' has no buffer parameter '{}'; its parameters: {}", kernel, param,
                      fmt::join(l.kernel->buffers, ", "));
      const DeclaredBuffer* b = find(buffer);
      STEPGRAPH_CHECK(b != nullptr, InvalidArgument,
                      "kernel '{}': parameter '{}' names buffer '{}', which the step does not declare; declare it "
                      "first (Step.input, output, state, scratch)",
                      kernel, param, buffer);
      l.resolved.buffers.push_back({param, buffer, b->role, b->bytes});
    }
    for (const std::string& param : l.kernel->buffers)
      STEPGRAPH_CHECK(buffers.count(param) == 1, InvalidArgument, "kernel '{}': parameter '{}' is not bound", kernel,
                      param);
    for (const auto& [name, value] : attrs) {
      STEPGRAPH_CHECK(std::find(l.kernel->attrs.begin(), l.kernel->attrs.end(), name) != l.kernel->attrs.end(),
                      InvalidArgument, "kernel '{}' has no attribute '{}'; its attributes: {}", kernel, name,
                      fmt::join(l.kernel->attrs, ", "));
      l.resolved.attrs.emplace(name, value);
    }
    for (const std::string& a : l.kernel->attrs)
      STEPGRAPH_CHECK(attrs.count(a) == 1, InvalidArgument, "kernel '{}': attribute '{}' is not given", kernel, a);
    if (l.kernel->check) l.kernel->check(LaunchArgs(l.resolved, nullptr));
    launches_.push_back(std::move(l));
  }

  [[nodiscard]] rt::StepSpec spec() const {
    STEPGRAPH_CHECK(!launches_.empty(), InvalidArgument, "Step: no launch; add one with Step.launch()");
    rt::StepSpec spec;
    for (const DeclaredBuffer& b : buffers_) {
      rt::BufferSpec s{.name = b.name, .bytes = b.bytes, .dtype = b.dtype->dtype, .mode = b.mode};
      switch (b.role) {
        case Role::kInput:
          spec.inputs.push_back(std::move(s));
          break;
        case Role::kOutput:
          spec.outputs.push_back(std::move(s));
          break;
        case Role::kState:
          spec.state.push_back(std::move(s));
          break;
        case Role::kScratch:
          spec.scratch.push_back(std::move(s));
          break;
      }
    }
    return spec;
  }

  [[nodiscard]] rt::StepFunction function() const {
    return [launches = launches_](rt::StepContext& ctx) {
      for (const Launch& l : launches) l.kernel->enqueue(LaunchArgs(l.resolved, &ctx));
    };
  }

  [[nodiscard]] const DeclaredBuffer* find(std::string_view name) const {
    for (const DeclaredBuffer& b : buffers_)
      if (b.name == name) return &b;
    return nullptr;
  }
  [[nodiscard]] const DeclaredBuffer& get(std::string_view name, Role role) const {
    const DeclaredBuffer* b = find(name);
    STEPGRAPH_CHECK(b != nullptr && b->role == role, InvalidArgument, "the step has no {} buffer '{}'{}",
                    to_string(role), name, b != nullptr ? fmt::format(" (it is a {})", to_string(b->role)) : "");
    return *b;
  }
  [[nodiscard]] const std::vector<DeclaredBuffer>& buffers() const noexcept { return buffers_; }
  [[nodiscard]] const std::vector<Launch>& launches() const noexcept { return launches_; }

 private:
  std::vector<DeclaredBuffer> buffers_;
  std::vector<Launch> launches_;
};

// --- pinned memory seen from Python (Note [Zero copy from Python])
PinnedBuffer pinned(const rt::Buffer& b, const DeclaredBuffer& decl, py::object owner, bool readonly) {
  STEPGRAPH_CHECK(b.size() >= decl.bytes, InvalidState,
                  "buffer '{}' has {} bytes, fewer than the {} declared (internal)", decl.name, b.size(), decl.bytes);
  PinnedBuffer out;
  out.memory = b.impl();
  out.ptr = b.host_data();
  out.owner = std::move(owner);
  out.name = decl.name;
  out.shape = decl.shape;
  out.dtype = decl.dtype->name;
  out.format = decl.dtype->format;
  out.itemsize = decl.dtype->size;
  out.readonly = readonly;
  return out;
}

// --- Python callables called from the executor's thread (Note [The GIL
// and the executor's thread])
class PyCallback {
 public:
  PyCallback(py::function fn, std::string what, std::shared_ptr<std::atomic<int>> raised)
      : fn_(std::move(fn)), what_(std::move(what)), raised_(std::move(raised)) {}
  PyCallback(const PyCallback&) = delete;
  PyCallback& operator=(const PyCallback&) = delete;
  ~PyCallback() {
    // The last reference may go on the executor's thread, without the GIL.
    if (python_going_away()) {
      fn_.release();  // Note [Interpreter shutdown]: leaked, not decremented
      return;
    }
    py::gil_scoped_acquire gil;
    fn_ = py::object();
  }

  /// Calls the function with what make_args() returns; never throws.
  template <class MakeArgs>
  void call(MakeArgs make_args) noexcept {
    if (python_going_away()) return;  // Note [Interpreter shutdown]
    py::gil_scoped_acquire gil;
    try {
      fn_(*make_args());
    } catch (py::error_already_set& e) {
      if (raised_) ++*raised_;
      e.discard_as_unraisable(what_.c_str());
    } catch (const std::exception& e) {
      if (raised_) ++*raised_;
      PyErr_SetString(PyExc_RuntimeError, e.what());
      PyErr_WriteUnraisable(py::str(what_).ptr());
    }
  }

 private:
  py::object fn_;
  std::string what_;
  std::shared_ptr<std::atomic<int>> raised_;
};

struct PyReplay {
  rt::ReplayHandle handle;
  std::shared_ptr<const StepDefinition> def;
  std::shared_ptr<std::atomic<int>> raised;
};

struct PySlot {
  std::optional<rt::InputSlot> slot;
  std::shared_ptr<const StepDefinition> def;
  rt::InputSlot& get() {
    STEPGRAPH_CHECK(slot.has_value(), InvalidState,
                    "this InputSlot was handed to replay() already; call acquire_inputs() for another");
    return *slot;
  }
};

class PyExecutor {
 public:
  PyExecutor(const StepDefinition& step, rt::ExecutorOptions options, const std::optional<py::function>& on_error)
      : def_(std::make_shared<const StepDefinition>(step)), raised_(std::make_shared<std::atomic<int>>(0)) {
    if (on_error) {
      auto cb = std::make_shared<PyCallback>(*on_error, "stepgraph: a StepExecutor's on_error callback", raised_);
      options.on_error = [cb](const rt::StepError& e) { cb->call([&] { return py::make_tuple(make_step_error(e)); }); };
    }
    rt::StepSpec spec = def_->spec();
    rt::StepFunction fn = def_->function();
    py::gil_scoped_release unlocked;  // the constructor starts the executor's thread and allocates
    executor_ = std::make_unique<rt::StepExecutor>(std::move(spec), std::move(fn), std::move(options));
  }
  PyExecutor(const PyExecutor&) = delete;
  PyExecutor& operator=(const PyExecutor&) = delete;
  ~PyExecutor() {
    // Destroying the executor joins its thread, which may be waiting for the
    // GIL to run a callback: release it meanwhile.
    py::gil_scoped_release unlocked;
    executor_.reset();
  }

  [[nodiscard]] rt::StepExecutor& get() const { return *executor_; }
  [[nodiscard]] const std::shared_ptr<const StepDefinition>& def() const noexcept { return def_; }
  [[nodiscard]] const std::shared_ptr<std::atomic<int>>& raised() const noexcept { return raised_; }

 private:
  std::shared_ptr<const StepDefinition> def_;
  std::shared_ptr<std::atomic<int>> raised_;
  std::unique_ptr<rt::StepExecutor> executor_;
};

std::optional<std::string> wait_handle(const rt::ReplayHandle& h, std::optional<double> timeout_s) {
  if (timeout_s)  // NaN fails too
    STEPGRAPH_CHECK(*timeout_s >= 0, InvalidArgument, "wait: timeout is {} s; give None or >= 0", *timeout_s);
  std::optional<rt::ReplayStatus> st;
  {
    py::gil_scoped_release unlocked;
    // Past ~30 years a timeout is none (and would overflow the nanoseconds).
    if (timeout_s && *timeout_s <= 1e9)
      st = h.wait_for(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(*timeout_s)));
    else
      st = h.wait();
  }
  if (!st) return std::nullopt;
  return std::string(rt::to_string(*st));
}

/// A contiguous buffer of exactly `bytes` bytes from Python, or InvalidArgument.
py::buffer_info contiguous(const py::buffer& data, const DeclaredBuffer& decl, const char* what) {
  py::buffer_info info = data.request();
  const auto expect = c_strides(info.shape, static_cast<std::size_t>(info.itemsize));
  STEPGRAPH_CHECK(info.strides == expect, InvalidArgument,
                  "{}('{}'): the array is not C-contiguous; pass numpy.ascontiguousarray(a)", what, decl.name);
  const auto bytes = static_cast<std::size_t>(info.size * info.itemsize);
  STEPGRAPH_CHECK(bytes == decl.bytes && static_cast<std::size_t>(info.itemsize) == decl.dtype->size, InvalidArgument,
                  "{}('{}'): the array has {} bytes of {}-byte items; '{}' is {} bytes of {}", what, decl.name, bytes,
                  info.itemsize, decl.name, decl.bytes, decl.dtype->name);
  return info;
}

py::dict memory_report(const rt::MemoryReport& r) {
  return py::dict("arena_bytes"_a = r.arena_bytes, "arena_used"_a = r.arena_used, "pinned_bytes"_a = r.pinned_bytes,
                  "per_slot_pinned"_a = r.per_slot_pinned, "per_slot_device"_a = r.per_slot_device,
                  "state_bytes"_a = r.state_bytes);
}

rt::ExecutorOptions executor_options(const std::string& backend, int device, int warmup, int max_in_flight,
                                     int launch_ahead, const std::string& on_busy, double deadline_ms,
                                     const std::string& mode, int host_devices) {
  rt::ExecutorOptions o;
  o.backend = backend;
  o.device = device;
  o.warmup = warmup;
  o.max_in_flight = max_in_flight;
  o.launch_ahead = launch_ahead;
  STEPGRAPH_CHECK(on_busy == "block" || on_busy == "throw", InvalidArgument, "on_busy is '{}'; give 'block' or 'throw'",
                  on_busy);
  o.on_busy = on_busy == "block" ? rt::OnBusy::kBlock : rt::OnBusy::kThrow;
  STEPGRAPH_CHECK(deadline_ms >= 0 && deadline_ms <= 1e12, InvalidArgument,
                  "deadline_ms is {}; give 0 (no watchdog) .. 1e12", deadline_ms);
  o.deadline = std::chrono::milliseconds(static_cast<std::int64_t>(deadline_ms));
  STEPGRAPH_CHECK(mode == "graph" || mode == "eager", InvalidArgument, "mode is '{}'; give 'graph' or 'eager'", mode);
  o.mode = mode == "graph" ? rt::ExecutionMode::kGraph : rt::ExecutionMode::kEager;
  if (host_devices > 0) o.backend_options.host_devices = host_devices;
  return o;
}

void bind_step(py::module_& m) {
  auto add = [](Role role) {
    return [role](StepDefinition& s, std::string name, std::vector<py::ssize_t> shape, const std::string& dtype,
                  const std::string& mode) { s.add(role, std::move(name), std::move(shape), dtype, mode); };
  };
  py::class_<StepDefinition, std::shared_ptr<StepDefinition>>(m, "Step", R"doc(
A training step composed from kernels registered in C++ (stepgraph.kernels()):
buffers declared by role, name, shape and dtype, then launches binding each
kernel's buffer parameters to them. Checked as it is built. A StepExecutor
takes a copy. Not thread-safe.)doc")
      .def(py::init<>())
      .def("input", add(Role::kInput), "name"_a, "shape"_a, "dtype"_a = "float32", "mode"_a = "zero_copy",
           "A pinned input, one per slot ('zero_copy': the graph reads it in place; 'copy_in': one copy node).")
      .def("output", add(Role::kOutput), "name"_a, "shape"_a, "dtype"_a = "float32", "mode"_a = "zero_copy",
           "A pinned output, one per slot, written in place by the graph.")
      .def("state", add(Role::kState), "name"_a, "shape"_a, "dtype"_a = "float32", "mode"_a = "zero_copy",
           "Device memory shared by every step (parameters, optimizer state).")
      .def("scratch", add(Role::kScratch), "name"_a, "shape"_a, "dtype"_a = "float32", "mode"_a = "zero_copy",
           "Device memory per slot (activations, gradients).")
      .def("launch", &StepDefinition::launch, "kernel"_a, "buffers"_a,
           "attrs"_a = std::map<std::string, std::int64_t>{}, "node"_a = py::none(),
           "Launches registered kernel `kernel`: buffers maps each of its parameters to a declared buffer, attrs "
           "gives its integer attributes; node names the graph node (default: the kernel's name).")
      .def_property_readonly("buffers",
                             [](const StepDefinition& s) {
                               py::list out;
                               for (const DeclaredBuffer& b : s.buffers())
                                 out.append(py::dict("name"_a = b.name, "role"_a = std::string(to_string(b.role)),
                                                     "shape"_a = py::tuple(py::cast(b.shape)),
                                                     "dtype"_a = b.dtype->name, "nbytes"_a = b.bytes));
                               return out;
                             })
      .def_property_readonly("nodes", [](const StepDefinition& s) {
        std::vector<std::string> out;
        for (const Launch& l : s.launches()) out.push_back(l.resolved.node);
        return out;
      });

  m.def(
      "kernels",
      [] {
        py::dict out;
        for (const auto& [name, k] : registered_kernels())
          out[py::str(name)] = py::dict("doc"_a = k->doc, "buffers"_a = k->buffers, "attrs"_a = k->attrs);
        return out;
      },
      "The kernels registered in C++ that Step.launch() can name: {name: {doc, buffers, attrs}}.");
}

void bind_slot_and_replay(py::module_& m) {
  py::class_<PySlot>(m, "InputSlot", R"doc(
A free slot's pinned inputs (StepExecutor.acquire_inputs()), to fill and then
hand to StepExecutor.replay(). Dropping it unused gives the slot back.)doc")
      .def_property_readonly("index", [](PySlot& s) { return s.get().index(); })
      .def(
          "input",
          [](py::object self, const std::string& name) {
            PySlot& s = self.cast<PySlot&>();
            const DeclaredBuffer& d = s.def->get(name, Role::kInput);
            return pinned(s.get().input(name), d, self, false);
          },
          "name"_a, "The pinned input `name` as a PinnedBuffer (numpy.asarray() it: a view, no copy).")
      .def(
          "address",
          [](PySlot& s, const std::string& name) {
            return reinterpret_cast<std::uintptr_t>(s.get().input(name).host_data());
          },
          "name"_a, "The host address of input `name`, as C++ reports it (InputSlot::input(name).host_data()).")
      .def_property_readonly("valid", [](const PySlot& s) { return s.slot.has_value() && s.slot->valid(); });

  py::class_<PyReplay>(m, "ReplayHandle", R"doc(
One replay's result (StepExecutor.replay()). wait() releases the GIL.
Thread-safe.)doc")
      .def_property_readonly("step", [](const PyReplay& r) { return r.handle.step(); })
      .def_property_readonly("status", [](const PyReplay& r) { return std::string(rt::to_string(r.handle.status())); })
      .def(
          "poll", [](const PyReplay& r) { return r.handle.poll(); }, "True once the replay has finished.")
      .def(
          "wait", [](const PyReplay& r, std::optional<double> timeout) { return wait_handle(r.handle, timeout); },
          "timeout"_a = py::none(),
          "Waits (GIL released) at most `timeout` seconds (None: for ever); returns the final status ('done', "
          "'failed', 'cancelled', 'closed'), or None past the timeout.")
      .def_property_readonly("error",
                             [](const PyReplay& r) -> py::object {
                               const auto e = r.handle.error();
                               return e ? make_step_error(*e) : py::object(py::none());
                             })
      .def(
          "result",
          [](const PyReplay& r, std::optional<double> timeout) {
            const auto st = wait_handle(r.handle, timeout);
            if (!st)
              throw Timeout(fmt::format("replay of step {} did not finish within {} s", r.handle.step(), *timeout));
            if (const auto e = r.handle.error()) {
              py::object err = make_step_error(*e);
              PyErr_SetObject(exception_types().step_error.ptr(), err.ptr());
              throw py::error_already_set();
            }
            STEPGRAPH_CHECK(*st == "done", InvalidState, "replay of step {} ended '{}'", r.handle.step(), *st);
          },
          "timeout"_a = py::none(),
          "Waits like wait(); raises StepError if the replay failed, Timeout past the timeout.")
      .def(
          "output",
          [](py::object self, const std::string& name) {
            const PyReplay& r = self.cast<const PyReplay&>();
            const DeclaredBuffer& d = r.def->get(name, Role::kOutput);
            return pinned(r.handle.output(name), d, self, true);
          },
          "name"_a, "The slot's pinned output `name` (read-only PinnedBuffer), valid until release().")
      .def(
          "release", [](const PyReplay& r) { r.handle.release(); }, "Gives the slot back.")
      .def("cancel", [](const PyReplay& r) { return r.handle.cancel(); })
      .def(
          "on_complete",
          [](const PyReplay& r, py::function fn) {
            auto cb = std::make_shared<PyCallback>(std::move(fn), "stepgraph: a ReplayHandle's on_complete callback",
                                                   r.raised);
            r.handle.on_complete([cb, def = r.def, raised = r.raised](const rt::ReplayHandle& h) {
              cb->call([&] { return py::make_tuple(PyReplay{h, def, raised}); });
            });
          },
          "fn"_a,
          "Calls fn(handle) on the executor's thread (with the GIL) when the replay finishes; an exception it "
          "raises goes to sys.unraisablehook.");
}

void bind_executor_class(py::module_& m) {
  py::class_<PyExecutor>(m, "StepExecutor", R"doc(
The StepExecutor (runtime/executor.h) running a Step: warm-up, capture, then
replays of the captured graph on pinned inputs. Every member is thread-safe;
blocking members release the GIL; on_error(StepError) runs on the
executor's thread with the GIL (docs/embedding.md, Python).)doc")
      .def(py::init([](const StepDefinition& step, const std::string& backend, int device, int warmup,
                       int max_in_flight, int launch_ahead, const std::string& on_busy, double deadline_ms,
                       const std::string& mode, std::optional<py::function> on_error, int host_devices) {
             return std::make_unique<PyExecutor>(step,
                                                 executor_options(backend, device, warmup, max_in_flight, launch_ahead,
                                                                  on_busy, deadline_ms, mode, host_devices),
                                                 on_error);
           }),
           "step"_a, "backend"_a = "auto", "device"_a = 0, "warmup"_a = 3, "max_in_flight"_a = 2, "launch_ahead"_a = 2,
           "on_busy"_a = "block", "deadline_ms"_a = 0.0, "mode"_a = "graph", "on_error"_a = py::none(),
           "host_devices"_a = 0)
      .def("prepare",
           [](PyExecutor& e) {
             py::gil_scoped_release unlocked;
             e.get().prepare();
           })
      .def("acquire_inputs",
           [](PyExecutor& e) {
             PySlot s;
             s.def = e.def();
             {
               py::gil_scoped_release unlocked;
               s.slot = e.get().acquire_inputs();
             }
             return s;
           })
      .def(
          "replay",
          [](PyExecutor& e, PySlot* slot, std::uint64_t shape_key) {
            PyReplay r{{}, e.def(), e.raised()};
            if (slot != nullptr) {
              rt::InputSlot s = std::move(slot->get());
              slot->slot.reset();
              py::gil_scoped_release unlocked;
              r.handle = e.get().replay(std::move(s), shape_key);
            } else {
              py::gil_scoped_release unlocked;
              r.handle = e.get().replay(shape_key);
            }
            return r;
          },
          "slot"_a = py::none(), "shape_key"_a = 0,
          "Starts one step on the slot's inputs (None: a free slot's inputs as they are) and returns its handle.")
      .def("synchronize",
           [](PyExecutor& e) {
             py::gil_scoped_release unlocked;
             e.get().synchronize();
           })
      .def(
          "set_learning_rate", [](PyExecutor& e, float lr) { e.get().set_learning_rate(lr); }, "lr"_a)
      .def(
          "set_loss_scale", [](PyExecutor& e, float s) { e.get().set_loss_scale(s); }, "scale"_a)
      .def(
          "set_rng", [](PyExecutor& e, std::uint64_t seed, std::uint64_t offset) { e.get().set_rng(seed, offset); },
          "seed"_a, "offset"_a = 0)
      .def_property_readonly("scalars",
                             [](const PyExecutor& e) {
                               const rt::StepScalars s = e.get().scalars();
                               return py::dict("step"_a = s.step, "learning_rate"_a = s.learning_rate,
                                               "loss_scale"_a = s.loss_scale, "rng_seed"_a = s.rng_seed,
                                               "rng_offset"_a = s.rng_offset);
                             })
      .def(
          "write_state",
          [](PyExecutor& e, const std::string& name, const py::buffer& data) {
            const DeclaredBuffer& d = e.def()->get(name, Role::kState);
            const py::buffer_info info = contiguous(data, d, "write_state");
            py::gil_scoped_release unlocked;
            e.get().write_state(name, info.ptr, d.bytes);
          },
          "name"_a, "data"_a, "Copies a C-contiguous array of exactly the buffer's size into state `name`.")
      .def(
          "read_state",
          [](PyExecutor& e, const std::string& name) {
            const DeclaredBuffer& d = e.def()->get(name, Role::kState);
            py::array out(py::dtype(d.dtype->name), d.shape);
            void* dst = out.mutable_data();
            {
              py::gil_scoped_release unlocked;
              e.get().read_state(name, dst, d.bytes);
            }
            return out;
          },
          "name"_a, "A copy of state `name` as a numpy array of its shape and dtype.")
      .def(
          "check_against_eager",
          [](PyExecutor& e, int k) {
            rt::EagerCheck c;
            {
              py::gil_scoped_release unlocked;
              c = e.get().check_against_eager(k);
            }
            return c.max_abs_diff;
          },
          "k"_a = 2)
      .def_property_readonly("state", [](const PyExecutor& e) { return std::string(rt::to_string(e.get().state())); })
      .def_property_readonly("failure",
                             [](const PyExecutor& e) -> py::object {
                               const auto f = e.get().failure();
                               return f ? make_step_error(*f) : py::object(py::none());
                             })
      .def_property_readonly("steps_started", [](const PyExecutor& e) { return e.get().steps_started(); })
      .def_property_readonly("memory_report",
                             [](const PyExecutor& e) { return memory_report(e.get().memory_report()); })
      .def_property_readonly("graph_nodes",
                             [](const PyExecutor& e) {
                               std::vector<std::string> out;
                               for (const auto& n : e.get().graph_info().nodes) out.push_back(n.name);
                               return out;
                             })
      .def_property_readonly(
          "callback_errors", [](const PyExecutor& e) { return e.raised()->load(); },
          "How many times a callback (on_error, on_complete) raised (each went to "
          "sys.unraisablehook).")
      .def("close",
           [](PyExecutor& e) {
             py::gil_scoped_release unlocked;
             e.get().close();
           })
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyExecutor& e, const py::args&) {
        py::gil_scoped_release unlocked;
        e.get().close();
      });

  m.def(
      "_bench_cpp_replays",
      [](PyExecutor& e, int n) {
        STEPGRAPH_CHECK(n >= 1, InvalidArgument, "_bench_cpp_replays: n is {}; give >= 1", n);
        py::gil_scoped_release unlocked;
        rt::StepExecutor& ex = e.get();
        const auto t0 = Clock::now();
        for (int i = 0; i < n; ++i) {
          rt::InputSlot slot = ex.acquire_inputs();
          rt::ReplayHandle h = ex.replay(std::move(slot));
          const rt::ReplayStatus st = h.wait();
          STEPGRAPH_CHECK(st == rt::ReplayStatus::kDone, InvalidState, "_bench_cpp_replays: step {} ended {}", h.step(),
                          rt::to_string(st));
          h.release();
        }
        return std::chrono::duration<double>(Clock::now() - t0).count();
      },
      "executor"_a, "n"_a,
      "Benchmarking only (bench/bm_python.py): n replays of `executor` in a C++ loop (acquire_inputs, replay, "
      "wait, release: what the Python loop does), GIL released; returns the seconds taken.");
}

}  // namespace

void bind_executor(py::module_& m) {
  bind_step(m);
  bind_pinned_buffer(m);
  bind_slot_and_replay(m);
  bind_executor_class(m);
}

}  // namespace stepgraph::python
