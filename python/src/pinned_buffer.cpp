// stepgraph.PinnedBuffer: the buffer protocol and DLPack over pinned memory
// (pinned_buffer.h).
#include "pinned_buffer.h"

#include <cstdint>
#include <utility>

#include <stepgraph/core/error.h>

#include "module.h"

namespace stepgraph::python {

namespace {

using namespace py::literals;

// Note [DLPack]
// The DLPack ABI (dmlc/dlpack, include/dlpack/dlpack.h, v0.8; no Debian
// package ships the header): a capsule named "dltensor" holding a
// DLManagedTensor. The consumer renames the capsule "used_dltensor" and
// calls the deleter when it is done; a capsule never consumed calls the
// deleter from its own destructor. The memory is host memory the CPU reads
// and writes directly on both backends, so the device is kDLCPU (NumPy's
// from_dlpack and torch.from_dlpack accept it).
enum DLDeviceType : std::int32_t { kDLCPU = 1 };
enum DLDataTypeCode : std::uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2 };
struct DLDevice {
  DLDeviceType device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // in elements; NULL: C order
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct Export {
  DLManagedTensor tensor{};
  PinnedBuffer buffer;  // the memory and its owner stay alive while the consumer holds the tensor
  std::vector<std::int64_t> shape;
};

void delete_export(DLManagedTensor* self) {
  if (self == nullptr) return;
  auto* e = static_cast<Export*>(self->manager_ctx);
  // Consumers may call the deleter on any thread: the owner's reference is
  // dropped with the GIL (or leaked once the interpreter is going away:
  // Note [Interpreter shutdown], module.h).
  if (python_going_away()) {
    e->buffer.owner.release();
    delete e;
    return;
  }
  py::gil_scoped_acquire gil;
  delete e;
}

DLDataType dl_dtype(const PinnedBuffer& b) {
  const auto bits = static_cast<std::uint8_t>(b.itemsize * 8);
  if (b.dtype.rfind("float", 0) == 0) return {kDLFloat, bits, 1};
  if (b.dtype.rfind("uint", 0) == 0) return {kDLUInt, bits, 1};
  if (b.dtype.rfind("int", 0) == 0) return {kDLInt, bits, 1};
  throw InvalidArgument("PinnedBuffer '" + b.name + "': dtype " + b.dtype + " has no DLPack type");
}

py::capsule to_dlpack(const PinnedBuffer& b, const py::object& stream) {
  STEPGRAPH_CHECK(stream.is_none(), InvalidArgument,
                  "PinnedBuffer '{}'.__dlpack__: stream must be None for host (kDLCPU) memory", b.name);
  auto e = std::make_unique<Export>();
  e->buffer = b;
  e->shape.assign(b.shape.begin(), b.shape.end());
  DLTensor& t = e->tensor.dl_tensor;
  t.data = b.ptr;
  t.device = {kDLCPU, 0};
  t.ndim = static_cast<std::int32_t>(b.shape.size());
  t.dtype = dl_dtype(b);
  t.shape = e->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  e->tensor.manager_ctx = e.get();
  e->tensor.deleter = &delete_export;
  DLManagedTensor* raw = &e.release()->tensor;
  return py::capsule(raw, "dltensor", [](PyObject* capsule) {
    // Not consumed (a consumer renames it "used_dltensor"): ours to free.
    if (PyCapsule_IsValid(capsule, "dltensor")) {
      auto* t = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
      t->deleter(t);
    }
  });
}

}  // namespace

std::size_t PinnedBuffer::nbytes() const noexcept {
  std::size_t n = itemsize;
  for (py::ssize_t d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

std::vector<py::ssize_t> c_strides(const std::vector<py::ssize_t>& shape, std::size_t itemsize) {
  std::vector<py::ssize_t> out(shape.size());
  auto s = static_cast<py::ssize_t>(itemsize);
  for (std::size_t i = shape.size(); i-- > 0;) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

std::vector<py::ssize_t> PinnedBuffer::strides() const {
  return c_strides(shape, itemsize);
}

void bind_pinned_buffer(py::module_& m) {
  py::class_<PinnedBuffer>(m, "PinnedBuffer", py::buffer_protocol(), R"doc(
A slot's pinned input or a replay's pinned output: the memory the graph
reads or writes, without a copy. numpy.asarray(buf) (buffer protocol) and
numpy.from_dlpack(buf) / torch.from_dlpack(buf) (DLPack, device kCPU) are
views of it; outputs are read-only through the buffer protocol (DLPack has
no read-only flag: do not write them). The buffer keeps the memory alive;
docs/embedding.md says when to touch it.)doc")
      .def_buffer([](const PinnedBuffer& b) {
        return py::buffer_info(b.ptr, static_cast<py::ssize_t>(b.itemsize), b.format,
                               static_cast<py::ssize_t>(b.shape.size()), b.shape, b.strides(), b.readonly);
      })
      .def("__dlpack__", &to_dlpack, "stream"_a = py::none())
      .def("__dlpack_device__", [](const PinnedBuffer&) { return py::make_tuple(static_cast<int>(kDLCPU), 0); })
      .def_readonly("name", &PinnedBuffer::name)
      .def_property_readonly("address", [](const PinnedBuffer& b) { return reinterpret_cast<std::uintptr_t>(b.ptr); })
      .def_property_readonly("nbytes", &PinnedBuffer::nbytes)
      .def_property_readonly("shape", [](const PinnedBuffer& b) { return py::tuple(py::cast(b.shape)); })
      .def_readonly("dtype", &PinnedBuffer::dtype)
      .def_readonly("readonly", &PinnedBuffer::readonly);
}

}  // namespace stepgraph::python
