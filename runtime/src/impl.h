// runtime/src/impl.h — the private interface each backend implements.
// Private to the runtime module: nothing outside runtime/src includes it.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <stepgraph/runtime/backend.h>

namespace stepgraph::runtime::detail {

class BackendImpl;

/// The memory behind a Buffer (Note [Buffer lifetime] in buffer.h). Not
/// virtual: `release` frees the memory the way its backend allocated it.
struct BufferImpl {
  std::uint64_t id = 0;
  MemoryKind kind = MemoryKind::kDevice;
  int device = -1;  // -1 for pinned host memory
  std::size_t size = 0;
  void* device_ptr = nullptr;  // what kernels receive
  void* host_ptr = nullptr;    // pinned memory only
  BackendImpl* backend = nullptr;
  std::shared_ptr<BackendImpl> keep_backend;  // the backend outlives its memory
  std::function<void()> release;
  bool view = false;  // a sub_buffer(): shares its parent's memory and registration

  BufferImpl() = default;
  BufferImpl(const BufferImpl&) = delete;
  BufferImpl& operator=(const BufferImpl&) = delete;
  ~BufferImpl();
};

class EventImpl {
 public:
  virtual ~EventImpl() = default;
  virtual int device() const = 0;
  virtual bool query() = 0;
  virtual void synchronize() = 0;
  virtual bool wait_for(std::chrono::nanoseconds timeout) = 0;
  virtual float elapsed_ms(const EventImpl& end) const = 0;
};

class GraphExecImpl;

class GraphImpl {
 public:
  virtual ~GraphImpl() = default;
  virtual GraphInfo info() const = 0;
  virtual std::unique_ptr<GraphExecImpl> instantiate(const InstantiateOptions& options) const = 0;
};

class StreamImpl;

class GraphExecImpl {
 public:
  virtual ~GraphExecImpl() = default;
  virtual void launch(StreamImpl& stream) = 0;
  virtual UpdateInfo update(const GraphImpl& graph) = 0;
  virtual std::size_t node_count() const = 0;
};

class StreamImpl {
 public:
  virtual ~StreamImpl() = default;
  virtual int device() const = 0;
  virtual void launch_kernel(KernelParams&& params) = 0;
  virtual void copy(const BufferSlice& dst, const BufferSlice& src, std::string name) = 0;
  virtual void memset(const BufferSlice& dst, unsigned char value, std::string name) = 0;
  virtual void host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) = 0;
  virtual void collective(CollectiveCall&& call) = 0;
  virtual void* native_handle() const { return nullptr; }
  virtual void record(EventImpl& event) = 0;
  virtual void wait(const EventImpl& event) = 0;
  virtual void synchronize() = 0;
  virtual bool query() = 0;
  virtual void begin_capture(CaptureMode mode) = 0;
  virtual std::unique_ptr<GraphImpl> end_capture() = 0;
  virtual CaptureStatus capture_status() const = 0;
  // Note [Conditional nodes] (condition.h)
  virtual ConditionHandle create_condition(unsigned default_value) = 0;
  virtual void capture_conditional(ConditionalKind kind, ConditionHandle condition,
                                   const std::function<void(StreamRef)>& body, std::string name) = 0;
};

/// The counters behind Backend::sync_counts (SyncCounts), bumped by each
/// backend where it waits. Relaxed atomics: counts, not synchronisation.
struct SyncCounters {
  std::atomic<std::uint64_t> stream_synchronize{0};
  std::atomic<std::uint64_t> device_synchronize{0};
  std::atomic<std::uint64_t> event_synchronize{0};
  std::atomic<std::uint64_t> event_wait_for{0};
  std::atomic<std::uint64_t> stream_query{0};
  std::atomic<std::uint64_t> event_query{0};
  std::atomic<std::uint64_t> events_waited_on{0};

  static void bump(std::atomic<std::uint64_t>& c) noexcept { c.fetch_add(1, std::memory_order_relaxed); }
  /// Counts `event` (its `waited` flag) among the events waited on, once.
  void waited_on(std::atomic<bool>& waited) noexcept {
    if (!waited.load(std::memory_order_relaxed) && !waited.exchange(true, std::memory_order_relaxed))
      bump(events_waited_on);
  }
  [[nodiscard]] SyncCounts snapshot() const noexcept;
};

