// The C ABI (stepgraph/c/stepgraph.h) over the C++ API.
//
// Note [No exception crosses the ABI]
// Every entry point is `return guarded("sg_x", [&] { ... });`: the lambda
// throws stepgraph's exceptions as the C++ API does, and guarded() maps
// them onto sg_status and the calling thread's last error message. Handles
// are checked against the table of live handles before they are touched
// (Note [Handles] in the header).
#include <stepgraph/c/stepgraph.h>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>
#include <stepgraph/runtime/step_scalars.h>

namespace rt = stepgraph::runtime;
using stepgraph::DeviceFault;
using stepgraph::InvalidArgument;
using stepgraph::InvalidState;

static_assert(sizeof(sg_step_scalars) == sizeof(rt::StepScalars), "sg_step_scalars must mirror StepScalars");
static_assert(offsetof(sg_step_scalars, learning_rate) == offsetof(rt::StepScalars, learning_rate));
static_assert(offsetof(sg_step_scalars, loss_scale) == offsetof(rt::StepScalars, loss_scale));
static_assert(offsetof(sg_step_scalars, rng_seed) == offsetof(rt::StepScalars, rng_seed));
static_assert(offsetof(sg_step_scalars, rng_offset) == offsetof(rt::StepScalars, rng_offset));

// --- the handle types; each names its kind for the table of live handles
namespace {
enum class HandleKind {
  kBackend,
  kBuffer,
  kStream,
  kEvent,
  kGraph,
  kGraphExec,
  kStepDesc,
  kExecutor,
  kInputs,
  kReplay
};
}  // namespace

struct sg_backend {
  static constexpr HandleKind kKind = HandleKind::kBackend;
  std::shared_ptr<rt::Backend> backend;
};
struct sg_buffer {
  static constexpr HandleKind kKind = HandleKind::kBuffer;
  rt::Buffer buffer;
};
struct sg_stream {
  static constexpr HandleKind kKind = HandleKind::kStream;
  rt::Stream stream;
};
struct sg_event {
  static constexpr HandleKind kKind = HandleKind::kEvent;
  rt::Event event;
};
struct sg_graph {
  static constexpr HandleKind kKind = HandleKind::kGraph;
  rt::Graph graph;
};
struct sg_graph_exec {
  static constexpr HandleKind kKind = HandleKind::kGraphExec;
  rt::GraphExec exec;
};
struct sg_inputs {
  static constexpr HandleKind kKind = HandleKind::kInputs;
  rt::InputSlot slot;
};
struct sg_replay {
  static constexpr HandleKind kKind = HandleKind::kReplay;
  rt::ReplayHandle handle;
  std::optional<rt::StepError> error;  // kept so that sg_replay_error's strings live until release
};

namespace {

struct AccessDesc {
  std::string buffer;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  rt::Access mode = rt::Access::kRead;
};

struct OpDesc {
  bool memset = false;
  std::string kernel;  // launches
  std::string node;
  std::vector<AccessDesc> accesses;  // a memset: one, the range to set
  std::size_t threads = 1;
  unsigned char value = 0;
};

}  // namespace

struct sg_step_desc {
  static constexpr HandleKind kKind = HandleKind::kStepDesc;
  rt::StepSpec spec;
  std::vector<OpDesc> ops;
};

