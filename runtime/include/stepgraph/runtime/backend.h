// stepgraph/runtime/backend.h — the backend interface: devices, memory,
// streams, events, annotated launches, stream capture, graphs.
//
// Two implementations stand behind it: `cuda` (the CUDA runtime) and `host`
// (a CPU executor with CUDA's semantics; DESIGN.md section 2). Code above
// this header never knows which one runs it.
//
// Note [Handles]
// Every native object is owned by one move-only type: Buffer, Stream, Event,
// Graph, GraphExec. StreamRef is the non-owning view of a stream (Stream is a
// StreamRef that also owns). Each handle keeps its Backend alive, so a
// backend is destroyed only after the last handle made from it.
//
// Thread-safety (whole header): a Backend and its handles may be used from
// several threads, as CUDA streams may; two threads enqueueing on one stream
// at once get some interleaving of their operations, as with CUDA. A handle
// object itself (its move/destroy) is not synchronised.
//
// Capture: each call says whether it may be made during stream capture.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/buffer.h>
#include <stepgraph/runtime/condition.h>
#include <stepgraph/runtime/types.h>

namespace stepgraph::runtime {

class Backend;
class Event;
class Graph;
class GraphExec;

namespace detail {
class BackendImpl;
class StreamImpl;
class EventImpl;
class GraphImpl;
class GraphExecImpl;
}  // namespace detail

/// A graph could not be instantiated; `node()` names the failing node.
class GraphInstantiateError : public InvalidState {
 public:
  GraphInstantiateError(const std::string& what, std::string node) : InvalidState(what), node_(std::move(node)) {}
  [[nodiscard]] const std::string& node() const noexcept { return node_; }

 private:
  std::string node_;
};

/// Something was put into the body of a conditional node that CUDA does not
/// allow there: a host function, an event record or wait, a collective, or
/// a launched executable that itself holds conditional nodes (CUDA
/// Programming Guide, "Conditional Graph Nodes": bodies may hold kernel,
/// memcpy, memset, empty, child graph and conditional nodes only). Thrown by
/// both backends, where the operation is made. `node()` names it.
class ConditionalBodyError : public InvalidArgument {
 public:
  ConditionalBodyError(const std::string& what, std::string node) : InvalidArgument(what), node_(std::move(node)) {}
  [[nodiscard]] const std::string& node() const noexcept { return node_; }

 private:
  std::string node_;
};

/// A kernel: its default name, its host implementation (host backend) and
/// the address of its `__global__` function (cuda backend; set from a .cu
/// file, null in a build without CUDA). Arguments are passed by value.
template <class... Args>
struct Kernel {
  const char* name = "kernel";
  void (*host)(Args...) = nullptr;
  const void* device = nullptr;
};

/// What every launch declares: its node name, its dimensions, and the
/// (buffer, byte range, access) list it touches. The backends check the list
/// (bounds, device ownership, registration) and graph introspection, placement
/// and the host backend's memory isolation are built on it.
struct LaunchSpec {
  std::string name;  // empty: the kernel's default name
  LaunchDims dims;
  std::vector<BufferAccess> accesses;
  int priority = 0;  // larger runs first among ready work (cudaLaunchAttributePriority)
};

/// The type-erased form of a launch, as the backends receive it.
struct KernelParams {
  std::string name;
  LaunchDims dims;
  std::vector<BufferAccess> accesses;
  int priority = 0;
  std::function<void()> host;         // host backend: runs the kernel on its by-value arguments
  const void* device_fn = nullptr;    // cuda backend
  std::shared_ptr<void> arg_storage;  // the arguments, by value
  std::vector<void*> args;            // one pointer per parameter, into arg_storage
};

/// A collective operation as a backend enqueues it. The collectives module
/// builds these (users call a communicator, collectives/communicator.h).
/// Ownership: the stream (or the captured graph) keeps the call, its
/// closures and the buffers named in `accesses` alive until it has run.
struct CollectiveCall {
  std::string name;  // node name; empty: "<op> c<communicator> r<rank>"
  CollectiveInfo info;
  std::size_t bytes = 0;               // bytes this rank contributes (introspection's NodeInfo::bytes)
  std::vector<BufferAccess> accesses;  // checked like a launch's (device, bounds)
  /// Host backend. Called on a worker of the stream's device when the call's
  /// dependencies are done (eagerly, or at each replay of a graph holding
  /// it). It must return at once: the operation runs on a thread of the
  /// communicator, never on a device worker, and calls `done` exactly once,
  /// from any thread, when it has finished (also when it failed: the
  /// communicator reports failures itself, through its async error).
  std::function<void(std::function<void()> done)> host_start;
  /// Cuda backend: enqueues the operation (NCCL) on the native stream
  /// (cudaStream_t); captured like any stream work.
  std::function<void(void* native_stream)> device_enqueue;
};

struct StreamOptions {
  int priority = 0;  // larger is higher priority, as in CUDA (which uses negative-is-higher)
};

struct InstantiateOptions {
  bool upload = true;             // cudaGraphInstantiateFlagUpload (upload on the stream given)
  bool use_node_priority = true;  // cudaGraphInstantiateFlagUseNodePriority
};

/// Non-owning view of a stream. Cheap to copy; valid while the owning
/// Stream lives.
class StreamRef {
 public:
  StreamRef() = default;
  explicit StreamRef(detail::StreamImpl* impl) : impl_(impl) {}

