// python/src/pinned_buffer.h — stepgraph.PinnedBuffer: a slot's pinned input
// or a replay's pinned output handed to Python without a copy, through the
// buffer protocol and DLPack (executor_bindings.cpp, Note [Zero copy from
// Python]).
//
// Ownership: holds a reference to the memory itself (Note [Buffer lifetime],
// buffer.h) and to the Python object it came from; a DLPack capsule holds a
// copy of both until its consumer calls the deleter. Thread-safety: an
// immutable value. Capture: no CUDA call.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>

#include <stepgraph/runtime/buffer.h>

namespace stepgraph::python {

namespace py = pybind11;

struct PinnedBuffer {
  std::shared_ptr<runtime::detail::BufferImpl> memory;  // keeps the memory alive
  py::object owner;                                     // the slot or handle it came from
  void* ptr = nullptr;
  std::string name;
  std::vector<py::ssize_t> shape;
  std::string dtype;   // "float32", "int32", "uint8", ...
  std::string format;  // the buffer protocol's struct format
  std::size_t itemsize = 0;
  bool readonly = false;

  [[nodiscard]] std::size_t nbytes() const noexcept;
  [[nodiscard]] std::vector<py::ssize_t> strides() const;  // C order, in bytes
};

/// The strides (bytes) of a C-ordered array of `shape` and `itemsize`.
[[nodiscard]] std::vector<py::ssize_t> c_strides(const std::vector<py::ssize_t>& shape, std::size_t itemsize);

void bind_pinned_buffer(py::module_& m);

}  // namespace stepgraph::python