namespace {

// --- the calling thread's last error
thread_local std::string t_last_error;

sg_status fail_with(sg_status s, std::string message) {
  t_last_error = std::move(message);
  return s;
}

// --- the table of live handles (Note [Handles])

const char* kind_name(HandleKind k) {
  switch (k) {
    case HandleKind::kBackend:
      return "sg_backend";
    case HandleKind::kBuffer:
      return "sg_buffer";
    case HandleKind::kStream:
      return "sg_stream";
    case HandleKind::kEvent:
      return "sg_event";
    case HandleKind::kGraph:
      return "sg_graph";
    case HandleKind::kGraphExec:
      return "sg_graph_exec";
    case HandleKind::kStepDesc:
      return "sg_step_desc";
    case HandleKind::kExecutor:
      return "sg_executor";
    case HandleKind::kInputs:
      return "sg_inputs";
    case HandleKind::kReplay:
      return "sg_replay";
  }
  return "handle";
}

// Note [Handle values]
// A handle is not the address of its object: it is kHandleTag |
// (generation << 32) | (slot index + 1), cast to the handle's pointer type
// and never dereferenced. Releasing a handle bumps its slot's generation (31
// bits), so a released handle stays invalid after the slot is reused, and a
// pointer the library never made (almost surely) decodes to a slot that does
// not match. The tag (the top bit) keeps every handle out of the user half
// of the address space: a garbage-collected runtime that meets one in a
// pointer-typed variable (Go's, when a handle is passed to a C function as
// sg_x*) never takes it for one of its own objects — without it, a slot's
// 192nd generation would read 0xc0_0000_000i, inside Go's heap arena range.
// The Go client (examples/go) holds these values as uintptr.
static_assert(sizeof(std::uintptr_t) >= 8, "handle values need 64-bit pointers");
constexpr std::uint64_t kHandleTag = std::uint64_t{1} << 63;
constexpr std::uint32_t kGenerationMask = 0x7fffffffu;

struct HandleSlot {
  std::uint32_t generation = 1;
  HandleKind kind = HandleKind::kBackend;
  void* object = nullptr;  // null while the slot is free
};
struct HandleTable {
  std::shared_mutex mutex;
  std::vector<HandleSlot> slots;
  std::vector<std::uint32_t> free;
};
HandleTable& handles() {
  static auto* table = new HandleTable;  // never destroyed: usable from atexit and late threads
  return *table;
}

/// The slot `h` names if it is a live handle of kind `kind`, else null.
/// Call with the table's mutex held.
HandleSlot* find_slot(const void* h, HandleKind kind) {
  const auto value = reinterpret_cast<std::uintptr_t>(h);
  const auto index = static_cast<std::uint64_t>(value & 0xffffffffu);
  if ((static_cast<std::uint64_t>(value) & kHandleTag) == 0) return nullptr;
  const auto generation = static_cast<std::uint32_t>(static_cast<std::uint64_t>(value) >> 32) & kGenerationMask;
  auto& slots = handles().slots;
  if (index == 0 || index > slots.size()) return nullptr;
  HandleSlot& slot = slots[index - 1];
  if (slot.object == nullptr || slot.generation != generation || slot.kind != kind) return nullptr;
  return &slot;
}

[[noreturn]] void not_live(const void* h, const char* what, HandleKind kind) {
  if (h == nullptr)
    throw InvalidArgument(fmt::format("{} is NULL; pass a {} made by this library", what, kind_name(kind)));
  throw InvalidArgument(fmt::format("{} ({}) is not a live {}: released already, or never made by this library", what,
                                    h, kind_name(kind)));
}

/// The object of the live handle `h`; InvalidArgument naming `what` (the
/// parameter) if `h` is NULL, released, or not a handle of its type.
template <class T>
T& live(T* h, const char* what) {
  using Object = std::remove_const_t<T>;
  std::shared_lock lock(handles().mutex);
  HandleSlot* slot = find_slot(h, Object::kKind);
  if (slot == nullptr) not_live(h, what, Object::kKind);
  return *static_cast<Object*>(slot->object);
}

/// Enters `object` into the table; returns its handle value.
template <class T>
T* publish(std::unique_ptr<T> object) {
  std::unique_lock lock(handles().mutex);
  auto& t = handles();
  std::uint32_t index = 0;
  if (t.free.empty()) {
    t.slots.emplace_back();
    index = static_cast<std::uint32_t>(t.slots.size() - 1);
  } else {
    index = t.free.back();
    t.free.pop_back();
  }
  HandleSlot& slot = t.slots[index];
  slot.kind = T::kKind;
  slot.object = object.release();
  const std::uint64_t value = kHandleTag | (static_cast<std::uint64_t>(slot.generation) << 32) | (index + 1u);
  return reinterpret_cast<T*>(static_cast<std::uintptr_t>(value));
}

/// Removes the live handle `h` from the table and hands its object back.
template <class T>
std::unique_ptr<T> take(T* h, const char* what) {
  std::unique_lock lock(handles().mutex);
  HandleSlot* slot = find_slot(h, T::kKind);
  if (slot == nullptr) not_live(h, what, T::kKind);
  std::unique_ptr<T> object(static_cast<T*>(slot->object));
  slot->object = nullptr;
  slot->generation = (slot->generation + 1) & kGenerationMask;
  if (slot->generation == 0) slot->generation = 1;
  handles().free.push_back(static_cast<std::uint32_t>(slot - handles().slots.data()));
  return object;
}

template <class T>
void require_out(T* out, const char* what) {
  if (out == nullptr) throw InvalidArgument(fmt::format("{} is NULL; pass where to store the result", what));
}

void check_device(const rt::Backend& b, int device) {
  if (device < 0 || device >= b.device_count())
    throw InvalidArgument(
        fmt::format("device {} does not exist on the {} backend ({} device(s))", device, b.name(), b.device_count()));
}

std::string require_name(const char* s, const char* what) {
  if (s == nullptr || *s == '\0') throw InvalidArgument(fmt::format("{} is NULL or empty; pass a name", what));
  return s;
}

/// A wait that ran out (SG_TIMEOUT); never thrown outside this file.
class WaitTimeout : public stepgraph::Error {
 public:
  using Error::Error;
};

// Note [Calls from kernels and callbacks]
// A C kernel runs on a backend worker (or wherever the backend runs it) and
// the error callback on the executor's thread; neither may call the ABI
// (the header's capture rules): a replay from a kernel would wait on itself,
// an sg_executor_release from the callback would join its own thread. Each
// runs inside a CallScope, and every entry point refuses to run in one.
enum class CallContext { kApplication, kKernel, kErrorCallback };
thread_local CallContext t_context = CallContext::kApplication;

class CallScope {
 public:
  explicit CallScope(CallContext c) noexcept : previous_(t_context) { t_context = c; }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;
  ~CallScope() { t_context = previous_; }