  [[nodiscard]] int device() const;
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }
  [[nodiscard]] detail::StreamImpl* impl() const noexcept { return impl_; }

  // --- work. Each may be called during capture (it is recorded, not run).
  void launch_kernel(KernelParams params) const;
  /// Copies src.bytes bytes from src to dst (each a buffer slice); the kind
  /// (H2D, D2H, D2D, peer) follows from where the two buffers live.
  void copy(const BufferSlice& dst, const BufferSlice& src, std::string name = {}) const;
  void memset(const BufferSlice& dst, unsigned char value, std::string name = {}) const;
  /// A host function node (cudaLaunchHostFunc). It must not call the backend.
  void host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses = {}) const;
  /// A collective operation (CollectiveCall). Captured, it becomes one node
  /// of kind kCollective (host) or the nodes NCCL adds, annotated kCollective
  /// (cuda); every replay runs it.
  void collective(CollectiveCall call) const;
  void record(Event& event) const;
  /// Makes later work on this stream wait for the event's latest record.
  void wait(const Event& event) const;

  // --- synchronisation. Illegal during capture of this stream: it throws
  // and invalidates the capture (cudaErrorStreamCaptureUnsupported).
  void synchronize() const;
  /// True if all work enqueued so far has completed.
  [[nodiscard]] bool query() const;

  // --- capture
  void begin_capture(CaptureMode mode = CaptureMode::kThreadLocal) const;
  /// Ends the capture begun on this stream and returns its graph. Throws
  /// InvalidState (and leaves the stream usable, out of capture) if the
  /// capture was invalidated or a forked stream was not joined back.
  [[nodiscard]] Graph end_capture() const;
  [[nodiscard]] CaptureStatus capture_status() const;

  // --- conditional nodes (Note [Conditional nodes], condition.h). Capture
  // only: each throws InvalidState on a stream that is not capturing (see
  // run_as_graph for code that must also run eagerly).
  /// A new condition of the graph this stream captures into, reset to
  /// `default_value` at the start of every launch
  /// (cudaGraphConditionalHandleCreate with cudaGraphCondAssignDefault).
  [[nodiscard]] ConditionHandle create_condition(unsigned default_value = 0) const;
  /// Adds an IF node after this stream's captured work: at run time its
  /// body runs once if `condition` is non-zero when the node is reached.
  /// `body` is called once, now, with a stream of its own that captures
  /// into the node's body graph (cudaStreamBeginCaptureToGraph); later work
  /// on this stream runs after the node. A body that holds what CUDA does
  /// not allow throws ConditionalBodyError (the capture goes on without the
  /// node); an exception from `body` propagates, with the same effect.
  void capture_if(ConditionHandle condition, const std::function<void(StreamRef body)>& body,
                  std::string name = {}) const;
  /// Adds a WHILE node: the body runs as long as `condition` is non-zero,
  /// checked when the node is reached and after each run of the body (which
  /// normally sets it). An empty body is InvalidArgument: it could only
  /// never run or never end.
  void capture_while(ConditionHandle condition, const std::function<void(StreamRef body)>& body,
                     std::string name = {}) const;

  /// The native stream (cudaStream_t on cuda; null on host), for libraries
  /// that enqueue on it themselves (NCCL, a framework). Work enqueued that
  /// way is invisible to graph introspection unless annotated.
  [[nodiscard]] void* native_handle() const;

  friend bool operator==(const StreamRef& a, const StreamRef& b) { return a.impl_ == b.impl_; }

 protected:
  detail::StreamImpl* impl_ = nullptr;
};

