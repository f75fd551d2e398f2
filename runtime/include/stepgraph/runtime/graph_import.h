// stepgraph/runtime/graph_import.h — where StepGraphs come from: a graph
// captured with the annotated launch API (either backend) becomes a complete
// StepGraph (names, buffers, accesses, edges with their bytes); a raw CUDA
// graph captured without annotations becomes a StepGraph for inspection only
// (DOT, counts, structure), which placement and lowering refuse.
//
// Note [Importing an annotated capture]
// Graph::info() reports, per node, its name, its kind, its device and its
// declared accesses as (backend buffer id, byte range, mode), and the edges.
// import_captured_graph turns that into a StepGraph of origin
// kAnnotatedCapture:
// * one IR node per backend node, in the backend's node order (so IR node id
//   == GraphInfo node index), kinds mapped by to_graph_kind();
// * one IR buffer per distinct backend buffer id, in order of first use
//   (node order, then access order). GraphInfo does not carry a buffer's size,
//   so the size (and the name) is the one the caller gives in
//   ImportOptions::buffers, and otherwise the largest extent any access
//   reaches (offset + bytes): the smallest size consistent with the graph,
//   which is all placement and lowering need (they only touch declared
//   ranges). Unnamed buffers are called "b<id>@dev<d>" or "b<id>@pinned";
// * every access with its byte range and mode;
// * every backend edge, with the bytes of StepGraph::connect (what the source
//   writes that the destination reads);
// * node costs from ImportOptions::cost, default default_node_cost().
// A capture is race-free when every two nodes touching the same bytes, one
// writing, are ordered by its edges; its import then passes
// graphs::validate(). Aliases are not seen: two views of one allocation
// (sub_buffer) have their own ids and become two IR buffers.
//
// Note [Importing a raw CUDA graph]
// A cudaGraph_t captured without stepgraph (a library's graph, a raw
// cudaStreamBeginCapture) has kernels whose arguments are opaque pointers and
// declares no buffers. describe_raw_cuda_graph() reads it with
// cudaGraphGetNodes / cudaGraphNodeGetType / cudaGraphGetEdges into a plain
// RawGraphDescription (types, names, sizes, edge pairs); step_graph_from_raw()
// turns a description into a StepGraph of origin kRawCudaGraph with no buffers
// and no costs. graphs::place() and runtime::lower() refuse that origin. The
// split keeps the CUDA query small and lets the conversion be tested without a
// GPU. What each CUDA node type becomes: docs/graph-import.md.
//
// Ownership: every type here is a plain value. import_captured_graph only
// reads the Graph (it keeps no reference to it). describe_raw_cuda_graph only
// reads the cudaGraph_t; the caller keeps owning it.
// Thread-safety: the functions are reentrant; a Graph may be imported while
// other threads use it (Graph::info is const). A cudaGraph_t must not be
// mutated by another thread during describe_raw_cuda_graph (CUDA Runtime API,
// "Graph object thread safety": graph objects are not internally
// synchronised).
// Capture: import_captured_graph, step_graph_from_raw and the converters make
// no backend call beyond Graph::info and may be called during a capture.
// describe_raw_cuda_graph / import_raw_cuda_graph only query a graph object
// (no stream work) and may be called during a capture too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/types.h>

namespace stepgraph::runtime {

// ------------------------------------------------------------------ annotated capture

/// A backend buffer the caller knows: the IR buffer made for it gets this name
/// and size instead of the defaults (Note [Importing an annotated capture]).
struct KnownBuffer {
  std::uint64_t id = 0;  ///< Buffer::id()
  std::string name;
  std::uint64_t bytes = 0;  ///< Buffer::size()
};

/// The KnownBuffer of `buffer` (its id and size) named `name`.
[[nodiscard]] KnownBuffer known_buffer(const Buffer& buffer, std::string name);

/// A node's cost estimate, from what introspection reports about it.
using NodeCostFn = std::function<graphs::DeviceCosts(const NodeInfo& node)>;

/// The default cost: 1 µs on every device kind for work (kernel, memcpy,
/// memset, host function, child graph), 0 µs on every kind for event
/// record/wait and empty nodes. A placeholder that makes every node placeable
/// anywhere; give ImportOptions::cost for real estimates (e.g. measured times
/// or graphs::CostModel-style bytes / bandwidth).
[[nodiscard]] graphs::DeviceCosts default_node_cost(const NodeInfo& node);

/// The IR kind of a backend node kind. kOther (a child graph launched during
/// the capture, or a CUDA node type stepgraph does not model) becomes kKernel:
/// it does work, and declares its children's accesses.
[[nodiscard]] graphs::NodeKind to_graph_kind(NodeKind kind) noexcept;

struct ImportOptions {
  /// Names and sizes of buffers; buffers not listed get the defaults. Ids not
  /// used by the graph are ignored (no IR buffer is made for them).
  std::vector<KnownBuffer> buffers;
  /// Empty: default_node_cost.
  NodeCostFn cost;
};

/// A StepGraph imported from a capture, and the mapping between its buffers
/// and the backend's.
struct ImportedGraph {
  graphs::StepGraph graph{graphs::GraphOrigin::kAnnotatedCapture};
  /// IR BufferId -> backend buffer id (Buffer::id(), AccessInfo::buffer_id).
  std::vector<std::uint64_t> backend_buffer;
  /// Backend buffer id -> IR BufferId.
  std::unordered_map<std::uint64_t, graphs::BufferId> ir_buffer;