 private:
  CallContext previous_;
};

/// Note [No exception crosses the ABI]
template <class F>
sg_status guarded(const char* fn, F&& body) noexcept {
  try {
    if (t_context != CallContext::kApplication)
      throw InvalidState(
          fmt::format("called from {}, where no function of stepgraph/c/stepgraph.h but "
                      "sg_last_error and sg_status_string may be called; nothing was done",
                      t_context == CallContext::kKernel ? "inside a C kernel" : "the error callback"));
    body();
    return SG_OK;
  } catch (const WaitTimeout& e) {
    return fail_with(SG_TIMEOUT, fmt::format("{}: {}", fn, e.what()));
  } catch (const InvalidArgument& e) {
    return fail_with(SG_INVALID_ARGUMENT, fmt::format("{}: {}", fn, e.what()));
  } catch (const InvalidState& e) {
    return fail_with(SG_INVALID_STATE, fmt::format("{}: {}", fn, e.what()));
  } catch (const DeviceFault& e) {
    return fail_with(SG_DEVICE_FAULT, fmt::format("{}: {}", fn, e.what()));
  } catch (const stepgraph::CudaError& e) {
    return fail_with(SG_BACKEND_ERROR, fmt::format("{}: {}", fn, e.what()));
  } catch (const stepgraph::NcclError& e) {
    return fail_with(SG_BACKEND_ERROR, fmt::format("{}: {}", fn, e.what()));
  } catch (const stepgraph::HwlocError& e) {
    return fail_with(SG_BACKEND_ERROR, fmt::format("{}: {}", fn, e.what()));
  } catch (const stepgraph::MpiError& e) {
    return fail_with(SG_BACKEND_ERROR, fmt::format("{}: {}", fn, e.what()));
  } catch (const std::bad_alloc&) {
    return fail_with(SG_OUT_OF_MEMORY, fmt::format("{}: out of host memory", fn));
  } catch (const std::exception& e) {
    return fail_with(SG_INTERNAL, fmt::format("{}: internal error: {}", fn, e.what()));
  } catch (...) {
    return fail_with(SG_INTERNAL, fmt::format("{}: internal error (unknown exception)", fn));
  }
}

// --- kernels registered by name
struct KernelEntry {
  sg_host_kernel_fn host = nullptr;
  const void* device = nullptr;
  void* user_data = nullptr;
};
struct KernelRegistry {
  std::mutex mutex;
  std::map<std::string, KernelEntry, std::less<>> kernels;
};
KernelRegistry& kernels() {
  static auto* registry = new KernelRegistry;
  return *registry;
}

// The C enums mirror the C++ ones value for value, so that one cast maps
// each; a C++ enumerator added or reordered breaks the build here.
constexpr int v(auto e) {
  return static_cast<int>(e);
}
static_assert(v(rt::StepErrorKind::kDeviceFault) == SG_ERROR_DEVICE_FAULT &&
              v(rt::StepErrorKind::kTimeout) == SG_ERROR_TIMEOUT &&
              v(rt::StepErrorKind::kCancelled) == SG_ERROR_CANCELLED &&
              v(rt::StepErrorKind::kCallback) == SG_ERROR_CALLBACK &&
              v(rt::StepErrorKind::kCollective) == SG_ERROR_COLLECTIVE);
static_assert(v(rt::ReplayStatus::kQueued) == SG_REPLAY_QUEUED && v(rt::ReplayStatus::kRunning) == SG_REPLAY_RUNNING &&
              v(rt::ReplayStatus::kDone) == SG_REPLAY_DONE && v(rt::ReplayStatus::kFailed) == SG_REPLAY_FAILED &&
              v(rt::ReplayStatus::kCancelled) == SG_REPLAY_CANCELLED &&
              v(rt::ReplayStatus::kClosed) == SG_REPLAY_CLOSED);
static_assert(v(rt::ExecutorState::kCreated) == SG_EXECUTOR_CREATED &&
              v(rt::ExecutorState::kWarmingUp) == SG_EXECUTOR_WARMING_UP &&
              v(rt::ExecutorState::kCaptured) == SG_EXECUTOR_CAPTURED &&
              v(rt::ExecutorState::kReady) == SG_EXECUTOR_READY &&
              v(rt::ExecutorState::kFailed) == SG_EXECUTOR_FAILED &&
              v(rt::ExecutorState::kClosed) == SG_EXECUTOR_CLOSED);
sg_error_kind to_c(rt::StepErrorKind k) {
  return static_cast<sg_error_kind>(v(k));
}
sg_replay_status to_c(rt::ReplayStatus s) {
  return static_cast<sg_replay_status>(v(s));
}
sg_executor_state to_c(rt::ExecutorState s) {
  return static_cast<sg_executor_state>(v(s));
}

sg_step_error to_c(const rt::StepError& e) {
  sg_step_error out{};
  out.step = e.step;
  out.node = e.node ? e.node->c_str() : nullptr;
  out.kind = to_c(e.kind);
  out.message = e.message.c_str();
  return out;
}

rt::Access to_access(sg_access_mode m) {
  switch (m) {
    case SG_ACCESS_READ:
      return rt::Access::kRead;
    case SG_ACCESS_WRITE:
      return rt::Access::kWrite;
    case SG_ACCESS_READ_WRITE:
      return rt::Access::kReadWrite;
    default:  // the range enumerators, or any other int a C caller passed
      break;
  }
  throw InvalidArgument(fmt::format("access mode {} is not an sg_access_mode", static_cast<int>(m)));
}

// --- the step: what sg_executor_create resolved from an sg_step_desc
enum class Role { kInput, kOutput, kState, kScratch, kScalars };

struct ResolvedAccess {
  Role role = Role::kInput;
  std::string buffer;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  rt::Access mode = rt::Access::kRead;
};

struct ResolvedOp {
  bool memset = false;
  std::string node;
  KernelEntry kernel;
  std::vector<ResolvedAccess> accesses;
  std::size_t threads = 1;
  unsigned char value = 0;
};

const rt::Buffer& resolve(const rt::StepContext& ctx, const ResolvedAccess& a) {
  switch (a.role) {
    case Role::kInput:
      return ctx.input(a.buffer);
    case Role::kOutput:
      return ctx.output(a.buffer);
    case Role::kState:
      return ctx.state(a.buffer);
    case Role::kScratch:
      return ctx.scratch(a.buffer);
    case Role::kScalars:
      return ctx.scalars();
  }
  throw InvalidState("stepgraph_c: unknown buffer role (internal)");
}

rt::BufferAccess declared(const rt::Buffer& b, std::size_t offset, std::size_t bytes, rt::Access mode) {
  switch (mode) {
    case rt::Access::kRead:
      return rt::read(b, offset, bytes);
    case rt::Access::kWrite:
      return rt::write(b, offset, bytes);
    case rt::Access::kReadWrite:
      return rt::read_write(b, offset, bytes);
  }
  return rt::read(b, offset, bytes);
}

/// Launches a registered C kernel on `stream` (a step's op, or
/// sg_stream_launch): `bases` are its arguments, the base addresses of the
/// buffers of `accesses`, in order (Note [C kernels] in the header).
void launch_c_kernel(rt::StreamRef stream, const std::string& node, const KernelEntry& kernel, std::size_t threads,
                     std::vector<rt::BufferAccess> accesses, std::vector<void*> bases) {
  rt::KernelParams p;
  p.name = node;
  p.dims = rt::LaunchDims::linear(threads, 128);
  p.accesses = std::move(accesses);
  auto storage = std::make_shared<std::vector<void*>>(std::move(bases));
  for (void*& arg : *storage) p.args.push_back(static_cast<void*>(&arg));
  if (kernel.host != nullptr) {
    p.host = [storage, fn = kernel.host, user = kernel.user_data, node] {
      int rc = 0;
      {
        const CallScope scope(CallContext::kKernel);  // Note [Calls from kernels and callbacks]
        rc = fn(storage->data(), storage->size(), user);
      }
      if (rc != 0) throw DeviceFault(fmt::format("C kernel of node '{}' returned {}", node, rc), node);
    };
  }
  p.device_fn = kernel.device;
  p.arg_storage = storage;
  stream.launch_kernel(std::move(p));
}

/// The registered kernel `name`; InvalidArgument saying what to do if none.
KernelEntry find_kernel(const std::string& name, const std::string& where) {
  std::lock_guard lock(kernels().mutex);
  const auto it = kernels().kernels.find(name);
  if (it == kernels().kernels.end())
    throw InvalidArgument(
        fmt::format("{} names kernel '{}', which is not registered; call sg_kernel_register first", where, name));
  return it->second;
}

/// Enqueues one op of the step (Note [C kernels] in the header: args are the
/// base addresses of the accessed buffers, in the order of the accesses).
void enqueue(const rt::StepContext& ctx, const ResolvedOp& op) {
  if (op.memset) {
    const ResolvedAccess& a = op.accesses.front();
    ctx.stream().memset(resolve(ctx, a).slice(a.offset, a.bytes), op.value, op.node);
    return;
  }
  std::vector<rt::BufferAccess> accesses;
  std::vector<void*> bases;
  accesses.reserve(op.accesses.size());
  bases.reserve(op.accesses.size());
  for (const ResolvedAccess& a : op.accesses) {
    const rt::Buffer& b = resolve(ctx, a);
    accesses.push_back(declared(b, a.offset, a.bytes, a.mode));
    bases.push_back(b.data());
  }
  launch_c_kernel(ctx.stream(), op.node, op.kernel, op.threads, std::move(accesses), std::move(bases));
}

/// Checks every op of `desc` against its buffers and the kernel registry,
/// and resolves names to roles and kernels (Note [C kernels]).
std::vector<ResolvedOp> resolve_step(const sg_step_desc& desc) {
  std::map<std::string, std::pair<Role, std::size_t>, std::less<>> buffers;
  const auto add = [&](const std::vector<rt::BufferSpec>& specs, Role role) {
    for (const auto& b : specs) buffers.emplace(b.name, std::make_pair(role, b.bytes));
  };
  add(desc.spec.inputs, Role::kInput);
  add(desc.spec.outputs, Role::kOutput);
  add(desc.spec.state, Role::kState);
  add(desc.spec.scratch, Role::kScratch);
  buffers.emplace(SG_SCALARS_BUFFER, std::make_pair(Role::kScalars, sizeof(rt::StepScalars)));

  std::vector<ResolvedOp> out;
  out.reserve(desc.ops.size());
  for (std::size_t i = 0; i < desc.ops.size(); ++i) {
    const OpDesc& d = desc.ops[i];
    ResolvedOp op;
    op.memset = d.memset;
    op.node = d.node;
    op.threads = d.threads;
    op.value = d.value;
    if (!d.memset) op.kernel = find_kernel(d.kernel, fmt::format("launch {} ('{}')", i, d.node));
    for (const AccessDesc& a : d.accesses) {
      const auto it = buffers.find(a.buffer);
      if (it == buffers.end())
        throw InvalidArgument(
            fmt::format("op {} ('{}') accesses buffer '{}', which the step does not declare; "
                        "declare it with sg_step_desc_add_buffer",
                        i, d.node, a.buffer));
      const std::size_t size = it->second.second;
      const std::size_t bytes = a.bytes == 0 && a.offset < size ? size - a.offset : a.bytes;
      if (a.offset >= size || bytes > size - a.offset)
        throw InvalidArgument(fmt::format("op {} ('{}') accesses bytes [{}, {}) of '{}', which has {} bytes", i, d.node,
                                          a.offset, a.offset + bytes, a.buffer, size));
      op.accesses.push_back({it->second.first, a.buffer, a.offset, bytes, a.mode});
    }
    out.push_back(std::move(op));
  }
  return out;
}

}  // namespace

