// stepgraph/graphs/graph.h — the StepGraph IR.
//
// A StepGraph is one training step as a DAG: nodes (kernel, memcpy, memset,
// host, collective, event record/wait, empty) and edges. Each node carries a
// name, an estimated cost per device kind, the buffer byte ranges it touches
// with an access mode, and optionally a pinned device. An edge's bytes are what
// the source writes and the destination reads: `connect(a, b)` derives them
// from the declared accesses, `connect(a, b, bytes)` states them (synthetic
// workloads, imported graphs).
//
// Ownership: StepGraph is a value type; it owns its nodes, edges and buffer
// declarations (not the memory the buffers describe). Node and buffer ids are
// dense indices, stable for the life of the graph (nodes are never removed).
// Thread-safety: const member functions may be called concurrently; any
// mutation needs exclusive access.
// Capture: pure host data structure, makes no CUDA call; safe anywhere.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stepgraph::graphs {

using NodeId = std::uint32_t;
using BufferId = std::uint32_t;
inline constexpr NodeId kNoNode = static_cast<NodeId>(-1);

enum class NodeKind : std::uint8_t {
  kKernel,
  kMemcpy,
  kMemset,
  kHost,
  kCollective,
  kEventRecord,
  kEventWait,
  kEmpty,
};
inline constexpr std::size_t kNodeKindCount = 8;

/// The kinds of device a cost can be estimated for. A CPU device is one NUMA
/// node's cores (the host backend's device).
enum class DeviceKind : std::uint8_t { kGpu, kCpu };
inline constexpr std::size_t kDeviceKindCount = 2;

enum class AccessMode : std::uint8_t { kRead, kWrite, kReadWrite };

enum class CollectiveOp : std::uint8_t { kAllReduce, kAllGather, kReduceScatter, kBroadcast };

/// Where the graph came from. A raw CUDA graph imported through
/// cudaGraphGetNodes/GetEdges has opaque kernel arguments and no buffers, so
/// it can be inspected (DOT, counts) but not placed.
enum class GraphOrigin : std::uint8_t { kBuilder, kAnnotatedCapture, kRawCudaGraph };

[[nodiscard]] std::string_view to_string(NodeKind kind) noexcept;
[[nodiscard]] std::string_view to_string(DeviceKind kind) noexcept;
[[nodiscard]] std::string_view to_string(AccessMode mode) noexcept;
[[nodiscard]] std::string_view to_string(CollectiveOp op) noexcept;
[[nodiscard]] std::string_view to_string(GraphOrigin origin) noexcept;
/// Parse the names printed by to_string; throw InvalidArgument naming `field`
/// and listing the accepted names.
[[nodiscard]] NodeKind parse_node_kind(std::string_view name, std::string_view field);
[[nodiscard]] DeviceKind parse_device_kind(std::string_view name, std::string_view field);
[[nodiscard]] AccessMode parse_access_mode(std::string_view name, std::string_view field);
[[nodiscard]] CollectiveOp parse_collective_op(std::string_view name, std::string_view field);
[[nodiscard]] GraphOrigin parse_graph_origin(std::string_view name, std::string_view field);

/// Estimated execution cost of a node, in microseconds, per device kind.
/// A kind without an estimate means the node cannot run on that kind.
class DeviceCosts {
 public:
  DeviceCosts() = default;
  /// Same cost on every kind.
  static DeviceCosts uniform(double us);
  static DeviceCosts gpu_cpu(double gpu_us, double cpu_us);

  /// Throws InvalidArgument for negative or NaN costs.
  DeviceCosts& set(DeviceKind kind, double us);
  void clear(DeviceKind kind) noexcept { us_[index(kind)].reset(); }
  [[nodiscard]] std::optional<double> get(DeviceKind kind) const noexcept { return us_[index(kind)]; }
  [[nodiscard]] bool runs_on(DeviceKind kind) const noexcept { return us_[index(kind)].has_value(); }
  [[nodiscard]] bool empty() const noexcept;

 private:
  static std::size_t index(DeviceKind kind) noexcept { return static_cast<std::size_t>(kind); }
  std::array<std::optional<double>, kDeviceKindCount> us_{};
};

/// A named memory region the graph touches (not the memory itself).
struct Buffer {
  std::string name;
  std::uint64_t bytes = 0;
};

/// The byte range [offset, offset + bytes) of one buffer, with its mode.
struct BufferAccess {
  BufferId buffer = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
  AccessMode mode = AccessMode::kRead;

  [[nodiscard]] bool reads() const noexcept { return mode != AccessMode::kWrite; }
  [[nodiscard]] bool writes() const noexcept { return mode != AccessMode::kRead; }
  [[nodiscard]] std::uint64_t end() const noexcept { return offset + bytes; }
};

/// A collective node is one gang node spanning every device of the placement
/// (or of the replica set after `replicate_data_parallel`); `bytes` is the
/// per-device payload (e.g. the gradient bucket size of an AllReduce).
struct CollectiveSpec {
  CollectiveOp op = CollectiveOp::kAllReduce;
  std::uint64_t bytes = 0;
};

struct Node {
  NodeId id = 0;
  std::string name;
  NodeKind kind = NodeKind::kKernel;
  DeviceCosts cost;
  std::vector<BufferAccess> accesses;
  /// Index of a device in the Platform the graph is placed on.
  std::optional<int> pinned_device;
  /// Set iff kind == kCollective.
  std::optional<CollectiveSpec> collective;
};

struct Edge {
  NodeId src = 0;
  NodeId dst = 0;
  std::uint64_t bytes = 0;
};