  /// The IR buffer of a backend buffer id; nullopt if the graph never touches it.
  [[nodiscard]] std::optional<graphs::BufferId> find_buffer(std::uint64_t backend_id) const;
  /// The IR buffer of a backend buffer; InvalidArgument naming the id if the
  /// graph never touches it.
  [[nodiscard]] graphs::BufferId buffer_of(const Buffer& buffer) const;
};

/// Converts introspection output into a StepGraph (Note [Importing an
/// annotated capture]). Throws InvalidArgument naming the thing for: an edge
/// whose node does not exist, a self edge, a known buffer listed twice or
/// with a size smaller than an access reaches, a cost function that throws
/// or gives a negative cost (propagated from graphs::DeviceCosts).
[[nodiscard]] ImportedGraph import_graph_info(const GraphInfo& info, const ImportOptions& options = {});

/// import_graph_info(graph.info(), options). Works for graphs of either
/// backend; InvalidArgument for an empty Graph handle.
[[nodiscard]] ImportedGraph import_captured_graph(const Graph& graph, const ImportOptions& options = {});

// ------------------------------------------------------------------ raw CUDA graph

/// The CUDA graph node types (cudaGraphNodeType), as a plain value.
enum class RawNodeType : std::uint8_t {
  kKernel,
  kMemcpy,
  kMemset,
  kHost,
  kChildGraph,
  kEmpty,
  kEventWait,
  kEventRecord,
  kSemaphoreSignal,  ///< external semaphore signal
  kSemaphoreWait,    ///< external semaphore wait
  kMemAlloc,
  kMemFree,
  kConditional,
  kUnknown,  ///< a type newer than this code
};
[[nodiscard]] std::string_view to_string(RawNodeType type) noexcept;
/// The IR kind a raw node becomes (docs/graph-import.md has the table).
[[nodiscard]] graphs::NodeKind to_graph_kind(RawNodeType type) noexcept;

/// One node of a raw CUDA graph.
struct RawNode {
  RawNodeType type = RawNodeType::kUnknown;
  /// Kernel: the function's name (demangled where possible); empty when
  /// CUDA cannot name it. Other types: empty.
  std::string name;
  /// Memcpy: bytes copied; memset: bytes set; mem alloc: bytes allocated;
  /// 0 when unknown or not applicable.
  std::uint64_t bytes = 0;
  /// Child graph: its node count (not expanded). 0 otherwise.
  std::size_t child_nodes = 0;
};

/// What describe_raw_cuda_graph reads: nodes in cudaGraphGetNodes order, edges
/// as (from, to) indices into `nodes`.
struct RawGraphDescription {
  std::vector<RawNode> nodes;
  std::vector<std::pair<std::size_t, std::size_t>> edges;
};

/// The StepGraph of a raw description, origin kRawCudaGraph: node i is
/// description node i, named by its kernel name or "<type>_<i>", with
/// " (<bytes> B)" appended when bytes are known and " (<n> nodes)" for a child
/// graph; no buffers, no accesses, no costs; edges with 0 bytes. Throws
/// InvalidArgument naming the edge and the node for an edge to or from a node
/// that does not exist, a self edge, or a cycle (graphs::validate lists it).
[[nodiscard]] graphs::StepGraph step_graph_from_raw(const RawGraphDescription& description);

/// Reads a raw CUDA graph. `cuda_graph` is a `cudaGraph_t` (passed as void*
/// so that this header needs no CUDA header); the caller keeps owning it.
/// Kernel names come from cudaGraphKernelNodeGetParams + cudaFuncGetName;
/// memcpy / memset / mem-alloc sizes from their node parameters; a child
/// graph is not expanded (its node count is recorded). Throws InvalidArgument
/// for a null graph, CudaError for a failing CUDA query, and InvalidState in a
/// build without CUDA (STEPGRAPH_WITH_CUDA=OFF).
[[nodiscard]] RawGraphDescription describe_raw_cuda_graph(void* cuda_graph);

/// step_graph_from_raw(describe_raw_cuda_graph(cuda_graph)).
[[nodiscard]] graphs::StepGraph import_raw_cuda_graph(void* cuda_graph);

}  // namespace stepgraph::runtime