struct sg_executor {
  static constexpr HandleKind kKind = HandleKind::kExecutor;
  std::unique_ptr<rt::StepExecutor> executor;
};

namespace {
thread_local std::optional<rt::StepError> t_failure;  // sg_executor_failure's strings

rt::StepExecutor& running(const sg_executor* e, const char* what) {
  const sg_executor& h = live(e, what);
  if (!h.executor) throw InvalidState(fmt::format("{} is closed", what));
  return *h.executor;
}

rt::BufferSpec& add_spec(rt::StepSpec& spec, sg_buffer_role role) {
  switch (role) {
    case SG_ROLE_INPUT:
      return spec.inputs.emplace_back();
    case SG_ROLE_OUTPUT:
      return spec.outputs.emplace_back();
    case SG_ROLE_STATE:
      return spec.state.emplace_back();
    case SG_ROLE_SCRATCH:
      return spec.scratch.emplace_back();
    default:  // the range enumerators, or any other int a C caller passed
      break;
  }
  throw InvalidArgument(fmt::format("role {} is not an sg_buffer_role", static_cast<int>(role)));
}

bool declared_anywhere(const rt::StepSpec& spec, std::string_view name) {
  for (const auto* list : {&spec.inputs, &spec.outputs, &spec.state, &spec.scratch})
    for (const auto& b : *list)
      if (b.name == name) return true;
  return false;
}

}  // namespace

// ======================================================================
// The entry points
// ======================================================================