/// An owned, non-blocking stream (cudaStreamNonBlocking), made by
/// Backend::create_stream. Destroying it waits for nothing: as with
/// cudaStreamDestroy, enqueued work still runs to completion.
class Stream : public StreamRef {
 public:
  Stream() = default;
  Stream(std::unique_ptr<detail::StreamImpl> impl, std::shared_ptr<detail::BackendImpl> backend);
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  [[nodiscard]] StreamRef ref() const noexcept { return StreamRef(impl_); }

 private:
  std::shared_ptr<detail::BackendImpl> backend_;
};

/// Runs `fn` on `stream` as graph work. During a capture of `stream` it is
/// just `fn(stream)`; otherwise `fn` is captured into a graph of its own
/// (thread-local mode), instantiated without upload and launched on
/// `stream`, and the graph is released when that launch has finished. For
/// step code with conditional nodes that also runs eagerly (a warm-up, an
/// eager reference run): it makes no host synchronisation. May not be
/// called on a stream that takes part in another stream's capture.
void run_as_graph(StreamRef stream, const std::function<void(StreamRef)>& fn);

/// Launches `kernel` on `stream` with its arguments taken by value now.
template <class... Args, class... Given>
void launch(StreamRef stream, const Kernel<Args...>& kernel, LaunchSpec spec, Given&&... given) {
  static_assert(sizeof...(Args) == sizeof...(Given), "launch: argument count differs from the kernel's");
  using Tuple = std::tuple<std::decay_t<Args>...>;
  auto storage = std::make_shared<Tuple>(static_cast<std::decay_t<Args>>(std::forward<Given>(given))...);
  KernelParams p;
  p.name = spec.name.empty() ? std::string(kernel.name) : std::move(spec.name);
  p.dims = spec.dims;
  p.accesses = std::move(spec.accesses);
  p.priority = spec.priority;
  p.args = std::apply([](auto&... a) { return std::vector<void*>{static_cast<void*>(&a)...}; }, *storage);
  if (kernel.host != nullptr) {
    auto fn = kernel.host;
    p.host = [storage, fn] { std::apply(fn, *storage); };
  }
  p.device_fn = kernel.device;
  p.arg_storage = std::move(storage);
  stream.launch_kernel(std::move(p));
}

/// An event: record on a stream, wait on it from any stream (also of
/// another device), query, synchronize. A wait binds to the latest record
/// made before the wait call. An event never recorded counts as complete.
class Event {
 public:
  Event();
  Event(std::unique_ptr<detail::EventImpl> impl, std::shared_ptr<detail::BackendImpl> backend);
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  [[nodiscard]] int device() const;
  /// True if the latest record has completed. Illegal (throws, invalidates)
  /// on an event recorded inside a capture in progress.
  [[nodiscard]] bool query() const;
  void synchronize() const;
  /// Like synchronize(), but gives up after `timeout` and returns false.
  [[nodiscard]] bool wait_for(std::chrono::nanoseconds timeout) const;
  /// Milliseconds between two completed records (cudaEventElapsedTime).
  [[nodiscard]] static float elapsed_ms(const Event& start, const Event& end);
  [[nodiscard]] detail::EventImpl* impl() const noexcept { return impl_.get(); }
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }

 private:
  std::unique_ptr<detail::EventImpl> impl_;
  std::shared_ptr<detail::BackendImpl> backend_;
};

