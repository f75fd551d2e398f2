#include <stepgraph/graphs/graph.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

namespace {
constexpr std::array<std::string_view, kNodeKindCount> kNodeKindNames{
    "kernel", "memcpy", "memset", "host", "collective", "event_record", "event_wait", "empty"};
constexpr std::array<std::string_view, kDeviceKindCount> kDeviceKindNames{"gpu", "cpu"};
constexpr std::array<std::string_view, 3> kAccessModeNames{"read", "write", "read_write"};
constexpr std::array<std::string_view, 4> kCollectiveNames{"allreduce", "allgather", "reduce_scatter", "broadcast"};
constexpr std::array<std::string_view, 3> kOriginNames{"builder", "annotated_capture", "raw_cuda_graph"};

template <typename E, std::size_t N>
E parse_enum(const std::array<std::string_view, N>& names, std::string_view name, std::string_view field,
             std::string_view what) {
  for (std::size_t i = 0; i < N; ++i)
    if (names[i] == name) return static_cast<E>(i);
  throw InvalidArgument(
      fmt::format("{}: unknown {} '{}'; expected one of: {}", field, what, name, fmt::join(names, ", ")));
}

std::string node_label(const StepGraph& g, NodeId id) {
  if (id < g.node_count()) return fmt::format("'{}' (#{})", g.nodes()[id].name, id);
  return fmt::format("#{}", id);
}
}  // namespace

std::string_view to_string(NodeKind k) noexcept {
  return kNodeKindNames[static_cast<std::size_t>(k)];
}
std::string_view to_string(DeviceKind k) noexcept {
  return kDeviceKindNames[static_cast<std::size_t>(k)];
}
std::string_view to_string(AccessMode m) noexcept {
  return kAccessModeNames[static_cast<std::size_t>(m)];
}
std::string_view to_string(CollectiveOp o) noexcept {
  return kCollectiveNames[static_cast<std::size_t>(o)];
}
std::string_view to_string(GraphOrigin o) noexcept {
  return kOriginNames[static_cast<std::size_t>(o)];
}

NodeKind parse_node_kind(std::string_view n, std::string_view f) {
  return parse_enum<NodeKind>(kNodeKindNames, n, f, "node kind");
}
DeviceKind parse_device_kind(std::string_view n, std::string_view f) {
  return parse_enum<DeviceKind>(kDeviceKindNames, n, f, "device kind");
}
AccessMode parse_access_mode(std::string_view n, std::string_view f) {
  return parse_enum<AccessMode>(kAccessModeNames, n, f, "access mode");
}
CollectiveOp parse_collective_op(std::string_view n, std::string_view f) {
  return parse_enum<CollectiveOp>(kCollectiveNames, n, f, "collective op");
}
GraphOrigin parse_graph_origin(std::string_view n, std::string_view f) {
  return parse_enum<GraphOrigin>(kOriginNames, n, f, "graph origin");
}

// ---- DeviceCosts ------------------------------------------------------------

DeviceCosts DeviceCosts::uniform(double us) {
  DeviceCosts c;
  c.set(DeviceKind::kGpu, us).set(DeviceKind::kCpu, us);
  return c;
}

DeviceCosts DeviceCosts::gpu_cpu(double gpu_us, double cpu_us) {
  DeviceCosts c;
  c.set(DeviceKind::kGpu, gpu_us).set(DeviceKind::kCpu, cpu_us);
  return c;
}

DeviceCosts& DeviceCosts::set(DeviceKind kind, double us) {
  STEPGRAPH_CHECK(std::isfinite(us) && us >= 0, InvalidArgument,
                  "cost for device kind '{}' is {}; a cost must be a finite number of microseconds >= 0",
                  to_string(kind), us);
  us_[index(kind)] = us;
  return *this;
}

bool DeviceCosts::empty() const noexcept {
  return std::none_of(us_.begin(), us_.end(), [](const auto& v) { return v.has_value(); });
}

// ---- StepGraph ---------------------------------------------------------------

BufferId StepGraph::add_buffer(std::string name, std::uint64_t bytes) {
  buffers_.push_back(Buffer{std::move(name), bytes});
  return static_cast<BufferId>(buffers_.size() - 1);
}