extern "C" {

const char* sg_status_string(sg_status status) {
  switch (status) {
    case SG_OK:
      return "SG_OK";
    case SG_INVALID_ARGUMENT:
      return "SG_INVALID_ARGUMENT";
    case SG_INVALID_STATE:
      return "SG_INVALID_STATE";
    case SG_DEVICE_FAULT:
      return "SG_DEVICE_FAULT";
    case SG_TIMEOUT:
      return "SG_TIMEOUT";
    case SG_OUT_OF_MEMORY:
      return "SG_OUT_OF_MEMORY";
    case SG_BACKEND_ERROR:
      return "SG_BACKEND_ERROR";
    case SG_INTERNAL:
      return "SG_INTERNAL";
  }
  return "SG_UNKNOWN_STATUS";
}

const char* sg_last_error(void) {
  return t_last_error.c_str();
}

// --- backend
sg_status sg_backend_create(const char* name, int host_devices, sg_backend** out) {
  return guarded("sg_backend_create", [&] {
    require_out(out, "out");
    const std::string n = require_name(name, "name");
    if (host_devices < 1) throw InvalidArgument(fmt::format("host_devices is {}; give at least 1", host_devices));
    rt::BackendOptions o;
    o.host_devices = host_devices;
    auto h = std::make_unique<sg_backend>();
    h->backend = rt::Backend::create(n, o);
    *out = publish(std::move(h));
  });
}

sg_status sg_backend_release(sg_backend* backend) {
  return guarded("sg_backend_release", [&] { take(backend, "backend").reset(); });
}

sg_status sg_backend_name(const sg_backend* backend, const char** out) {
  return guarded("sg_backend_name", [&] {
    const auto& b = live(backend, "backend");
    require_out(out, "out");
    *out = b.backend->kind() == rt::BackendKind::kCuda ? "cuda" : "host";
  });
}

sg_status sg_backend_device_count(const sg_backend* backend, int* out) {
  return guarded("sg_backend_device_count", [&] {
    const auto& b = live(backend, "backend");
    require_out(out, "out");
    *out = b.backend->device_count();
  });
}

// --- buffers
sg_status sg_buffer_alloc_device(sg_backend* backend, int device, size_t bytes, sg_buffer** out) {
  return guarded("sg_buffer_alloc_device", [&] {
    auto& b = live(backend, "backend");
    require_out(out, "out");
    check_device(*b.backend, device);
    auto h = std::make_unique<sg_buffer>();
    h->buffer = b.backend->allocate(device, bytes);
    *out = publish(std::move(h));
  });
}

sg_status sg_buffer_alloc_pinned(sg_backend* backend, size_t bytes, sg_buffer** out) {
  return guarded("sg_buffer_alloc_pinned", [&] {
    auto& b = live(backend, "backend");
    require_out(out, "out");
    if (bytes == 0) throw InvalidArgument("bytes is 0; give the size of the buffer");
    auto h = std::make_unique<sg_buffer>();
    h->buffer = b.backend->allocate_pinned(bytes);
    *out = publish(std::move(h));
  });
}

sg_status sg_buffer_host_ptr(const sg_buffer* buffer, void** out) {
  return guarded("sg_buffer_host_ptr", [&] {
    const auto& b = live(buffer, "buffer");
    require_out(out, "out");
    *out = b.buffer.host_data();
  });
}

sg_status sg_buffer_size(const sg_buffer* buffer, size_t* out) {
  return guarded("sg_buffer_size", [&] {
    const auto& b = live(buffer, "buffer");
    require_out(out, "out");
    *out = b.buffer.size();
  });
}

sg_status sg_buffer_release(sg_buffer* buffer) {
  return guarded("sg_buffer_release", [&] { take(buffer, "buffer").reset(); });
}

// --- streams
sg_status sg_stream_create(sg_backend* backend, int device, sg_stream** out) {
  return guarded("sg_stream_create", [&] {
    auto& b = live(backend, "backend");
    require_out(out, "out");
    check_device(*b.backend, device);
    auto h = std::make_unique<sg_stream>();
    h->stream = b.backend->create_stream(device);
    *out = publish(std::move(h));
  });
}

namespace {
rt::BufferSlice checked_slice(const rt::Buffer& b, std::size_t offset, std::size_t bytes, const char* what) {
  if (bytes == 0 || offset > b.size() || bytes > b.size() - offset)
    throw InvalidArgument(fmt::format("{}: bytes [{}, {}) do not lie inside its {} bytes (and bytes must be > 0)", what,
                                      offset, offset + bytes, b.size()));
  return b.slice(offset, bytes);
}
}  // namespace

sg_status sg_stream_memset(sg_stream* stream, sg_buffer* dst, size_t offset, size_t bytes, unsigned char value) {
  return guarded("sg_stream_memset", [&] {
    auto& s = live(stream, "stream");
    auto& d = live(dst, "dst");
    s.stream.memset(checked_slice(d.buffer, offset, bytes, "dst"), value);
  });
}

sg_status sg_stream_copy(sg_stream* stream, sg_buffer* dst, size_t dst_offset, const sg_buffer* src, size_t src_offset,
                         size_t bytes) {
  return guarded("sg_stream_copy", [&] {
    auto& s = live(stream, "stream");
    auto& d = live(dst, "dst");
    const auto& from = live(src, "src");
    s.stream.copy(checked_slice(d.buffer, dst_offset, bytes, "dst"),
                  checked_slice(from.buffer, src_offset, bytes, "src"));
  });
}

sg_status sg_stream_synchronize(sg_stream* stream) {
  return guarded("sg_stream_synchronize", [&] { live(stream, "stream").stream.synchronize(); });
}

sg_status sg_stream_release(sg_stream* stream) {
  return guarded("sg_stream_release", [&] {
    if (live(stream, "stream").stream.capture_status() != rt::CaptureStatus::kNone)
      throw InvalidState("the stream is capturing; end the capture (sg_stream_end_capture) before releasing it");
    take(stream, "stream").reset();
  });
}

// --- events
sg_status sg_event_create(sg_backend* backend, int device, sg_event** out) {
  return guarded("sg_event_create", [&] {
    auto& b = live(backend, "backend");
    require_out(out, "out");
    check_device(*b.backend, device);
    auto h = std::make_unique<sg_event>();
    h->event = b.backend->create_event(device);
    *out = publish(std::move(h));
  });
}

sg_status sg_stream_record(sg_stream* stream, sg_event* event) {
  return guarded("sg_stream_record", [&] { live(stream, "stream").stream.record(live(event, "event").event); });
}

sg_status sg_stream_wait_event(sg_stream* stream, const sg_event* event) {
  return guarded("sg_stream_wait_event", [&] { live(stream, "stream").stream.wait(live(event, "event").event); });
}

sg_status sg_event_query(const sg_event* event, int* done) {
  return guarded("sg_event_query", [&] {
    const auto& e = live(event, "event");
    require_out(done, "done");
    *done = e.event.query() ? 1 : 0;
  });
}

sg_status sg_event_synchronize(const sg_event* event) {
  return guarded("sg_event_synchronize", [&] { live(event, "event").event.synchronize(); });
}

sg_status sg_event_release(sg_event* event) {
  return guarded("sg_event_release", [&] { take(event, "event").reset(); });
}

// --- kernels
sg_status sg_kernel_register(const char* name, sg_host_kernel_fn host, const void* device_fn, void* user_data) {
  return guarded("sg_kernel_register", [&] {
    std::string n = require_name(name, "name");
    if (host == nullptr && device_fn == nullptr)
      throw InvalidArgument(fmt::format("kernel '{}': host and device_fn are both NULL; give at least one", n));
    std::lock_guard lock(kernels().mutex);
    if (!kernels().kernels.emplace(std::move(n), KernelEntry{host, device_fn, user_data}).second)
      throw InvalidArgument(
          fmt::format("kernel '{}' is registered already; sg_kernel_unregister it first, or pick another name", name));
  });
}

sg_status sg_kernel_unregister(const char* name) {
  return guarded("sg_kernel_unregister", [&] {
    const std::string n = require_name(name, "name");
    std::lock_guard lock(kernels().mutex);
    if (kernels().kernels.erase(n) == 0) throw InvalidArgument(fmt::format("kernel '{}' is not registered", n));
  });
}

// --- step description
sg_status sg_step_desc_create(sg_step_desc** out) {
  return guarded("sg_step_desc_create", [&] {
    require_out(out, "out");
    *out = publish(std::make_unique<sg_step_desc>());
  });
}

sg_status sg_step_desc_add_buffer(sg_step_desc* desc, sg_buffer_role role, const char* name, size_t bytes) {
  return guarded("sg_step_desc_add_buffer", [&] {
    auto& d = live(desc, "desc");
    std::string n = require_name(name, "name");
    if (n == SG_SCALARS_BUFFER)
      throw InvalidArgument(fmt::format("'{}' is reserved for the executor's scalars; pick another name", n));
    if (bytes == 0) throw InvalidArgument(fmt::format("buffer '{}': bytes is 0; give its size", n));
    if (declared_anywhere(d.spec, n))
      throw InvalidArgument(fmt::format("buffer '{}' is declared already (names are unique over every role)", n));
    auto& spec = add_spec(d.spec, role);
    spec.name = std::move(n);
    spec.bytes = bytes;
  });
}

sg_status sg_step_desc_add_launch(sg_step_desc* desc, const char* kernel, const char* node, const sg_access* accesses,
                                  size_t count, size_t threads) {
  return guarded("sg_step_desc_add_launch", [&] {
    auto& d = live(desc, "desc");
    OpDesc op;
    op.kernel = require_name(kernel, "kernel");
    op.node = node != nullptr && *node != '\0' ? std::string(node) : op.kernel;
    if (count > 0 && accesses == nullptr)
      throw InvalidArgument(fmt::format("launch '{}': accesses is NULL with count {}", op.node, count));
    op.threads = threads == 0 ? 1 : threads;
    for (std::size_t i = 0; i < count; ++i) {
      const sg_access& a = accesses[i];
      op.accesses.push_back({require_name(a.buffer, "accesses[i].buffer"), a.offset, a.bytes, to_access(a.mode)});
    }
    d.ops.push_back(std::move(op));
  });
}

sg_status sg_step_desc_add_memset(sg_step_desc* desc, const char* buffer, size_t offset, size_t bytes,
                                  unsigned char value, const char* node) {
  return guarded("sg_step_desc_add_memset", [&] {
    auto& d = live(desc, "desc");
    OpDesc op;
    op.memset = true;
    std::string b = require_name(buffer, "buffer");
    op.node = node != nullptr && *node != '\0' ? std::string(node) : "memset " + b;
    op.value = value;
    op.accesses.push_back({std::move(b), offset, bytes, rt::Access::kWrite});
    d.ops.push_back(std::move(op));
  });
}

sg_status sg_step_desc_release(sg_step_desc* desc) {
  return guarded("sg_step_desc_release", [&] { take(desc, "desc").reset(); });
}

// --- stream launches, capture and graphs
sg_status sg_stream_launch(sg_stream* stream, const char* kernel, const char* node, const sg_buffer_access* accesses,
                           size_t count, size_t threads) {
  return guarded("sg_stream_launch", [&] {
    auto& s = live(stream, "stream");
    const std::string k = require_name(kernel, "kernel");
    const std::string n = node != nullptr && *node != '\0' ? std::string(node) : k;
    if (count > 0 && accesses == nullptr)
      throw InvalidArgument(fmt::format("launch '{}': accesses is NULL with count {}", n, count));
    const KernelEntry entry = find_kernel(k, fmt::format("launch '{}'", n));
    std::vector<rt::BufferAccess> declared_accesses;
    std::vector<void*> bases;
    declared_accesses.reserve(count);
    bases.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
      const sg_buffer_access& a = accesses[i];
      const rt::Buffer& b = live(a.buffer, "accesses[i].buffer").buffer;
      const std::size_t size = b.size();
      const std::size_t bytes = a.bytes == 0 && a.offset < size ? size - a.offset : a.bytes;
      if (a.offset >= size || bytes > size - a.offset)
        throw InvalidArgument(fmt::format("launch '{}': access {} covers bytes [{}, {}) of a buffer of {} bytes", n, i,
                                          a.offset, a.offset + bytes, size));
      declared_accesses.push_back(declared(b, a.offset, bytes, to_access(a.mode)));
      bases.push_back(b.data());
    }
    launch_c_kernel(s.stream, n, entry, threads == 0 ? 1 : threads, std::move(declared_accesses), std::move(bases));
  });
}