/// A captured graph (the template; cudaGraph_t). Keeps every buffer its
/// nodes declared alive (Note [Buffer lifetime]).
class Graph {
 public:
  Graph();
  explicit Graph(std::unique_ptr<detail::GraphImpl> impl);
  Graph(Graph&& other) noexcept;
  Graph& operator=(Graph&& other) noexcept;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph();

  /// Nodes (with names, kinds, devices, declared accesses) and edges.
  [[nodiscard]] GraphInfo info() const;
  [[nodiscard]] std::size_t node_count() const;
  /// Graphviz DOT text of info().
  [[nodiscard]] std::string to_dot() const;
  /// Instantiates an executable graph. Throws GraphInstantiateError naming
  /// the failing node. Not allowed during a capture of the calling thread.
  [[nodiscard]] GraphExec instantiate(InstantiateOptions options = {}) const;
  [[nodiscard]] detail::GraphImpl* impl() const noexcept { return impl_.get(); }
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }

 private:
  std::unique_ptr<detail::GraphImpl> impl_;
};

/// An executable graph (cudaGraphExec_t), obtainable only by instantiating
/// a Graph. Launches of one GraphExec run one after another, whatever
/// streams they are launched on (cudaGraphLaunch).
class GraphExec {
 public:
  GraphExec();
  explicit GraphExec(std::unique_ptr<detail::GraphExecImpl> impl);
  GraphExec(GraphExec&& other) noexcept;
  GraphExec& operator=(GraphExec&& other) noexcept;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec();

  /// Enqueues one run of the graph on `stream` and returns at once. May be
  /// called during capture of `stream` (it becomes a child-graph node).
  void launch(StreamRef stream) const;
  /// Takes the parameters of `graph` if its topology is compatible under
  /// CUDA's rules (cudaGraphExecUpdate): same node kinds in the same order,
  /// same edges, same memcpy directions and devices. On failure the exec is
  /// left as it was.
  [[nodiscard]] UpdateInfo update(const Graph& graph);
  [[nodiscard]] std::size_t node_count() const;
  [[nodiscard]] detail::GraphExecImpl* impl() const noexcept { return impl_.get(); }
  [[nodiscard]] bool valid() const noexcept { return impl_ != nullptr; }

 private:
  std::unique_ptr<detail::GraphExecImpl> impl_;
};

/// Begins a capture on construction; ends it (discarding the graph) on
/// destruction unless end() was called, so an exception that unwinds through
/// a capture leaves the stream usable. Cannot be copied or moved.
class CaptureSession {
 public:
  explicit CaptureSession(StreamRef stream, CaptureMode mode = CaptureMode::kThreadLocal);
  CaptureSession(const CaptureSession&) = delete;
  CaptureSession& operator=(const CaptureSession&) = delete;
  CaptureSession(CaptureSession&&) = delete;
  CaptureSession& operator=(CaptureSession&&) = delete;
  ~CaptureSession();
  [[nodiscard]] Graph end();

 private:
  StreamRef stream_;
  bool active_ = true;
};

/// Sets the calling thread's capture interaction mode for its lifetime
/// (cudaThreadExchangeStreamCaptureMode), e.g. kRelaxed around a lazily
/// initialising library call. Cannot be copied or moved.
class CaptureModeGuard {
 public:
  CaptureModeGuard(const Backend& backend, CaptureMode mode);
  CaptureModeGuard(const CaptureModeGuard&) = delete;
  CaptureModeGuard& operator=(const CaptureModeGuard&) = delete;
  ~CaptureModeGuard();

