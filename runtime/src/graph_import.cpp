// Captured graphs and raw CUDA graph descriptions -> StepGraph (the CPU
// part; the CUDA query is cuda/graph_import.cpp, its stand-in without CUDA
// no_cuda.cpp). Notes [Importing an annotated capture] and [Importing a raw
// CUDA graph] are in graph_import.h.
#include <stepgraph/runtime/graph_import.h>

#include <algorithm>

#include <fmt/format.h>

#include <stepgraph/core/error.h>

namespace stepgraph::runtime {

namespace g = stepgraph::graphs;

// ------------------------------------------------------------------ annotated capture

KnownBuffer known_buffer(const Buffer& buffer, std::string name) {
  STEPGRAPH_CHECK(buffer.valid(), InvalidArgument, "known_buffer '{}': the Buffer handle is empty", name);
  return KnownBuffer{buffer.id(), std::move(name), buffer.size()};
}

g::NodeKind to_graph_kind(NodeKind kind) noexcept {
  switch (kind) {
    case NodeKind::kKernel:
      return g::NodeKind::kKernel;
    case NodeKind::kMemcpy:
      return g::NodeKind::kMemcpy;
    case NodeKind::kMemset:
      return g::NodeKind::kMemset;
    case NodeKind::kHost:
      return g::NodeKind::kHost;
    case NodeKind::kEventRecord:
      return g::NodeKind::kEventRecord;
    case NodeKind::kEventWait:
      return g::NodeKind::kEventWait;
    case NodeKind::kEmpty:
      return g::NodeKind::kEmpty;
    case NodeKind::kOther:
      return g::NodeKind::kKernel;
    case NodeKind::kConditional:  // one opaque node: the IR has no control flow
      return g::NodeKind::kKernel;
    case NodeKind::kCollective:
      return g::NodeKind::kCollective;
  }
  return g::NodeKind::kKernel;
}

g::DeviceCosts default_node_cost(const NodeInfo& node) {
  switch (node.kind) {
    case NodeKind::kEventRecord:
    case NodeKind::kEventWait:
    case NodeKind::kEmpty:
      return g::DeviceCosts::uniform(0.0);
    default:
      return g::DeviceCosts::uniform(1.0);
  }
}

namespace {

g::AccessMode to_mode(Access a) noexcept {
  switch (a) {
    case Access::kRead:
      return g::AccessMode::kRead;
    case Access::kWrite:
      return g::AccessMode::kWrite;
    case Access::kReadWrite:
      return g::AccessMode::kReadWrite;
  }
  return g::AccessMode::kReadWrite;
}

std::string default_buffer_name(const AccessInfo& a) {
  return a.device < 0 ? fmt::format("b{}@pinned", a.buffer_id) : fmt::format("b{}@dev{}", a.buffer_id, a.device);
}

}  // namespace

std::optional<g::BufferId> ImportedGraph::find_buffer(std::uint64_t backend_id) const {
  const auto it = ir_buffer.find(backend_id);
  if (it == ir_buffer.end()) return std::nullopt;
  return it->second;
}

g::BufferId ImportedGraph::buffer_of(const Buffer& buffer) const {
  STEPGRAPH_CHECK(buffer.valid(), InvalidArgument, "ImportedGraph::buffer_of: the Buffer handle is empty");
  const auto found = find_buffer(buffer.id());
  STEPGRAPH_CHECK(found.has_value(), InvalidArgument,
                  "ImportedGraph::buffer_of: backend buffer #{} is not touched by any node of the imported graph",
                  buffer.id());
  return *found;
}

ImportedGraph import_graph_info(const GraphInfo& info, const ImportOptions& options) {
  std::unordered_map<std::uint64_t, const KnownBuffer*> known;
  for (const auto& k : options.buffers) {
    const bool inserted = known.emplace(k.id, &k).second;
    STEPGRAPH_CHECK(inserted, InvalidArgument,
                    "import: backend buffer #{} is listed twice in ImportOptions::buffers ('{}'); list each once", k.id,
                    k.name);
  }

  // Buffers in order of first use; the size of an unknown one is the largest
  // extent an access reaches.
  ImportedGraph out;
  std::vector<std::string> names;
  std::vector<std::uint64_t> bytes;
  for (const auto& n : info.nodes) {
    for (const auto& a : n.accesses) {
      auto [it, fresh] = out.ir_buffer.emplace(a.buffer_id, static_cast<g::BufferId>(out.backend_buffer.size()));
      if (fresh) {
        out.backend_buffer.push_back(a.buffer_id);
        const auto k = known.find(a.buffer_id);
        names.push_back(k != known.end() ? k->second->name : default_buffer_name(a));
        bytes.push_back(k != known.end() ? k->second->bytes : 0);
      }
      if (!known.contains(a.buffer_id))
        bytes[it->second] = std::max<std::uint64_t>(bytes[it->second], a.offset + a.bytes);
    }
  }
  for (std::size_t b = 0; b < names.size(); ++b) (void)out.graph.add_buffer(std::move(names[b]), bytes[b]);

  const NodeCostFn& cost = options.cost;
  for (std::size_t i = 0; i < info.nodes.size(); ++i) {
    const NodeInfo& n = info.nodes[i];
    g::NodeSpec spec;
    spec.name = n.name.empty() ? fmt::format("{}_{}", to_string(n.kind), i) : n.name;
    spec.kind = to_graph_kind(n.kind);
    spec.cost = cost ? cost(n) : default_node_cost(n);
    if (n.kind == NodeKind::kCollective) {
      STEPGRAPH_CHECK(n.collective.has_value(), InvalidArgument,
                      "import: node {} ('{}') is a collective without its CollectiveInfo", i, n.name);
      spec.collective = g::CollectiveSpec{g::parse_collective_op(n.collective->op, "collective.op"), n.bytes};
    }
    spec.accesses.reserve(n.accesses.size());
    for (const auto& a : n.accesses)
      spec.accesses.push_back(g::BufferAccess{out.ir_buffer.at(a.buffer_id), a.offset, a.bytes, to_mode(a.access)});
    (void)out.graph.add_node(std::move(spec));
  }

  const std::size_t count = info.nodes.size();
  for (std::size_t e = 0; e < info.edges.size(); ++e) {
    const auto [from, to] = info.edges[e];
    STEPGRAPH_CHECK(from < count && to < count, InvalidArgument,
                    "import: edge #{} ({} -> {}) names node {} which does not exist; the graph has {} nodes", e, from,
                    to, from < count ? to : from, count);
    STEPGRAPH_CHECK(from != to, InvalidArgument, "import: edge #{} goes from node {} ('{}') to itself", e, from,
                    info.nodes[from].name);
    out.graph.connect(static_cast<g::NodeId>(from), static_cast<g::NodeId>(to));
  }
  return out;
}

ImportedGraph import_captured_graph(const Graph& graph, const ImportOptions& options) {
  STEPGRAPH_CHECK(graph.valid(), InvalidArgument,
                  "import_captured_graph: the Graph handle is empty (moved from, or never captured)");
  return import_graph_info(graph.info(), options);
}

// ------------------------------------------------------------------ raw CUDA graph

std::string_view to_string(RawNodeType type) noexcept {
  switch (type) {
    case RawNodeType::kKernel:
      return "kernel";
    case RawNodeType::kMemcpy:
      return "memcpy";
    case RawNodeType::kMemset:
      return "memset";
    case RawNodeType::kHost:
      return "host";
    case RawNodeType::kChildGraph:
      return "child_graph";
    case RawNodeType::kEmpty:
      return "empty";
    case RawNodeType::kEventWait:
      return "event_wait";
    case RawNodeType::kEventRecord:
      return "event_record";
    case RawNodeType::kSemaphoreSignal:
      return "semaphore_signal";
    case RawNodeType::kSemaphoreWait:
      return "semaphore_wait";
    case RawNodeType::kMemAlloc:
      return "mem_alloc";
    case RawNodeType::kMemFree:
      return "mem_free";
    case RawNodeType::kConditional:
      return "conditional";
    case RawNodeType::kUnknown:
      return "unknown";
  }
  return "unknown";
}

g::NodeKind to_graph_kind(RawNodeType type) noexcept {
  switch (type) {
    case RawNodeType::kKernel:
      return g::NodeKind::kKernel;
    case RawNodeType::kMemcpy:
      return g::NodeKind::kMemcpy;
    case RawNodeType::kMemset:
      return g::NodeKind::kMemset;
    case RawNodeType::kHost:
      return g::NodeKind::kHost;
    case RawNodeType::kEventWait:
    case RawNodeType::kSemaphoreWait:
      return g::NodeKind::kEventWait;
    case RawNodeType::kEventRecord:
    case RawNodeType::kSemaphoreSignal:
      return g::NodeKind::kEventRecord;
    // Work the IR cannot describe (a child graph, a conditional body, memory
    // management): an opaque node; its name says what it was.
    case RawNodeType::kChildGraph:
    case RawNodeType::kConditional:
    case RawNodeType::kMemAlloc:
    case RawNodeType::kMemFree:
    case RawNodeType::kEmpty:
    case RawNodeType::kUnknown:
      return g::NodeKind::kEmpty;
  }
  return g::NodeKind::kEmpty;
}

g::StepGraph step_graph_from_raw(const RawGraphDescription& d) {
  g::StepGraph out(g::GraphOrigin::kRawCudaGraph);
  for (std::size_t i = 0; i < d.nodes.size(); ++i) {
    const RawNode& n = d.nodes[i];
    g::NodeSpec spec;
    spec.name = n.name.empty() ? fmt::format("{}_{}", to_string(n.type), i) : n.name;
    if (n.bytes > 0) spec.name += fmt::format(" ({} B)", n.bytes);
    if (n.type == RawNodeType::kChildGraph) spec.name += fmt::format(" ({} nodes)", n.child_nodes);
    spec.kind = to_graph_kind(n.type);
    (void)out.add_node(std::move(spec));
  }
  const std::size_t count = d.nodes.size();
  for (std::size_t e = 0; e < d.edges.size(); ++e) {
    const auto [from, to] = d.edges[e];
    STEPGRAPH_CHECK(from < count && to < count, InvalidArgument,
                    "raw CUDA graph: edge #{} ({} -> {}) names node {} which does not exist; the description has "
                    "{} nodes",
                    e, from, to, from < count ? to : from, count);
    STEPGRAPH_CHECK(from != to, InvalidArgument, "raw CUDA graph: edge #{} goes from node {} ('{}') to itself", e, from,
                    out.node(static_cast<g::NodeId>(from)).name);
    out.connect(static_cast<g::NodeId>(from), static_cast<g::NodeId>(to), 0);
  }
  g::validate(out);  // a cycle: InvalidArgument listing its nodes
  return out;
}

g::StepGraph import_raw_cuda_graph(void* cuda_graph) {
  return step_graph_from_raw(describe_raw_cuda_graph(cuda_graph));
}

}  // namespace stepgraph::runtime