namespace {
rt::CaptureMode to_capture_mode(sg_capture_mode m) {
  switch (m) {
    case SG_CAPTURE_GLOBAL:
      return rt::CaptureMode::kGlobal;
    case SG_CAPTURE_THREAD_LOCAL:
      return rt::CaptureMode::kThreadLocal;
    case SG_CAPTURE_RELAXED:
      return rt::CaptureMode::kRelaxed;
    default:  // the range enumerators, or any other int a C caller passed
      break;
  }
  throw InvalidArgument(fmt::format("mode {} is not an sg_capture_mode", static_cast<int>(m)));
}
static_assert(v(rt::CaptureStatus::kNone) == SG_CAPTURE_NONE && v(rt::CaptureStatus::kActive) == SG_CAPTURE_ACTIVE &&
              v(rt::CaptureStatus::kInvalidated) == SG_CAPTURE_INVALIDATED);
}  // namespace

sg_status sg_stream_begin_capture(sg_stream* stream, sg_capture_mode mode) {
  return guarded("sg_stream_begin_capture",
                 [&] { live(stream, "stream").stream.begin_capture(to_capture_mode(mode)); });
}

sg_status sg_stream_end_capture(sg_stream* stream, sg_graph** out) {
  return guarded("sg_stream_end_capture", [&] {
    auto& s = live(stream, "stream");
    require_out(out, "out");
    auto h = std::make_unique<sg_graph>();
    h->graph = s.stream.end_capture();
    *out = publish(std::move(h));
  });
}

