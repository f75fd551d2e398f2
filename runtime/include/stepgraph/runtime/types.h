// stepgraph/runtime/types.h — the value types shared by both backends.
//
// Ownership: everything here is a plain value except BufferAccess, which
// holds a shared reference to the buffer it names (so a graph that recorded
// the access keeps the buffer alive; see Note [Buffer lifetime] in buffer.h).
// Thread-safety: values; safe to copy between threads.
// Capture: safe to use during stream capture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <stepgraph/topology/live.h>

namespace stepgraph::runtime {

enum class BackendKind { kHost, kCuda };
[[nodiscard]] std::string_view to_string(BackendKind kind) noexcept;

/// Where a buffer's memory lives.
enum class MemoryKind {
  kDevice,      // one device's memory (arena, cudaMalloc)
  kPinnedHost,  // page-locked host memory registered and mapped to every device
};

enum class Access : std::uint8_t { kRead, kWrite, kReadWrite };
[[nodiscard]] std::string_view to_string(Access access) noexcept;
[[nodiscard]] constexpr bool writes(Access a) noexcept {
  return a != Access::kRead;
}
[[nodiscard]] constexpr bool reads(Access a) noexcept {
  return a != Access::kWrite;
}

/// How calls made by *other* code interact with a capture in progress; the
/// same three modes as cudaStreamCaptureMode (CUDA runtime API, "Stream
/// Management", cudaThreadExchangeStreamCaptureMode).
enum class CaptureMode { kGlobal, kThreadLocal, kRelaxed };
[[nodiscard]] std::string_view to_string(CaptureMode mode) noexcept;

enum class CaptureStatus { kNone, kActive, kInvalidated };
[[nodiscard]] std::string_view to_string(CaptureStatus status) noexcept;

enum class CopyKind { kHostToDevice, kDeviceToHost, kDeviceToDevice, kPeer, kHostToHost };
[[nodiscard]] std::string_view to_string(CopyKind kind) noexcept;

enum class NodeKind {
  kKernel,
  kMemcpy,
  kMemset,
  kHost,
  kEventRecord,
  kEventWait,
  kEmpty,
  kOther,
  kCollective,
  kConditional,  // an IF or WHILE node with a body graph (Note [Conditional nodes], condition.h)
};
[[nodiscard]] std::string_view to_string(NodeKind kind) noexcept;

/// The two conditional node types both backends run (cudaGraphCondTypeIf,
/// cudaGraphCondTypeWhile).
enum class ConditionalKind { kIf, kWhile };
[[nodiscard]] std::string_view to_string(ConditionalKind kind) noexcept;

/// The outcome of GraphExec::update, mirroring cudaGraphExecUpdateResult.
enum class UpdateResult {
  kSuccess,
  kTopologyChanged,    // node count or edges differ
  kNodeTypeChanged,    // a node's kind differs at the same position
  kFunctionChanged,    // a kernel node's function cannot change this way
  kParametersChanged,  // a memcpy's direction or devices differ, or a node moved device
  kNotSupported,       // a node kind whose parameters cannot be updated
  kAttributesChanged,
  kError,
};
[[nodiscard]] std::string_view to_string(UpdateResult result) noexcept;

/// Kernel launch dimensions (CUDA's grid and block; the host backend passes
/// them to the kernel through LaunchContext and otherwise ignores them).
struct LaunchDims {
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  std::size_t shared_bytes = 0;