NodeId StepGraph::add_node(NodeSpec spec) {
  const auto id = static_cast<NodeId>(nodes_.size());
  const std::string who = fmt::format("node '{}' (#{})", spec.name, id);
  STEPGRAPH_CHECK(!spec.name.empty(), InvalidArgument, "node #{}: name is empty; give every node a name", id);
  STEPGRAPH_CHECK(spec.collective.has_value() == (spec.kind == NodeKind::kCollective), InvalidArgument,
                  "{}: field 'collective' must be set exactly when kind is 'collective' (kind is '{}')", who,
                  to_string(spec.kind));
  STEPGRAPH_CHECK(!spec.pinned_device || *spec.pinned_device >= 0, InvalidArgument,
                  "{}: pinned_device {} is negative; use a device index of the platform", who,
                  spec.pinned_device.value_or(0));
  for (std::size_t i = 0; i < spec.accesses.size(); ++i) {
    const auto& a = spec.accesses[i];
    STEPGRAPH_CHECK(a.buffer < buffers_.size(), InvalidArgument,
                    "{}: access {} names buffer #{} which does not exist; add it with add_buffer first", who, i,
                    a.buffer);
    const auto& b = buffers_[a.buffer];
    STEPGRAPH_CHECK(a.offset <= b.bytes && a.bytes <= b.bytes - a.offset, InvalidArgument,
                    "{}: access {} [{}, {}) lies outside buffer '{}' of {} bytes", who, i, a.offset, a.end(), b.name,
                    b.bytes);
  }
  if (spec.kind == NodeKind::kCollective && spec.cost.empty()) {
    // A collective's time comes from the α–β model, not from an estimate.
    spec.cost = DeviceCosts::uniform(0.0);
  }
  nodes_.push_back(Node{id, std::move(spec.name), spec.kind, spec.cost, std::move(spec.accesses), spec.pinned_device,
                        spec.collective});
  return id;
}

NodeId StepGraph::add_kernel(std::string name, DeviceCosts cost, std::vector<BufferAccess> accesses) {
  NodeSpec s;
  s.name = std::move(name);
  s.cost = cost;
  s.accesses = std::move(accesses);
  return add_node(std::move(s));
}

NodeId StepGraph::add_collective(std::string name, CollectiveSpec spec, std::vector<BufferAccess> accesses) {
  NodeSpec s;
  s.name = std::move(name);
  s.kind = NodeKind::kCollective;
  s.collective = spec;
  s.accesses = std::move(accesses);
  return add_node(std::move(s));
}

std::uint64_t StepGraph::flow_bytes(NodeId src, NodeId dst) const {
  const Node& a = node(src);
  const Node& b = node(dst);
  std::uint64_t total = 0;
  for (const auto& w : a.accesses) {
    if (!w.writes()) continue;
    for (const auto& r : b.accesses) {
      if (!r.reads() || r.buffer != w.buffer) continue;
      const auto lo = std::max(w.offset, r.offset);
      const auto hi = std::min(w.end(), r.end());
      if (hi > lo) total += hi - lo;
    }
  }
  return total;
}

void StepGraph::connect(NodeId src, NodeId dst) {
  connect(src, dst, flow_bytes(src, dst));
}

void StepGraph::connect(NodeId src, NodeId dst, std::uint64_t bytes) {
  STEPGRAPH_CHECK(src < nodes_.size() && dst < nodes_.size(), InvalidArgument,
                  "edge {} -> {}: node id out of range (graph has {} nodes)", src, dst, nodes_.size());
  STEPGRAPH_CHECK(src != dst, InvalidArgument, "edge on node {}: an edge from a node to itself is a cycle",
                  node_label(*this, src));
  edges_.push_back(Edge{src, dst, bytes});
}

void StepGraph::add_edge_unchecked(Edge edge) {
  edges_.push_back(edge);
}

void StepGraph::set_pinned_device(NodeId id, std::optional<int> device) {
  STEPGRAPH_CHECK(!device || *device >= 0, InvalidArgument, "node {}: pinned device {} is negative",
                  node_label(*this, id), device.value_or(0));
  mutable_node(id).pinned_device = device;
}

const Node& StepGraph::node(NodeId id) const {
  STEPGRAPH_CHECK(id < nodes_.size(), InvalidArgument, "node id {} out of range (graph has {} nodes)", id,
                  nodes_.size());
  return nodes_[id];
}

Node& StepGraph::mutable_node(NodeId id) {
  STEPGRAPH_CHECK(id < nodes_.size(), InvalidArgument, "node id {} out of range (graph has {} nodes)", id,
                  nodes_.size());
  return nodes_[id];
}