sg_status sg_stream_capture_status(const sg_stream* stream, sg_capture_status* out) {
  return guarded("sg_stream_capture_status", [&] {
    const auto& s = live(stream, "stream");
    require_out(out, "out");
    *out = static_cast<sg_capture_status>(v(s.stream.capture_status()));
  });
}

sg_status sg_graph_node_count(const sg_graph* graph, size_t* out) {
  return guarded("sg_graph_node_count", [&] {
    const auto& g = live(graph, "graph");
    require_out(out, "out");
    *out = g.graph.node_count();
  });
}

sg_status sg_graph_instantiate(const sg_graph* graph, sg_graph_exec** out) {
  return guarded("sg_graph_instantiate", [&] {
    const auto& g = live(graph, "graph");
    require_out(out, "out");
    auto h = std::make_unique<sg_graph_exec>();
    h->exec = g.graph.instantiate();
    *out = publish(std::move(h));
  });
}

sg_status sg_graph_release(sg_graph* graph) {
  return guarded("sg_graph_release", [&] { take(graph, "graph").reset(); });
}

sg_status sg_graph_exec_launch(const sg_graph_exec* exec, sg_stream* stream) {
  return guarded("sg_graph_exec_launch", [&] {
    const auto& x = live(exec, "exec");
    x.exec.launch(live(stream, "stream").stream);
  });
}

sg_status sg_graph_exec_node_count(const sg_graph_exec* exec, size_t* out) {
  return guarded("sg_graph_exec_node_count", [&] {
    const auto& x = live(exec, "exec");
    require_out(out, "out");
    *out = x.exec.node_count();
  });
}

sg_status sg_graph_exec_release(sg_graph_exec* exec) {
  return guarded("sg_graph_exec_release", [&] { take(exec, "exec").reset(); });
}

// --- executor
sg_status sg_executor_options_init(sg_executor_options* options) {
  return guarded("sg_executor_options_init", [&] {
    require_out(options, "options");
    *options = sg_executor_options{};
    options->device = 0;
    options->warmup = 3;
    options->max_in_flight = 2;
    options->launch_ahead = 2;
    options->mode = SG_MODE_GRAPH;
    options->on_busy = SG_ON_BUSY_BLOCK;
    options->deadline_ms = 0;
    options->on_error = nullptr;
    options->on_error_user_data = nullptr;
  });
}

sg_status sg_executor_create(sg_backend* backend, const sg_step_desc* desc, const sg_executor_options* options,
                             sg_executor** out) {
  return guarded("sg_executor_create", [&] {
    auto& b = live(backend, "backend");
    const auto& d = live(desc, "desc");
    require_out(out, "out");
    sg_executor_options o;
    if (options != nullptr) {
      o = *options;
    } else {
      (void)sg_executor_options_init(&o);
    }
    if (o.mode != SG_MODE_GRAPH && o.mode != SG_MODE_EAGER)
      throw InvalidArgument(fmt::format("options->mode {} is not an sg_execution_mode", static_cast<int>(o.mode)));
    if (o.warmup < 0 || o.max_in_flight < 1 || o.launch_ahead < 1)
      throw InvalidArgument(
          fmt::format("options: warmup {} (give >= 0), max_in_flight {} and launch_ahead {} (give "
                      ">= 1)",
                      o.warmup, o.max_in_flight, o.launch_ahead));
    auto ops = std::make_shared<const std::vector<ResolvedOp>>(resolve_step(d));

    rt::ExecutorOptions eo;
    eo.backend_instance = b.backend;
    eo.device = o.device;
    eo.warmup = o.warmup;
    eo.max_in_flight = o.max_in_flight;
    eo.launch_ahead = o.launch_ahead;
    eo.mode = o.mode == SG_MODE_EAGER ? rt::ExecutionMode::kEager : rt::ExecutionMode::kGraph;
    eo.on_busy = o.on_busy == SG_ON_BUSY_FAIL ? rt::OnBusy::kThrow : rt::OnBusy::kBlock;
    eo.deadline = std::chrono::milliseconds(o.deadline_ms);
    if (o.on_error != nullptr) {
      eo.on_error = [cb = o.on_error, user = o.on_error_user_data](const rt::StepError& e) {
        const sg_step_error ce = to_c(e);
        const CallScope scope(CallContext::kErrorCallback);  // Note [Calls from kernels and callbacks]
        cb(&ce, user);
      };
    }
    auto step = [ops](rt::StepContext& ctx) {
      for (const ResolvedOp& op : *ops) enqueue(ctx, op);
    };
    auto h = std::make_unique<sg_executor>();
    h->executor = std::make_unique<rt::StepExecutor>(d.spec, std::move(step), std::move(eo));
    *out = publish(std::move(h));
  });
}

sg_status sg_executor_prepare(sg_executor* executor) {
  return guarded("sg_executor_prepare", [&] { running(executor, "executor").prepare(); });
}

sg_status sg_executor_acquire_inputs(sg_executor* executor, sg_inputs** out) {
  return guarded("sg_executor_acquire_inputs", [&] {
    auto& e = running(executor, "executor");
    require_out(out, "out");
    auto h = std::make_unique<sg_inputs>();
    h->slot = e.acquire_inputs();
    *out = publish(std::move(h));
  });
}

sg_status sg_inputs_ptr(const sg_inputs* inputs, const char* name, void** ptr, size_t* bytes) {
  return guarded("sg_inputs_ptr", [&] {
    const auto& s = live(inputs, "inputs");
    const std::string n = require_name(name, "name");
    require_out(ptr, "ptr");
    const rt::Buffer& b = s.slot.input(n);
    *ptr = b.host_data();
    if (bytes != nullptr) *bytes = b.size();
  });
}