/// Options of the node builder call; everything but the name is optional.
struct NodeSpec {
  std::string name;
  NodeKind kind = NodeKind::kKernel;
  DeviceCosts cost;
  std::vector<BufferAccess> accesses;
  std::optional<int> pinned_device;
  std::optional<CollectiveSpec> collective;
};

class StepGraph {
 public:
  explicit StepGraph(GraphOrigin origin = GraphOrigin::kBuilder) : origin_(origin) {}

  // ---- builder API ------------------------------------------------------
  BufferId add_buffer(std::string name, std::uint64_t bytes);
  /// Adds a node; checks its own fields (costs, accesses inside their
  /// buffers, collective spec present iff kind is kCollective) and throws
  /// InvalidArgument naming the node and the field.
  NodeId add_node(NodeSpec spec);
  NodeId add_kernel(std::string name, DeviceCosts cost, std::vector<BufferAccess> accesses = {});
  NodeId add_collective(std::string name, CollectiveSpec spec, std::vector<BufferAccess> accesses = {});
  /// Edge whose bytes are the overlap of what `src` writes with what `dst`
  /// reads (sum over buffers).
  void connect(NodeId src, NodeId dst);
  /// Edge with explicit bytes.
  void connect(NodeId src, NodeId dst, std::uint64_t bytes);
  /// Raw edge insertion without id checks (importers); `validate()` reports
  /// dangling edges.
  void add_edge_unchecked(Edge edge);
  void set_pinned_device(NodeId node, std::optional<int> device);

  // ---- access -----------------------------------------------------------
  [[nodiscard]] GraphOrigin origin() const noexcept { return origin_; }
  [[nodiscard]] std::size_t node_count() const noexcept { return nodes_.size(); }
  [[nodiscard]] std::size_t edge_count() const noexcept { return edges_.size(); }
  [[nodiscard]] const std::vector<Node>& nodes() const noexcept { return nodes_; }
  [[nodiscard]] const std::vector<Edge>& edges() const noexcept { return edges_; }
  [[nodiscard]] const std::vector<Buffer>& buffers() const noexcept { return buffers_; }
  [[nodiscard]] const Node& node(NodeId id) const;
  [[nodiscard]] Node& mutable_node(NodeId id);
  [[nodiscard]] std::optional<NodeId> find(std::string_view name) const;
  /// Overlap bytes of src's writes with dst's reads.
  [[nodiscard]] std::uint64_t flow_bytes(NodeId src, NodeId dst) const;

 private:
  GraphOrigin origin_;
  std::vector<Node> nodes_;
  std::vector<Edge> edges_;
  std::vector<Buffer> buffers_;
};

/// Compressed adjacency (CSR) of a validated graph: successors and
/// predecessors of each node with the edge's bytes. Built once per pass.
class Adjacency {
 public:
  struct Arc {
    NodeId node;
    std::uint64_t bytes;
  };
  explicit Adjacency(const StepGraph& graph);
  [[nodiscard]] std::size_t size() const noexcept { return succ_begin_.size() - 1; }
  [[nodiscard]] const Arc* succ_begin(NodeId n) const noexcept { return succ_.data() + succ_begin_[n]; }
  [[nodiscard]] const Arc* succ_end(NodeId n) const noexcept { return succ_.data() + succ_begin_[n + 1]; }
  [[nodiscard]] const Arc* pred_begin(NodeId n) const noexcept { return pred_.data() + pred_begin_[n]; }
  [[nodiscard]] const Arc* pred_end(NodeId n) const noexcept { return pred_.data() + pred_begin_[n + 1]; }
  [[nodiscard]] std::size_t in_degree(NodeId n) const noexcept { return pred_begin_[n + 1] - pred_begin_[n]; }
  [[nodiscard]] std::size_t out_degree(NodeId n) const noexcept { return succ_begin_[n + 1] - succ_begin_[n]; }

 private:
  std::vector<std::size_t> succ_begin_, pred_begin_;
  std::vector<Arc> succ_, pred_;
};

// ---- passes --------------------------------------------------------------

enum class RaceCheck : std::uint8_t { kCheck, kSkip };

struct ValidateOptions {
  /// Two nodes not ordered by the edges that touch overlapping bytes of one
  /// buffer, at least one writing, are a race.
  RaceCheck races = RaceCheck::kCheck;
};

/// Throws InvalidArgument on: a dangling edge (names the edge and the missing
/// node id), a self edge, a cycle (lists the nodes on it), a pinned device
/// < 0, an unordered write conflict (names both nodes and the buffer range).
void validate(const StepGraph& graph, const ValidateOptions& options = {});

/// Kahn order with a FIFO (sources in id order; linear time, deterministic).
/// Throws InvalidArgument listing the nodes of a cycle.
[[nodiscard]] std::vector<NodeId> topological_order(const StepGraph& graph);

/// Returns one cycle (node ids in order, first repeated implicitly) or empty.
[[nodiscard]] std::vector<NodeId> find_cycle(const StepGraph& graph);

struct CriticalPath {
  double length_us = 0;       ///< sum of node weights along the path
  std::vector<NodeId> nodes;  ///< entry to exit
};

/// Longest path by node weight (`weight_us[node]`), edges weigh nothing.
/// With weights = each node's minimum cost over devices this is the HEFT
/// paper's SLR denominator.
[[nodiscard]] CriticalPath critical_path(const StepGraph& graph, const std::vector<double>& weight_us);

}  // namespace stepgraph::graphs
