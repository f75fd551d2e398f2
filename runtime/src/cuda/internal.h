// runtime/src/cuda/internal.h — the cuda backend's classes (private to
// runtime/src/cuda). docs/runtime-cuda.md maps each call to CUDA.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../impl.h"
#include "cuda_compat.h"
#include "handles.h"

namespace stepgraph::runtime::cuda {

class CudaBackend;

/// The user data of a host function node (cudaLaunchHostFunc). An eager
/// launch owns its box and the trampoline hands it to the release thread
/// after the call (Note [Deferred release]: the closure's destructor may
/// drop the last reference to a Buffer, Event or GraphExec, whose release
/// calls CUDA, which a host function must not do); a captured one is owned
/// by the graph's KeepAlive, because every launch of every executable made
/// from the graph calls it again.
struct HostFnBox {
  std::function<void()> fn;
  std::string name;
  int device = 0;
  bool delete_after_call = false;
  /// Eager only: the buffers the call declared, alive until it has run (a
  /// captured box's buffers are in the graph's KeepAlive).
  std::vector<std::shared_ptr<const detail::BufferImpl>> buffers;
};

/// Everything a captured graph's nodes point at: the buffers they declared
/// and the host function boxes (Note [Buffer lifetime] in buffer.h; DESIGN
/// 1.2 "every buffer a graph references outlives that graph"). A Graph and
/// every GraphExec made from it hold a shared reference.
struct KeepAlive {
  std::vector<std::shared_ptr<const detail::BufferImpl>> buffers;
  std::vector<std::shared_ptr<HostFnBox>> host_fns;
  std::vector<std::shared_ptr<const KeepAlive>> children;  // executables launched inside the capture
};

/// What stepgraph knows about one captured node beyond CUDA's node type.
struct NodeMeta {
  std::uint64_t seq = 0;  // capture order
  std::string name;
  NodeKind kind = NodeKind::kOther;
  int device = 0;
  std::vector<AccessInfo> accesses;
  CopyKind copy_kind = CopyKind::kDeviceToDevice;
  int src_device = -1;
  int dst_device = -1;
  std::size_t bytes = 0;
  int priority = 0;
  std::optional<CollectiveInfo> collective;    // a collective's nodes (StreamRef::collective)
  std::optional<ConditionalInfo> conditional;  // a conditional node (StreamRef::capture_if / capture_while)
};

/// One capture sequence in progress (keyed by the id cudaStreamGetCaptureInfo
/// returns, unique for the process): the node↔name map and what to keep alive.
struct CaptureRecord {
  std::mutex mutex;
  unsigned long long id = 0;
  int device = 0;                 // the origin stream's device
  cudaStream_t origin = nullptr;  // the stream the capture began on
  CaptureMode mode = CaptureMode::kThreadLocal;
  std::thread::id owner;  // the thread that began it
  std::unordered_map<cudaGraphNode_t, NodeMeta> nodes;
  std::uint64_t next_seq = 0;
  std::shared_ptr<KeepAlive> keep = std::make_shared<KeepAlive>();
  std::unordered_map<unsigned long long, unsigned> conditions;  // made in this capture: handle -> default value
};

// ---------------------------------------------------------------- stream

class CudaStream final : public detail::StreamImpl {
 public:
  /// An owned non-blocking stream (cudaStreamCreateWithPriority).
  CudaStream(CudaBackend& backend, int device, int cuda_priority);
  /// The legacy default stream of `device` (not owned; capture refused).
  CudaStream(CudaBackend& backend, int device);
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream() override;

  int device() const override { return device_; }
  void launch_kernel(KernelParams&& params) override;
  void copy(const BufferSlice& dst, const BufferSlice& src, std::string name) override;
  void memset(const BufferSlice& dst, unsigned char value, std::string name) override;
  void host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) override;
  void collective(CollectiveCall&& call) override;
  void* native_handle() const override { return stream_; }
  void record(detail::EventImpl& event) override;
  void wait(const detail::EventImpl& event) override;
  void synchronize() override;
  bool query() override;
  void begin_capture(CaptureMode mode) override;
  std::unique_ptr<detail::GraphImpl> end_capture() override;
  CaptureStatus capture_status() const override;
  ConditionHandle create_condition(unsigned default_value) override;
  void capture_conditional(ConditionalKind kind, ConditionHandle condition, const std::function<void(StreamRef)>& body,
                           std::string name) override;