std::optional<NodeId> StepGraph::find(std::string_view name) const {
  for (const auto& n : nodes_)
    if (n.name == name) return n.id;
  return std::nullopt;
}

// ---- Adjacency -----------------------------------------------------------------

Adjacency::Adjacency(const StepGraph& g) {
  const std::size_t n = g.node_count();
  succ_begin_.assign(n + 1, 0);
  pred_begin_.assign(n + 1, 0);
  for (const auto& e : g.edges()) {
    STEPGRAPH_CHECK(e.src < n && e.dst < n, InvalidArgument,
                    "dangling edge {} -> {}: the graph has {} nodes; remove the edge or add the node", e.src, e.dst, n);
    ++succ_begin_[e.src + 1];
    ++pred_begin_[e.dst + 1];
  }
  for (std::size_t i = 0; i < n; ++i) {
    succ_begin_[i + 1] += succ_begin_[i];
    pred_begin_[i + 1] += pred_begin_[i];
  }
  succ_.resize(g.edge_count());
  pred_.resize(g.edge_count());
  std::vector<std::size_t> s(succ_begin_.begin(), succ_begin_.end() - 1);
  std::vector<std::size_t> p(pred_begin_.begin(), pred_begin_.end() - 1);
  for (const auto& e : g.edges()) {
    succ_[s[e.src]++] = Arc{e.dst, e.bytes};
    pred_[p[e.dst]++] = Arc{e.src, e.bytes};
  }
}

// ---- passes ------------------------------------------------------------------

std::vector<NodeId> find_cycle(const StepGraph& g) {
  const Adjacency adj(g);
  const std::size_t n = g.node_count();
  // Iterative three-colour DFS.
  std::vector<std::uint8_t> colour(n, 0);
  std::vector<NodeId> parent(n, kNoNode);
  for (NodeId root = 0; root < n; ++root) {
    if (colour[root] != 0) continue;
    std::vector<std::pair<NodeId, const Adjacency::Arc*>> stack{{root, adj.succ_begin(root)}};
    colour[root] = 1;
    while (!stack.empty()) {
      auto& [u, it] = stack.back();
      if (it == adj.succ_end(u)) {
        colour[u] = 2;
        stack.pop_back();
        continue;
      }
      const NodeId v = (it++)->node;
      if (colour[v] == 1) {
        std::vector<NodeId> cycle;
        for (auto& frame : stack) cycle.push_back(frame.first);
        auto start = std::find(cycle.begin(), cycle.end(), v);
        return {start, cycle.end()};
      }
      if (colour[v] == 0) {
        colour[v] = 1;
        parent[v] = u;
        stack.emplace_back(v, adj.succ_begin(v));
      }
    }
  }
  return {};
}

namespace {
[[noreturn]] void throw_cycle(const StepGraph& g) {
  auto cycle = find_cycle(g);
  std::vector<std::string> names;
  for (auto id : cycle) names.push_back(node_label(g, id));
  if (!names.empty()) names.push_back(names.front());
  throw InvalidArgument(fmt::format("graph has a cycle: {}; remove one of these edges", fmt::join(names, " -> ")));
}
}  // namespace

std::vector<NodeId> topological_order(const StepGraph& g) {
  const Adjacency adj(g);
  const std::size_t n = g.node_count();
  // Kahn's algorithm with a FIFO: sources in id order, then each node when
  // its last predecessor is emitted. Linear time; deterministic.
  std::vector<std::size_t> indeg(n);
  std::vector<NodeId> order;
  order.reserve(n);
  for (NodeId i = 0; i < n; ++i) {
    indeg[i] = adj.in_degree(i);
    if (indeg[i] == 0) order.push_back(i);
  }
  for (std::size_t head = 0; head < order.size(); ++head) {
    const NodeId u = order[head];
    for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a)
      if (--indeg[a->node] == 0) order.push_back(a->node);
  }
  if (order.size() != n) throw_cycle(g);
  return order;
}