  static LaunchDims linear(std::size_t threads, unsigned block_size = 256) {
    LaunchDims d;
    d.block[0] = block_size;
    d.grid[0] = static_cast<unsigned>((threads + block_size - 1) / block_size);
    if (d.grid[0] == 0) d.grid[0] = 1;
    return d;
  }
};

struct DeviceInfo {
  int index = 0;
  BackendKind backend = BackendKind::kHost;
  std::string name;
  int numa_node = -1;              // the closest NUMA node (live machine), -1 if unknown
  topology::CpuSet cpus;           // the cpus a device's host threads bind to
  std::uint64_t memory_bytes = 0;  // device memory (host: the NUMA node's memory)
  std::string pci_bus_id;          // cuda only
  int workers = 0;                 // host only: worker threads
  int compute_capability = 0;      // cuda only: major*10+minor
};

namespace detail {
struct BufferImpl;
}  // namespace detail

/// One declared access of a launch: (buffer, byte range, access mode).
/// Built with read(), write() and read_write() (buffer.h) or host_range()
/// for registered host memory given by pointer.
struct BufferAccess {
  std::shared_ptr<const detail::BufferImpl> buffer;  // null for an unresolved host range
  const void* host_ptr = nullptr;                    // set for host_range() until resolved
  std::size_t offset = 0;
  std::size_t bytes = 0;
  Access access = Access::kRead;
};

/// An access as graph introspection reports it.
struct AccessInfo {
  std::uint64_t buffer_id = 0;
  int device = -1;  // -1: pinned host memory
  MemoryKind memory = MemoryKind::kDevice;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  Access access = Access::kRead;
};

/// What a collective node is (introspection; DESIGN 1.5). Set by the
/// collectives module when it enqueues a collective (StreamRef::collective).
struct CollectiveInfo {
  std::string op;                  // as the graph IR names it: "allreduce", "allgather", "reduce_scatter", "broadcast"
  std::string reduce;              // "sum", "avg", "max", "min"; empty for allgather and broadcast
  std::string dtype;               // "float32", "bfloat16", ...
  std::size_t count = 0;           // elements per rank (all_gather: sent; reduce_scatter: received)
  std::uint64_t communicator = 0;  // the communicator's id (unique in the process)
  int rank = -1;
  int world_size = 0;
  int root = -1;  // broadcast only
};

struct GraphInfo;

/// What a conditional node is (introspection).
struct ConditionalInfo {
  ConditionalKind kind = ConditionalKind::kIf;
  unsigned long long handle = 0;  // the ConditionHandle's value
  unsigned default_value = 0;     // the value at the start of every launch
  std::shared_ptr<const GraphInfo> body;
};

/// Blocking host waits and polls, counted per backend since it was made
/// (Backend::sync_counts): what "no host synchronisation per step" is
/// measured with (docs/amp.md, "Counting host synchronisations").
struct SyncCounts {
  std::uint64_t stream_synchronize = 0;  // Stream::synchronize
  std::uint64_t device_synchronize = 0;  // Backend::synchronize_device
  std::uint64_t event_synchronize = 0;   // Event::synchronize
  std::uint64_t event_wait_for = 0;      // Event::wait_for
  std::uint64_t stream_query = 0;        // Stream::query (a poll: it does not block)
  std::uint64_t event_query = 0;         // Event::query (a poll)
  /// Events the host has waited on or polled at least once: a wait on an
  /// event never waited on before raises it by one.
  std::uint64_t events_waited_on = 0;
  /// The calls that block the calling thread on device work.
  [[nodiscard]] std::uint64_t blocking() const noexcept {
    return stream_synchronize + device_synchronize + event_synchronize + event_wait_for;
  }
};

/// One node of a captured graph, as introspection reports it on both
/// backends.
struct NodeInfo {
  std::size_t index = 0;
  std::string name;
  NodeKind kind = NodeKind::kOther;
  int device = 0;
  std::vector<AccessInfo> accesses;
  // memcpy / memset only
  CopyKind copy_kind = CopyKind::kDeviceToDevice;
  int src_device = -1;
  int dst_device = -1;
  std::size_t bytes = 0;  // memcpy / memset / collective: the bytes moved per rank
  int priority = 0;
  std::optional<CollectiveInfo> collective;    // kind kCollective only
  std::optional<ConditionalInfo> conditional;  // kind kConditional only
};

struct GraphInfo {
  std::vector<NodeInfo> nodes;
  std::vector<std::pair<std::size_t, std::size_t>> edges;  // (from, to), sorted

  [[nodiscard]] std::size_t count(NodeKind kind) const;
  /// Index of the node called `name`; InvalidArgument if none or several.
  [[nodiscard]] std::size_t find(std::string_view name) const;
  [[nodiscard]] bool has_edge(std::size_t from, std::size_t to) const;
  /// True if `to` is reachable from `from` along edges.
  [[nodiscard]] bool reaches(std::size_t from, std::size_t to) const;
};

struct UpdateInfo {
  UpdateResult result = UpdateResult::kSuccess;
  std::optional<std::size_t> node;  // the node that made the update fail, if one did
  std::string message;
  [[nodiscard]] bool ok() const noexcept { return result == UpdateResult::kSuccess; }
};

}  // namespace stepgraph::runtime