  /// Throws ConditionalBodyError if this is a conditional node's body
  /// stream, where `what` is not allowed.
  void refuse_in_body(std::string_view what, std::string_view op) const;
  [[nodiscard]] bool is_conditional_body() const noexcept { return !conditional_body_.empty(); }

  [[nodiscard]] cudaStream_t handle() const noexcept { return stream_; }
  [[nodiscard]] CudaBackend& backend() const noexcept { return *backend_; }

  /// The capture this stream takes part in, if any (origin or forked).
  struct CaptureState {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    unsigned long long id = 0;
  };
  [[nodiscard]] CaptureState capture_state() const;

  /// Called right after an operation was enqueued: if the stream is
  /// capturing, returns the capture's record and fills `nodes` with the
  /// capture's current dependencies, which are the nodes the operation just
  /// added (cudaStreamGetCaptureInfo, CUDA Runtime API "Stream Management");
  /// null when the stream is not capturing.
  [[nodiscard]] std::shared_ptr<CaptureRecord> captured_nodes(std::vector<cudaGraphNode_t>& nodes) const;
  /// Gives each node of `nodes` not yet known to `record` the annotation
  /// `meta`, and adds `keep` to what the capture keeps alive.
  static void annotate(CaptureRecord& record, const std::vector<cudaGraphNode_t>& nodes, const NodeMeta& meta,
                       KeepAlive keep);

  /// Serialises enqueue + annotate on this stream, so that the dependencies
  /// read after an operation are that operation's nodes.
  [[nodiscard]] std::unique_lock<std::mutex> lock_enqueue() { return std::unique_lock(enqueue_mutex_); }

 private:
  void check_usable(std::string_view call) const;

  CudaBackend* backend_;
  int device_;
  UniqueStream owned_;
  cudaStream_t stream_ = nullptr;
  bool legacy_ = false;
  std::mutex enqueue_mutex_;
  std::optional<unsigned long long> origin_capture_;  // the capture begun on this stream
  std::string conditional_body_;                      // a conditional node's body stream: the node's name
};

// ---------------------------------------------------------------- event

class CudaEvent final : public detail::EventImpl {
 public:
  CudaEvent(CudaBackend& backend, int device);
  int device() const override { return device_; }
  bool query() override;
  void synchronize() override;
  bool wait_for(std::chrono::nanoseconds timeout) override;
  float elapsed_ms(const detail::EventImpl& end) const override;
  [[nodiscard]] cudaEvent_t handle() const noexcept { return event_.get(); }

  /// Called by CudaStream::record after the record: `capture_id` is the
  /// capture the recording stream takes part in, 0 outside capture.
  void note_record(unsigned long long capture_id) noexcept {
    last_capture_.store(capture_id);
    recorded_.store(true);
  }
  [[nodiscard]] bool recorded() const noexcept { return recorded_.load(); }
  [[nodiscard]] unsigned long long last_capture() const noexcept { return last_capture_.load(); }

 private:
  /// Throws InvalidState (after invalidating that capture) if the latest
  /// record was made by a capture still in progress.
  void refuse_if_captured(std::string_view call) const;

  CudaBackend* backend_;
  int device_;
  UniqueEvent event_;
  std::atomic<unsigned long long> last_capture_{0};
  std::atomic<bool> recorded_{false};
  std::atomic<bool> waited_{false};  // SyncCounts::events_waited_on
};

// ---------------------------------------------------------------- graphs

class CudaGraph final : public detail::GraphImpl {
 public:
  CudaGraph(std::shared_ptr<CudaBackend> backend, int device, UniqueGraph graph,
            const std::shared_ptr<CaptureRecord>& record);
  GraphInfo info() const override { return info_; }
  std::unique_ptr<detail::GraphExecImpl> instantiate(const InstantiateOptions& options) const override;