void validate(const StepGraph& g, const ValidateOptions& options) {
  const std::size_t n = g.node_count();
  for (std::size_t i = 0; i < g.edges().size(); ++i) {
    const auto& e = g.edges()[i];
    STEPGRAPH_CHECK(e.src < n && e.dst < n, InvalidArgument,
                    "dangling edge {} ({} -> {}): node {} does not exist (graph has {} nodes)", i, e.src, e.dst,
                    e.src < n ? e.dst : e.src, n);
    STEPGRAPH_CHECK(e.src != e.dst, InvalidArgument, "edge {} on node {} is a self loop (a cycle)", i,
                    node_label(g, e.src));
  }
  for (const auto& node : g.nodes()) {
    STEPGRAPH_CHECK(!node.pinned_device || *node.pinned_device >= 0, InvalidArgument,
                    "node {}: pinned_device {} is negative", node_label(g, node.id), *node.pinned_device);
    STEPGRAPH_CHECK(node.collective.has_value() == (node.kind == NodeKind::kCollective), InvalidArgument,
                    "node {}: 'collective' must be set exactly when kind is 'collective'", node_label(g, node.id));
  }
  const auto order = topological_order(g);  // throws on a cycle
  if (options.races == RaceCheck::kSkip) return;

  // Note [Race check]
  // Per buffer, accesses are sorted by offset; every pair of overlapping
  // accesses where one writes must be ordered by a path. Reachability is a
  // DFS from the earlier node (in topological order) pruned at the later
  // node's position, so read-only graphs and synthetic graphs cost nothing.
  std::vector<std::size_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[order[i]] = i;
  const Adjacency adj(g);
  std::vector<std::uint32_t> seen(n, 0);
  std::uint32_t stamp = 0;
  auto reaches = [&](NodeId from, NodeId to) {
    ++stamp;
    std::vector<NodeId> stack{from};
    seen[from] = stamp;
    while (!stack.empty()) {
      NodeId u = stack.back();
      stack.pop_back();
      if (u == to) return true;
      for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a) {
        if (seen[a->node] == stamp || pos[a->node] > pos[to]) continue;
        seen[a->node] = stamp;
        stack.push_back(a->node);
      }
    }
    return false;
  };
  struct Item {
    std::uint64_t lo, hi;
    NodeId node;
    bool writes;
  };
  std::vector<std::vector<Item>> per_buffer(g.buffers().size());
  for (const auto& node : g.nodes())
    for (const auto& a : node.accesses)
      if (a.bytes > 0) per_buffer[a.buffer].push_back(Item{a.offset, a.end(), node.id, a.writes()});
  for (std::size_t b = 0; b < per_buffer.size(); ++b) {
    auto& items = per_buffer[b];
    std::sort(items.begin(), items.end(), [](const Item& x, const Item& y) { return x.lo < y.lo; });
    for (std::size_t i = 0; i < items.size(); ++i) {
      for (std::size_t j = i + 1; j < items.size() && items[j].lo < items[i].hi; ++j) {
        const Item& x = items[i];
        const Item& y = items[j];
        if (!(x.writes || y.writes) || x.node == y.node) continue;
        const NodeId first = pos[x.node] < pos[y.node] ? x.node : y.node;
        const NodeId second = first == x.node ? y.node : x.node;
        if (!reaches(first, second)) {
          const auto lo = std::max(x.lo, y.lo);
          const auto hi = std::min(x.hi, y.hi);
          throw InvalidArgument(fmt::format(
              "nodes {} and {} both touch bytes [{}, {}) of buffer '{}', at least one writes, and no edge path "
              "orders them; add an edge between them",
              node_label(g, first), node_label(g, second), lo, hi, g.buffers()[b].name));
        }
      }
    }
  }
}

CriticalPath critical_path(const StepGraph& g, const std::vector<double>& w) {
  STEPGRAPH_CHECK(w.size() == g.node_count(), InvalidArgument,
                  "critical_path: {} weights given for {} nodes; give one weight per node", w.size(), g.node_count());
  const auto order = topological_order(g);
  const Adjacency adj(g);
  std::vector<double> dist(g.node_count(), 0);
  std::vector<NodeId> from(g.node_count(), kNoNode);
  CriticalPath best;
  NodeId end = kNoNode;
  for (NodeId u : order) {
    double start = 0;
    for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a)
      if (from[u] == kNoNode || dist[a->node] > start) {
        start = dist[a->node];
        from[u] = a->node;
      }
    dist[u] = start + w[u];
    if (end == kNoNode || dist[u] > best.length_us) {
      best.length_us = dist[u];
      end = u;
    }
  }
  for (NodeId v = end; v != kNoNode; v = from[v]) best.nodes.push_back(v);
  std::reverse(best.nodes.begin(), best.nodes.end());
  return best;
}

}  // namespace stepgraph::graphs