 private:
  const Backend* backend_;
  CaptureMode previous_;
};

struct BackendOptions {
  // host backend
  int host_devices = 1;        // host devices, spread over the NUMA nodes
  int workers_per_device = 2;  // worker threads per host device
  /// Seed that permutes the order in which ready work is picked, so that a
  /// missing dependency shows up as a wrong result. 0: first-in first-out.
  std::uint64_t shuffle_seed = 0;
  bool bind_workers = true;  // bind workers to their NUMA node's cpus
};

/// A backend: its devices, their memory, streams and events. Made by
/// Backend::create; shared by everything made from it.
class Backend {
 public:
  /// "host", "cuda" or "auto" (cuda when a device is present, else host).
  /// An unknown name is InvalidArgument; cuda without a device is
  /// InvalidState with the reason.
  [[nodiscard]] static std::shared_ptr<Backend> create(std::string_view name, BackendOptions options = {});
  [[nodiscard]] static std::shared_ptr<Backend> create(BackendKind kind, BackendOptions options = {});
  /// Whether the cuda backend can run here; if not, `reason` says why.
  [[nodiscard]] static bool cuda_available(std::string* reason = nullptr);
  /// Whether this build has the cuda backend at all.
  [[nodiscard]] static bool cuda_compiled() noexcept;

  explicit Backend(std::shared_ptr<detail::BackendImpl> impl);
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  ~Backend();

  [[nodiscard]] BackendKind kind() const;
  [[nodiscard]] std::string_view name() const { return to_string(kind()); }
  [[nodiscard]] int device_count() const;
  [[nodiscard]] DeviceInfo device(int index) const;

  // --- memory. Allocation is not allowed during a capture that the calling
  // thread's mode prohibits (it throws and invalidates that capture).
  /// Device memory of `bytes` bytes on `device`. Zero bytes is InvalidArgument.
  [[nodiscard]] Buffer allocate(int device, std::size_t bytes);
  /// Page-locked host memory on `numa_node` (-1: the machine's first),
  /// registered and mapped into every device's address space.
  [[nodiscard]] Buffer allocate_pinned(std::size_t bytes, int numa_node = -1);
  /// Registers caller-owned host memory (cudaHostRegister, mapped and
  /// portable). The caller keeps ownership of the memory and must keep it
  /// alive while the Buffer (or a graph using it) lives.
  [[nodiscard]] Buffer register_host(void* ptr, std::size_t bytes);
  /// Lets kernels on `device` touch `peer`'s memory (cudaDeviceEnablePeerAccess).
  void enable_peer_access(int device, int peer);
  [[nodiscard]] bool can_access_peer(int device, int peer) const;

  [[nodiscard]] Stream create_stream(int device, StreamOptions options = {});
  [[nodiscard]] Event create_event(int device);
  /// The legacy default stream of `device`. Capture on it is refused.
  [[nodiscard]] StreamRef legacy_default_stream(int device);

  /// Waits for all work on `device`; throws DeviceFault if it faulted.
  void synchronize_device(int device);
  /// The sticky fault of `device`, if any.
  [[nodiscard]] std::optional<std::string> device_fault(int device) const;
  /// Device memory in use on `device`, in bytes (cuda: cudaMemGetInfo's
  /// total - free, every process's allocations); nullopt on the host
  /// backend or once the device faulted. Thread-safe; may be called during
  /// capture (cudaMemGetInfo enqueues nothing).
  [[nodiscard]] std::optional<std::uint64_t> memory_in_use(int device) const;

  CaptureMode exchange_thread_capture_mode(CaptureMode mode) const;

  /// The host waits made on this backend's streams, events and devices so
  /// far (SyncCounts). Thread-safe; may be called during capture.
  [[nodiscard]] SyncCounts sync_counts() const;

  [[nodiscard]] const std::shared_ptr<detail::BackendImpl>& impl() const noexcept { return impl_; }

 private:
  std::shared_ptr<detail::BackendImpl> impl_;
};

}  // namespace stepgraph::runtime