  [[nodiscard]] cudaGraph_t handle() const noexcept { return graph_.get(); }
  [[nodiscard]] int device() const noexcept { return device_; }
  [[nodiscard]] const std::shared_ptr<const KeepAlive>& keep() const noexcept { return keep_; }
  /// Our index of a CUDA node of this graph, if it is one.
  [[nodiscard]] std::optional<std::size_t> index_of(cudaGraphNode_t node) const;
  /// The introspection of `graph` (a captured graph, or a conditional
  /// node's body), named from `record` (may be null), nodes in capture
  /// order; fills `index` (CUDA node -> our index) if given.
  [[nodiscard]] static GraphInfo describe(cudaGraph_t graph, int device, CaptureRecord* record,
                                          std::unordered_map<cudaGraphNode_t, std::size_t>* index);

 private:
  std::shared_ptr<CudaBackend> backend_;
  int device_;
  UniqueGraph graph_;
  GraphInfo info_;
  std::unordered_map<cudaGraphNode_t, std::size_t> index_;
  std::shared_ptr<const KeepAlive> keep_;
};

/// An executable graph. Launched into a capturing stream it adds a child
/// graph node made from `source_` (Note [A graph launched into a capture],
/// graph.cpp). Destroying it never waits for its launches: what they may
/// still use is handed to the release thread (Note [Deferred release]).
class CudaGraphExec final : public detail::GraphExecImpl {
 public:
  /// `source` is this executable's own copy of the graph it runs
  /// (cudaGraphClone), kept in step with update().
  CudaGraphExec(std::shared_ptr<CudaBackend> backend, int device, UniqueGraphExec exec, UniqueGraph source,
                GraphInfo info, std::shared_ptr<const KeepAlive> keep);
  CudaGraphExec(const CudaGraphExec&) = delete;
  CudaGraphExec& operator=(const CudaGraphExec&) = delete;
  ~CudaGraphExec() override;
  void launch(detail::StreamImpl& stream) override;
  UpdateInfo update(const detail::GraphImpl& graph) override;
  std::size_t node_count() const override;

 private:
  /// Drops the KeepAlives replaced by update() once no launch that may use
  /// them is in flight (all launch events complete).
  void prune_retired_locked();

  /// Adds this executable's graph as a child graph node of the capture
  /// `stream` takes part in, after the capture's current dependencies.
  void add_child_node(CudaStream& stream);

  std::shared_ptr<CudaBackend> backend_;
  int device_;
  UniqueGraphExec exec_;
  UniqueGraph source_;  // guarded by mutex_ (CUDA graph objects are not thread-safe)
  mutable std::mutex mutex_;
  GraphInfo info_;
  std::shared_ptr<const KeepAlive> keep_;
  std::vector<std::shared_ptr<const KeepAlive>> retired_;
  // One event per device recorded after each eager launch: launches of one
  // executable run one after another, so the latest record completing means
  // every earlier launch has completed (cudaGraphLaunch, CUDA Runtime API
  // "Graph Management").
  std::map<int, UniqueEvent> launch_events_;
};

// ---------------------------------------------------------------- backend

class CudaBackend final : public detail::BackendImpl {
 public:
  explicit CudaBackend(const BackendOptions& options);
  ~CudaBackend() override;

  BackendKind kind() const override { return BackendKind::kCuda; }
  int device_count() const override { return static_cast<int>(devices_.size()); }
  DeviceInfo device(int index) const override { return devices_.at(static_cast<std::size_t>(index)); }
  std::shared_ptr<detail::BufferImpl> allocate(int device, std::size_t bytes) override;
  std::shared_ptr<detail::BufferImpl> allocate_pinned(std::size_t bytes, int numa_node) override;
  std::shared_ptr<detail::BufferImpl> register_host(void* ptr, std::size_t bytes) override;
  void enable_peer_access(int device, int peer) override;
  std::unique_ptr<detail::StreamImpl> create_stream(int device, const StreamOptions& options) override;
  std::unique_ptr<detail::EventImpl> create_event(int device) override;
  detail::StreamImpl* legacy_default_stream(int device) override;
  void synchronize_device(int device) override;
  std::optional<std::string> device_fault(int device) const override;
  std::optional<std::uint64_t> memory_in_use(int device) const override;
  CaptureMode exchange_thread_capture_mode(CaptureMode mode) override;