class BackendImpl : public std::enable_shared_from_this<BackendImpl> {
 public:
  virtual ~BackendImpl() = default;
  virtual BackendKind kind() const = 0;
  virtual int device_count() const = 0;
  virtual DeviceInfo device(int index) const = 0;
  virtual std::shared_ptr<BufferImpl> allocate(int device, std::size_t bytes) = 0;
  virtual std::shared_ptr<BufferImpl> allocate_pinned(std::size_t bytes, int numa_node) = 0;
  virtual std::shared_ptr<BufferImpl> register_host(void* ptr, std::size_t bytes) = 0;
  virtual void enable_peer_access(int device, int peer) = 0;
  virtual std::unique_ptr<StreamImpl> create_stream(int device, const StreamOptions& options) = 0;
  virtual std::unique_ptr<EventImpl> create_event(int device) = 0;
  virtual StreamImpl* legacy_default_stream(int device) = 0;
  virtual void synchronize_device(int device) = 0;
  virtual std::optional<std::string> device_fault(int device) const = 0;
  /// Backend::memory_in_use: device memory in use; none by default (host).
  virtual std::optional<std::uint64_t> memory_in_use(int) const { return std::nullopt; }
  virtual CaptureMode exchange_thread_capture_mode(CaptureMode mode) = 0;

  // --- shared by both backends (impl.cpp)

  bool can_access_peer(int device, int peer) const;
  /// Validates a launch's declared accesses against `device` (bounds,
  /// registration, device ownership, peer access) and resolves host_range()
  /// accesses to their registered buffers. Throws InvalidArgument naming
  /// the launch.
  void resolve_accesses(int device, std::string_view what, std::vector<BufferAccess>& accesses) const;
  /// Validates a copy/memset operand.
  void check_slice(std::string_view what, const BufferSlice& slice) const;
  void check_device(int device, std::string_view what) const;
  /// Classifies a copy between two buffers.
  static CopyKind copy_kind(const BufferImpl& dst, const BufferImpl& src);
  /// copy_kind() of a Stream::copy, which refuses host to host
  /// (InvalidArgument naming `what`): CUDA does that copy synchronously, not
  /// as stream work.
  static CopyKind stream_copy_kind(std::string_view what, const BufferImpl& dst, const BufferImpl& src);

  SyncCounters& sync_counters() noexcept { return sync_counters_; }
  const SyncCounters& sync_counters() const noexcept { return sync_counters_; }

  /// Registered host ranges, so that host_range() accesses resolve.
  void add_host_range(const std::shared_ptr<BufferImpl>& buffer);
  void remove_host_range(const void* host_ptr);
  std::uint64_t next_buffer_id() { return next_buffer_id_.fetch_add(1) + 1; }

 protected:
  void set_peer_enabled(int device, int peer);

 private:
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, std::weak_ptr<BufferImpl>> host_ranges_;  // by host address
  std::vector<std::pair<int, int>> peers_;
  std::atomic<std::uint64_t> next_buffer_id_{0};
  SyncCounters sync_counters_;
};

/// CUDA's exec-update rules over two introspected graphs: same node count
/// and edges (else kTopologyChanged), same kinds position by position
/// (kNodeTypeChanged), same device per node and same memcpy direction and
/// devices (kParametersChanged). Used by the host backend, and by the cuda
/// backend to name the offending node when cudaGraphExecUpdate refuses.
UpdateInfo check_update_rules(const GraphInfo& current, const GraphInfo& next);

/// CUDA's restrictions on a conditional node's body (ConditionalBodyError),
/// checked over the body's introspection by both backends once the body is
/// captured: no host, event record or wait, or collective node anywhere in
/// it. `node` names the conditional node.
void check_conditional_body(const GraphInfo& body, std::string_view node);
/// The ConditionalBodyError for `what` (an operation refused on a body
/// stream, named `op`) inside the body of a conditional node.
[[noreturn]] void throw_conditional_body(std::string_view what, std::string_view op);

/// Access infos for introspection.
std::vector<AccessInfo> access_infos(const std::vector<BufferAccess>& accesses);

/// The cuda backend factory (cuda/backend.cpp); null when not compiled.
std::shared_ptr<BackendImpl> make_cuda_backend(const BackendOptions& options);
bool cuda_device_present(std::string* reason);
std::shared_ptr<BackendImpl> make_host_backend(const BackendOptions& options);

}  // namespace stepgraph::runtime::detail