sg_status sg_inputs_release(sg_inputs* inputs) {
  return guarded("sg_inputs_release", [&] { take(inputs, "inputs").reset(); });
}

sg_status sg_executor_replay(sg_executor* executor, sg_inputs* inputs, sg_replay** out) {
  return guarded("sg_executor_replay", [&] {
    rt::InputSlot slot =
        std::move(take(inputs, "inputs")
                      ->slot);  // consumed whatever happens next (the slot goes back if the replay does not start)
    auto& e = running(executor, "executor");
    require_out(out, "out");
    auto h = std::make_unique<sg_replay>();
    h->handle = e.replay(std::move(slot));
    *out = publish(std::move(h));
  });
}

sg_status sg_executor_synchronize(sg_executor* executor) {
  return guarded("sg_executor_synchronize", [&] { running(executor, "executor").synchronize(); });
}

sg_status sg_executor_set_learning_rate(sg_executor* executor, float learning_rate) {
  return guarded("sg_executor_set_learning_rate",
                 [&] { running(executor, "executor").set_learning_rate(learning_rate); });
}

sg_status sg_executor_write_state(sg_executor* executor, const char* name, const void* data, size_t bytes) {
  return guarded("sg_executor_write_state", [&] {
    auto& e = running(executor, "executor");
    const std::string n = require_name(name, "name");
    if (data == nullptr) throw InvalidArgument("data is NULL; pass the bytes to write");
    e.write_state(n, data, bytes);
  });
}

sg_status sg_executor_read_state(sg_executor* executor, const char* name, void* data, size_t bytes) {
  return guarded("sg_executor_read_state", [&] {
    auto& e = running(executor, "executor");
    const std::string n = require_name(name, "name");
    if (data == nullptr) throw InvalidArgument("data is NULL; pass where to read into");
    e.read_state(n, data, bytes);
  });
}

sg_status sg_executor_get_state(const sg_executor* executor, sg_executor_state* out) {
  return guarded("sg_executor_get_state", [&] {
    const auto& h = live(executor, "executor");
    require_out(out, "out");
    *out = h.executor ? to_c(h.executor->state()) : SG_EXECUTOR_CLOSED;
  });
}

sg_status sg_executor_failure(const sg_executor* executor, int* failed, sg_step_error* error) {
  return guarded("sg_executor_failure", [&] {
    const auto& h = live(executor, "executor");
    require_out(failed, "failed");
    require_out(error, "error");
    t_failure = h.executor ? h.executor->failure() : std::nullopt;
    *failed = t_failure ? 1 : 0;
    *error = t_failure ? to_c(*t_failure) : sg_step_error{-1, nullptr, SG_ERROR_DEVICE_FAULT, ""};
  });
}

sg_status sg_executor_close(sg_executor* executor) {
  return guarded("sg_executor_close", [&] { running(executor, "executor").close(); });
}

sg_status sg_executor_release(sg_executor* executor) {
  return guarded("sg_executor_release", [&] {
    auto owned = take(executor, "executor");
    owned->executor.reset();  // closes; may throw only what close() throws, after which the handle is gone
  });
}

// --- replay
sg_status sg_replay_step(const sg_replay* replay, int64_t* out) {
  return guarded("sg_replay_step", [&] {
    const auto& r = live(replay, "replay");
    require_out(out, "out");
    *out = r.handle.step();
  });
}

sg_status sg_replay_status_get(const sg_replay* replay, sg_replay_status* out) {
  return guarded("sg_replay_status_get", [&] {
    const auto& r = live(replay, "replay");
    require_out(out, "out");
    *out = to_c(r.handle.status());
  });
}

sg_status sg_replay_poll(const sg_replay* replay, int* done) {
  return guarded("sg_replay_poll", [&] {
    const auto& r = live(replay, "replay");
    require_out(done, "done");
    *done = r.handle.poll() ? 1 : 0;
  });
}

sg_status sg_replay_wait(sg_replay* replay, int64_t timeout_ms, sg_replay_status* out) {
  return guarded("sg_replay_wait", [&] {
    auto& r = live(replay, "replay");
    std::optional<rt::ReplayStatus> s;
    if (timeout_ms < 0) {
      s = r.handle.wait();
    } else {
      s = r.handle.wait_for(std::chrono::milliseconds(timeout_ms));
    }
    if (out != nullptr) *out = to_c(s ? *s : r.handle.status());
    if (!s)
      throw WaitTimeout(
          fmt::format("replay of step {} not finished after {} ms; wait again, or poll", r.handle.step(), timeout_ms));
    if (*s == rt::ReplayStatus::kDone) return;
    const auto err = r.handle.error();
    const std::string why = fmt::format(
        "replay of step {} ended {}{}{}: {}", r.handle.step(), rt::to_string(*s), err && err->node ? " at node " : "",
        err && err->node ? *err->node : std::string(), err ? err->message : std::string("no error reported"));
    if (*s == rt::ReplayStatus::kFailed) {
      if (err && err->kind == rt::StepErrorKind::kTimeout) throw WaitTimeout(why);
      throw DeviceFault(why);
    }
    throw InvalidState(why);
  });
}

sg_status sg_replay_error(sg_replay* replay, int* has_error, sg_step_error* error) {
  return guarded("sg_replay_error", [&] {
    auto& r = live(replay, "replay");
    require_out(has_error, "has_error");
    require_out(error, "error");
    r.error = r.handle.error();
    *has_error = r.error ? 1 : 0;
    *error = r.error ? to_c(*r.error) : sg_step_error{-1, nullptr, SG_ERROR_DEVICE_FAULT, ""};
  });
}

sg_status sg_replay_output(const sg_replay* replay, const char* name, const void** ptr, size_t* bytes) {
  return guarded("sg_replay_output", [&] {
    const auto& r = live(replay, "replay");
    const std::string n = require_name(name, "name");
    require_out(ptr, "ptr");
    const rt::Buffer& b = r.handle.output(n);
    *ptr = b.host_data();
    if (bytes != nullptr) *bytes = b.size();
  });
}

sg_status sg_replay_release(sg_replay* replay) {
  return guarded("sg_replay_release", [&] {
    auto owned = take(replay, "replay");
    owned->handle.release();
  });
}

}  // extern "C"