  /// Throws DeviceFault if `device` has a sticky fault (DESIGN 2.5).
  void throw_if_faulted(int device, std::string_view call) const;
  /// Our priority (larger is higher, 0 default) in `device`'s CUDA range
  /// (smaller is higher; cudaDeviceGetStreamPriorityRange).
  [[nodiscard]] int cuda_priority(int device, int priority) const;
  /// An internal non-blocking stream for graph uploads on `device`.
  [[nodiscard]] cudaStream_t upload_stream(int device);
  [[nodiscard]] std::shared_ptr<CudaBackend> shared() {
    return std::static_pointer_cast<CudaBackend>(shared_from_this());
  }

  // capture records (see CaptureRecord)
  std::shared_ptr<CaptureRecord> open_capture(unsigned long long id, int device, cudaStream_t origin, CaptureMode mode);
  /// After CUDA refused a potentially unsafe call of this thread (an
  /// allocation, a registration) because of a capture in progress:
  /// invalidates the captures that prohibit it under this thread's capture
  /// interaction mode (its own non-relaxed captures; in global mode also
  /// other threads' global captures), in case the driver did not
  /// (cudaThreadExchangeStreamCaptureMode, CUDA Runtime API "Stream
  /// Management"; DESIGN 2.2 "the capture mode decides whose calls
  /// invalidate it").
  void invalidate_prohibiting_captures() const;
  /// Invalidates capture `id` if it is still open, as CUDA does after an
  /// illegal call: by querying its origin stream, which is illegal during
  /// capture ("Prohibited and Unhandled Operations", CUDA Programming Guide,
  /// "CUDA Graphs" > "Stream Capture"). Used where stepgraph itself detects
  /// the illegal call (DESIGN 2.2: it fails where it is made and invalidates
  /// the capture).
  void invalidate_capture(unsigned long long id) const;
  [[nodiscard]] std::shared_ptr<CaptureRecord> find_capture(unsigned long long id) const;
  std::shared_ptr<CaptureRecord> close_capture(unsigned long long id);

 private:
  /// A device from whose context pinned memory is registered: the calling
  /// thread's current device if it has a context, else any device that has
  /// one (Note in DeviceGuard: no context on a device the process does not use).
  [[nodiscard]] int host_memory_device() const;

  /// cudaDeviceGetStreamPriorityRange of one device, asked for on first use.
  struct PriorityRange {
    std::once_flag once;
    int least = 0;
    int greatest = 0;
  };

  std::vector<DeviceInfo> devices_;
  mutable std::vector<PriorityRange> priority_range_;  // per device
  std::vector<std::unique_ptr<CudaStream>> legacy_streams_;
  std::mutex upload_mutex_;
  std::vector<UniqueStream> upload_streams_;
  mutable std::mutex capture_mutex_;
  std::unordered_map<unsigned long long, std::shared_ptr<CaptureRecord>> captures_;
};

/// The cuda stream behind a StreamImpl; InvalidArgument if it belongs to
/// another backend kind.
CudaStream& as_cuda(detail::StreamImpl& stream, std::string_view call);

[[nodiscard]] NodeKind node_kind(cudaGraphNodeType type) noexcept;

[[nodiscard]] cudaStreamCaptureMode to_cuda(CaptureMode mode) noexcept;

/// Throws the InvalidState of Note [Events recorded in a finished capture]
/// (backend.cpp) for `call` on an event of `device`.
[[noreturn]] void throw_captured_event(std::string_view call, int device);

}  // namespace stepgraph::runtime::cuda
