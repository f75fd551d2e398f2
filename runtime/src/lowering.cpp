// Lowering of a placed StepGraph onto a backend: see Note [Lowering] in
// stepgraph/runtime/lowering.h.
//
// Two passes. The planning pass is pure data: it fixes the emission order,
// the buffer homes, the per-range version tracking and from it the list of
// operations per stream (waits, copies, nodes, event records). Then memory,
// streams and events are made (none of that may happen during a capture,
// DESIGN 1.1 "all memory allocated before the warm-up"), and the capture pass
// replays the operation list into one multi-stream capture.
#include <stepgraph/runtime/lowering.h>

// Note [Copy streams]
// With CopyStreams::kConsumerStream a copy is enqueued on the reading
// device's stream right before the reader, so in the captured graph it
// depends on everything before it on that stream: device d's copies and
// its compute run one after the other, although a GPU moves bytes with copy
// engines beside its SMs, and the simulator (graphs/simulator.h) starts a
// transfer as soon as its source node finishes. With kPerDevicePair (the
// default) the copies of an ordered pair e -> d run on copy streams of
// their own (made on d's backend device): the copy waits for the node that
// wrote its bytes, the copy stream records an event after it, and d's
// stream waits for that event before the reader. The copy then depends
// only on its writer and on the earlier copies of its stream, and overlaps
// d's compute. A pair gets more than one copy stream only to avoid
// head-of-line blocking: a copy goes behind the pair's stream whose latest
// writer is the latest one not after its own (in e's stream order), so it
// never waits behind a copy of bytes written after its own; only when every
// stream of the pair waited for a later writer is a new one made, up to
// kCopyStreamsPerPair (then the copy goes behind the stream whose latest
// writer is the earliest). Measured with bm_lowering (docs/lowering.md):
// one stream per pair left the lowered graph 1-12 % longer than the
// simulated makespan, because of that blocking; up to 2 streams per pair
// 0.93-1.00 of it, up to 4 the same as no bound (0.93-1.00, 1.2-3.0 streams
// per pair used).
// Why dropping the stream order is still correct, for a graph that passes
// the race check (Note [Lowering]):
// * a copy into d's instance of range R overwrites d's older version of R.
//   Every node that used that older version on d (read it, or wrote it)
//   comes before the new version's writer W in the emission order and
//   touches R while W writes it, so an edge path orders it before W;
//   every edge is stream order or a wait, so W's event implies it, and the
//   copy waits for W's event;
// * a copy of R's starting contents (no writer in the run) waits for
//   nothing: d held no version of R before it (else no copy), and nothing
//   writes R before it in the run;
// * a copy reads the writer's instance; a later writer of R there comes
//   after the copy's reader by the race check, and the reader waits for the
//   copy, so the copy has finished;
// * write-backs wait for their writer; the copy stream joins the origin
//   before the capture ends, and the next launch of the executable starts
//   after the last one ended.
// A reader's wait for a copy also implies everything the copy's stream
// waited for on its source device (need_copy), so the reader's wait for its
// predecessor there is usually left out.

#include <algorithm>
#include <cstring>
#include <map>
#include <queue>
#include <tuple>
#include <utility>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>
#include <stepgraph/runtime/executor.h>

namespace stepgraph::runtime {

namespace g = stepgraph::graphs;

// ------------------------------------------------------------------ DeviceMap

DeviceMap DeviceMap::identity(int count) {
  STEPGRAPH_CHECK(count >= 1, InvalidArgument, "DeviceMap::identity: count is {}; give at least one device", count);
  std::vector<int> v(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) v[static_cast<std::size_t>(i)] = i;
  return DeviceMap(std::move(v));
}

DeviceMap DeviceMap::shared(int count, int backend_device) {
  STEPGRAPH_CHECK(count >= 1, InvalidArgument, "DeviceMap::shared: count is {}; give at least one device", count);
  return DeviceMap(std::vector<int>(static_cast<std::size_t>(count), backend_device));
}

int DeviceMap::backend_device(int logical) const {
  STEPGRAPH_CHECK(logical >= 0 && logical < logical_count(), InvalidArgument,
                  "DeviceMap: logical device {} has no mapping ({} logical devices mapped); give DeviceMap one "
                  "backend device per placement device",
                  logical, logical_count());
  return backend_device_[static_cast<std::size_t>(logical)];
}

// ------------------------------------------------------------------ accesses

void* ResolvedAccess::data() const {
  STEPGRAPH_CHECK(instance != nullptr, InvalidState, "ResolvedAccess::data: buffer {} has no instance (zero bytes)",
                  buffer);
  return static_cast<char*>(instance->data()) + offset;
}

BufferAccess ResolvedAccess::declare() const {
  STEPGRAPH_CHECK(instance != nullptr, InvalidState, "ResolvedAccess::declare: buffer {} has no instance (zero bytes)",
                  buffer);
  switch (mode) {
    case g::AccessMode::kRead:
      return read(*instance, offset, bytes);
    case g::AccessMode::kWrite:
      return write(*instance, offset, bytes);
    case g::AccessMode::kReadWrite:
      return read_write(*instance, offset, bytes);
  }
  return read(*instance, offset, bytes);
}

std::vector<BufferAccess> NodeLaunch::declarations() const {
  std::vector<BufferAccess> out;
  out.reserve(accesses.size());
  for (const auto& a : accesses)
    if (a.bytes > 0) out.push_back(a.declare());
  return out;
}

// ------------------------------------------------------------------ state

namespace detail {

struct LoweredState {
  // Declared first, destroyed last: every handle below keeps it alive anyway.
  std::shared_ptr<Backend> backend;
  DeviceMap devices;
  std::vector<std::unique_ptr<DeviceArena>> arenas;      // per logical device
  std::vector<std::vector<Buffer>> instances;            // [logical][buffer]; invalid where none
  std::vector<std::size_t> buffer_bytes;                 // per IR buffer
  std::vector<std::vector<PlacedRange>> homes;           // per IR buffer
  std::vector<std::vector<PlacedRange>> final_location;  // per IR buffer, after a run
  std::vector<Stream> streams;                           // per logical device, then the copy streams
  std::vector<Event> events;
  Graph graph;
  GraphExec exec;
  std::vector<InsertedCopy> copies;
  std::vector<LoweredDeviceStats> stats;
  std::vector<g::NodeId> order;
  std::size_t event_waits = 0;
  std::size_t runs = 0;
};

}  // namespace detail

namespace {

using detail::LoweredState;

/// Appends [offset, offset+bytes) on `logical`, merged with the last range
/// when contiguous and on the same device.
void append(std::vector<PlacedRange>& v, std::uint64_t offset, std::uint64_t bytes, int logical) {
  if (!v.empty() && v.back().logical == logical && v.back().offset + v.back().bytes == offset)
    v.back().bytes += static_cast<std::size_t>(bytes);
  else
    v.push_back(PlacedRange{static_cast<std::size_t>(offset), static_cast<std::size_t>(bytes), logical});
}

constexpr int kMaxLogicalDevices = 64;
// At most this many copy streams per ordered pair (Note [Copy streams]).
constexpr std::size_t kCopyStreamsPerPair = 4;

std::string node_label(const g::StepGraph& graph, g::NodeId n) {
  return fmt::format("'{}' (id {})", graph.node(n).name, n);
}

/// One version-tracked segment [start, end) of a buffer.
struct Segment {
  std::uint64_t end = 0;
  int owner = 0;                  // logical device that wrote the latest version
  g::NodeId writer = g::kNoNode;  // kNoNode: the contents the run starts with, on the home
  std::uint64_t valid = 0;        // bit i: logical device i holds the latest version
  int home = 0;                   // where the range lives when a run starts
};

/// The segments of one buffer, covering [0, bytes).
class Versions {
 public:
  Versions() = default;
  explicit Versions(const std::vector<PlacedRange>& homes) {
    for (const auto& h : homes)
      segs_.emplace(h.offset, Segment{h.offset + h.bytes, h.logical, g::kNoNode, bit(h.logical), h.logical});
  }
  static std::uint64_t bit(int d) { return std::uint64_t{1} << static_cast<unsigned>(d); }

  /// Splits so that `pos` starts a segment (no-op at the ends).
  void split(std::uint64_t pos) {
    auto it = segs_.upper_bound(pos);
    if (it == segs_.begin()) return;
    --it;
    if (it->first == pos || it->second.end <= pos) return;
    Segment tail = it->second;
    it->second.end = pos;
    segs_.emplace(pos, tail);
  }
  /// The segments overlapping [a, b), after splitting at a and b.
  template <class F>
  void for_range(std::uint64_t a, std::uint64_t b, F&& f) {
    split(a);
    split(b);
    for (auto it = segs_.lower_bound(a); it != segs_.end() && it->first < b; ++it) f(it->first, it->second);
  }
  [[nodiscard]] const std::map<std::uint64_t, Segment>& segments() const { return segs_; }

 private:
  std::map<std::uint64_t, Segment> segs_;
};

enum class OpKind : std::uint8_t { kWait, kCopy, kNode, kRecord };

struct Op {
  OpKind kind = OpKind::kNode;
  std::size_t stream = 0;            // a logical device's stream (its index), or a copy stream
  std::size_t event = 0;             // kWait, kRecord
  std::size_t copy = 0;              // kCopy: index into copies
  g::NodeId node = g::kNoNode;       // kNode
  std::ptrdiff_t record_event = -1;  // kRecord: filled when someone waits on it
};

/// The device a node is emitted on (collectives resolved by the options).
int logical_of(const g::StepGraph& graph, const g::Placement& placement, g::NodeId n, const DeviceMap& devices,
               const LoweringOptions& options) {
  const auto& node = graph.node(n);
  int d = placement.nodes[n].device;
  if (node.kind == g::NodeKind::kCollective || d == g::kAllDevices) {
    if (options.collectives == CollectiveLowering::kCommunicators) return 0;  // a gang: every device (plan_gang)
    STEPGRAPH_CHECK(options.collectives == CollectiveLowering::kOnLogicalDeviceZero, InvalidArgument,
                    "lower: node {} is a collective (a gang node on every device); the lowering does not run "
                    "collectives unless given communicators. Set LoweringOptions::collectives = kCommunicators (with "
                    "one communicator per logical device), or kOnLogicalDeviceZero to emit it on logical "
                    "device 0, or remove it",
                    node_label(graph, n));
    return 0;
  }
  STEPGRAPH_CHECK(d >= 0 && d < devices.logical_count(), InvalidArgument,
                  "lower: node {} is placed on device {}, which has no mapping in the DeviceMap ({} logical "
                  "devices); give DeviceMap one backend device per placement device",
                  node_label(graph, n), d, devices.logical_count());
  return d;
}

/// Per logical device, its nodes in the placement's order.
std::vector<std::vector<g::NodeId>> device_orders(const g::StepGraph& graph, const g::Placement& placement,
                                                  const std::vector<int>& logical, int logical_count, bool gangs) {
  std::vector<std::vector<g::NodeId>> orders(static_cast<std::size_t>(logical_count));
  std::vector<char> seen(graph.node_count(), 0);
  for (std::size_t d = 0; d < placement.device_order.size(); ++d) {
    for (g::NodeId n : placement.device_order[d]) {
      STEPGRAPH_CHECK(n < graph.node_count(), InvalidArgument,
                      "lower: placement.device_order[{}] names node id {}, but the graph has {} nodes", d, n,
                      graph.node_count());
      // Gang nodes appear in every device's list; keep them where they run
      // (with communicators: on every device).
      if (gangs && graph.node(n).kind == g::NodeKind::kCollective) {
        if (static_cast<int>(d) < logical_count) orders[d].push_back(n);
        seen[n] = 1;
        continue;
      }
      if (logical[n] != static_cast<int>(d)) {
        STEPGRAPH_CHECK(graph.node(n).kind == g::NodeKind::kCollective, InvalidArgument,
                        "lower: node {} is listed in placement.device_order[{}] but placed on device {}; the "
                        "placement is inconsistent, place the graph again",
                        node_label(graph, n), d, placement.nodes[n].device);
        continue;
      }
      STEPGRAPH_CHECK(!seen[n], InvalidArgument, "lower: node {} appears twice in placement.device_order[{}]",
                      node_label(graph, n), d);
      seen[n] = 1;
      orders[d].push_back(n);
    }
  }
  for (g::NodeId n = 0; n < graph.node_count(); ++n)
    STEPGRAPH_CHECK(seen[n], InvalidArgument,
                    "lower: node {} is not in placement.device_order[{}]: the placement does not schedule it "
                    "(unplaced node); place the graph with graphs::place or graphs::schedule_assignment",
                    node_label(graph, n), logical[n]);
  return orders;
}

/// One order consistent with the edges and every device's order (Kahn,
/// earliest scheduled start first, then node id).
std::vector<g::NodeId> emission_order(const g::StepGraph& graph, const g::Placement& placement,
                                      const std::vector<std::vector<g::NodeId>>& orders) {
  const std::size_t n_nodes = graph.node_count();
  std::vector<std::vector<g::NodeId>> succ(n_nodes);
  std::vector<std::size_t> indeg(n_nodes, 0);
  for (const auto& e : graph.edges()) {
    succ[e.src].push_back(e.dst);
    ++indeg[e.dst];
  }
  for (const auto& o : orders)
    for (std::size_t i = 1; i < o.size(); ++i) {
      succ[o[i - 1]].push_back(o[i]);
      ++indeg[o[i]];
    }
  using Key = std::tuple<double, g::NodeId>;
  std::priority_queue<Key, std::vector<Key>, std::greater<>> ready;
  for (g::NodeId n = 0; n < n_nodes; ++n)
    if (indeg[n] == 0) ready.emplace(placement.nodes[n].start_us, n);
  std::vector<g::NodeId> out;
  out.reserve(n_nodes);
  while (!ready.empty()) {
    const g::NodeId n = std::get<1>(ready.top());
    ready.pop();
    out.push_back(n);
    for (g::NodeId s : succ[n])
      if (--indeg[s] == 0) ready.emplace(placement.nodes[s].start_us, s);
  }
  if (out.size() != n_nodes) {
    std::vector<char> done(n_nodes, 0);
    for (auto n : out) done[n] = 1;
    g::NodeId stuck = 0;
    while (done[stuck]) ++stuck;
    throw InvalidArgument(
        fmt::format("lower: the placement's device order contradicts the edges (node {} can "
                    "never run); place the graph again",
                    node_label(graph, stuck)));
  }
  return out;
}

/// The planning pass and the capture pass.
class Lowerer {
 public:
  Lowerer(const g::StepGraph& graph, const DeviceMap& devices, const LoweringOptions& options, std::vector<int> logical,
          std::vector<g::NodeId> order)
      : graph_(graph), devices_(devices), options_(options), logical_(std::move(logical)), order_(std::move(order)) {}

  std::unique_ptr<LoweredState> run(std::shared_ptr<Backend> backend, const NodeEmitter& emitter);

 private:
  void plan();
  void plan_node(g::NodeId n);
  /// A collective gang node with communicators: rank d's part on device d
  /// (Note [Collectives in a lowered graph]).
  void plan_gang(g::NodeId n);
  /// Node `n` (or rank `d`'s part of a gang) on device `d`: its waits and
  /// copies, the op, its record, its writes; over accesses [first, last).
  void plan_on(g::NodeId n, int d, std::size_t first, std::size_t last);
  [[nodiscard]] bool gang(g::NodeId n) const { return !gang_seq_.empty() && !gang_seq_[n].empty(); }
  /// The position of `p` (a gang: of its rank `e`'s part) on its device.
  [[nodiscard]] std::size_t seq_on(g::NodeId p, int e) const {
    return gang(p) ? gang_seq_[p][static_cast<std::size_t>(e)] : seq_[p];
  }
  void plan_write_back();
  /// Makes stream `s` wait for the event after node `p` (on another stream)
  /// unless it already does. For a gang `p`, after its rank `rank`'s part
  /// (-1: the rank of `s`'s device).
  void need_after(std::size_t s, g::NodeId p, int rank = -1);
  std::size_t event_after(g::NodeId p, int rank);
  /// The event of the kRecord op at `record_op` (made on first use).
  std::size_t event_of(std::ptrdiff_t record_op);
  /// Appends a wait of stream `s` on `event`, counted for `s`'s device.
  void add_wait(std::size_t s, std::size_t event);
  /// A copy stream of the pair src -> dst for a copy waiting for `writer`
  /// (kNoNode: none); Note [Copy streams].
  std::size_t copy_stream(int src, int dst, g::NodeId writer);
  /// Appends copy `c` on stream `s` (and, on a copy stream, the event record after it).
  void add_copy(std::size_t s, InsertedCopy c);
  /// Makes `d`'s stream wait for copy `copy` (on a copy stream) unless it already does.
  void need_copy(int d, std::size_t copy);
  void allocate(LoweredState& st);
  void capture(LoweredState& st, const NodeEmitter& emitter);

  const g::StepGraph& graph_;
  const DeviceMap& devices_;
  const LoweringOptions& options_;
  std::vector<int> logical_;      // per node
  std::vector<g::NodeId> order_;  // emission order
  int count_ = 0;                 // logical devices

  std::vector<std::size_t> seq_;                          // per node: position on its device
  std::vector<std::ptrdiff_t> record_op_;                 // per node: index of its kRecord op
  std::vector<std::vector<std::size_t>> gang_seq_;        // per gang node, per rank: its position there
  std::vector<std::vector<std::ptrdiff_t>> gang_record_;  // per gang node, per rank: its kRecord op
  std::vector<std::vector<std::ptrdiff_t>> waited_;       // [stream][e]: highest seq of e that the stream waited for
  // Copy streams (CopyStreams::kPerDevicePair), numbered after the count_
  // device streams: per stream its logical device (the destination for a
  // copy stream), per ordered pair its copy streams with the seq of the
  // latest writer each waited for, per copy stream its join event and the
  // copies it made so far.
  std::vector<int> stream_logical_;
  struct Lane {
    std::size_t stream = 0;
    std::ptrdiff_t writer_seq = -1;
  };
  std::vector<std::vector<Lane>> pair_lanes_;  // [src * count_ + dst]
  std::vector<std::size_t> join_event_;        // [stream]: the event it records to join the origin (stream 0: the fork)
  std::vector<std::size_t> stream_copies_;     // [stream - count_]
  // Per copy: its stream, its position there, the index of the kRecord op
  // after it (-1: none), and the highest seq of its source device that it
  // waited for (implied for whoever waits for the copy).
  struct CopyPlan {
    std::size_t stream = 0;
    std::size_t seq = 0;
    std::ptrdiff_t record_op = -1;
    std::ptrdiff_t implies = -1;
  };
  std::vector<CopyPlan> copy_plan_;
  std::vector<std::vector<std::ptrdiff_t>> copy_waited_;  // [d][stream - count_]: highest copy seq d waited for
  std::vector<Versions> versions_;
  std::vector<std::vector<PlacedRange>> homes_;
  std::vector<std::vector<char>> touches_;  // [d][buffer]
  std::vector<Op> ops_;
  // Per event, the logical device whose stream records it (an event is made
  // on its recording stream's device, as cudaEventRecord requires). 0: the
  // fork; 1..count-1: the joins; then the node events.
  std::vector<int> event_logical_;
  std::vector<std::vector<g::NodeId>> preds_;  // per node
  std::vector<InsertedCopy> copies_;
  std::vector<LoweredDeviceStats> stats_;
  std::size_t waits_ = 0;
};

std::size_t Lowerer::event_after(g::NodeId p, int rank) {
  return event_of(gang(p) ? gang_record_[p][static_cast<std::size_t>(rank)] : record_op_[p]);
}

std::size_t Lowerer::event_of(std::ptrdiff_t record_op) {
  auto& rec = ops_[static_cast<std::size_t>(record_op)];
  if (rec.record_event < 0) {
    rec.record_event = static_cast<std::ptrdiff_t>(event_logical_.size());
    event_logical_.push_back(stream_logical_[rec.stream]);
  }
  return static_cast<std::size_t>(rec.record_event);
}

void Lowerer::add_wait(std::size_t s, std::size_t event) {
  Op op;
  op.kind = OpKind::kWait;
  op.stream = s;
  op.event = event;
  ops_.push_back(op);
  ++stats_[static_cast<std::size_t>(stream_logical_[s])].event_waits;
  ++waits_;
}

void Lowerer::need_after(std::size_t s, g::NodeId p, int rank) {
  const int e = gang(p) ? (rank >= 0 ? rank : stream_logical_[s]) : logical_[p];
  if (s == static_cast<std::size_t>(e)) return;  // p (its part on e) is on this very stream
  auto& w = waited_[s][static_cast<std::size_t>(e)];
  const auto q = static_cast<std::ptrdiff_t>(seq_on(p, e));
  if (q <= w) return;  // an earlier wait of this stream already covers p
  w = q;
  add_wait(s, event_after(p, e));
}

std::size_t Lowerer::copy_stream(int src, int dst, g::NodeId writer) {
  // The pair's stream whose latest writer is the latest not after this
  // copy's: behind it this copy waits for no writer it does not need.
  const std::ptrdiff_t seq = writer == g::kNoNode ? -1 : static_cast<std::ptrdiff_t>(seq_on(writer, src));
  auto& lanes = pair_lanes_[static_cast<std::size_t>(src * count_ + dst)];
  Lane* best = nullptr;
  for (auto& lane : lanes)
    if (lane.writer_seq <= seq && (best == nullptr || lane.writer_seq > best->writer_seq)) best = &lane;
  if (best == nullptr && lanes.size() >= kCopyStreamsPerPair) {  // the least blocking one
    best = &lanes.front();
    for (auto& lane : lanes)
      if (lane.writer_seq < best->writer_seq) best = &lane;
  }
  if (best == nullptr) {
    lanes.push_back(Lane{stream_logical_.size(), -1});
    best = &lanes.back();
    stream_logical_.push_back(dst);
    waited_.emplace_back(static_cast<std::size_t>(count_), -1);
    join_event_.push_back(event_logical_.size());
    event_logical_.push_back(dst);
    stream_copies_.push_back(0);
    for (auto& row : copy_waited_) row.push_back(-1);
  }
  best->writer_seq = std::max(best->writer_seq, seq);
  return best->stream;
}

void Lowerer::add_copy(std::size_t s, InsertedCopy c) {
  CopyPlan plan;
  plan.stream = s;
  Op op;
  op.kind = OpKind::kCopy;
  op.stream = s;
  op.copy = copies_.size();
  ops_.push_back(op);
  if (s >= static_cast<std::size_t>(count_)) {
    plan.seq = stream_copies_[s - static_cast<std::size_t>(count_)]++;
    plan.implies = waited_[s][static_cast<std::size_t>(c.src_logical)];
    if (c.reason == CopyReason::kInput) {  // its reader waits for it; nobody waits for a write-back
      Op rec;
      rec.kind = OpKind::kRecord;
      rec.stream = s;
      plan.record_op = static_cast<std::ptrdiff_t>(ops_.size());
      ops_.push_back(rec);
    }
  }
  if (!c.skipped) {
    auto& st = stats_[static_cast<std::size_t>(c.dst_logical)];
    ++st.copies_in;
    st.bytes_in += c.bytes;
  }
  copy_plan_.push_back(plan);
  copies_.push_back(c);
}

void Lowerer::need_copy(int d, std::size_t copy) {
  const CopyPlan& plan = copy_plan_[copy];
  auto& w = copy_waited_[static_cast<std::size_t>(d)][plan.stream - static_cast<std::size_t>(count_)];
  const auto q = static_cast<std::ptrdiff_t>(plan.seq);
  if (q <= w) return;  // an earlier wait for a later copy on that stream covers it
  w = q;
  add_wait(static_cast<std::size_t>(d), event_of(plan.record_op));
  // The copy waited for its source up to `implies`: so has d now.
  auto& src = waited_[static_cast<std::size_t>(d)][static_cast<std::size_t>(copies_[copy].src_logical)];
  src = std::max(src, plan.implies);
}

void Lowerer::plan() {
  count_ = devices_.logical_count();
  const std::size_t n_buf = graph_.buffers().size();
  seq_.assign(graph_.node_count(), 0);
  record_op_.assign(graph_.node_count(), -1);
  waited_.assign(static_cast<std::size_t>(count_), std::vector<std::ptrdiff_t>(static_cast<std::size_t>(count_), -1));
  stream_logical_.resize(static_cast<std::size_t>(count_));
  for (int d = 0; d < count_; ++d) stream_logical_[static_cast<std::size_t>(d)] = d;
  pair_lanes_.assign(static_cast<std::size_t>(count_ * count_), {});
  copy_waited_.assign(static_cast<std::size_t>(count_), {});
  touches_.assign(static_cast<std::size_t>(count_), std::vector<char>(n_buf, 0));
  stats_.resize(static_cast<std::size_t>(count_));
  for (int d = 0; d < count_; ++d) {
    stats_[static_cast<std::size_t>(d)].logical = d;
    stats_[static_cast<std::size_t>(d)].backend_device = devices_.backend_device(d);
  }
  // Homes. The first user of each buffer (logical device 0 if none), and
  // with kLastWriter the device of each range's last writer on top.
  std::vector<int> first_use(n_buf, -1);
  std::vector<std::map<std::uint64_t, std::pair<std::uint64_t, int>>> last(n_buf);  // start -> (end, device)
  std::vector<std::size_t> next_seq(static_cast<std::size_t>(count_), 0);
  if (options_.collectives == CollectiveLowering::kCommunicators) {
    gang_seq_.assign(graph_.node_count(), {});
    gang_record_.assign(graph_.node_count(), {});
    for (g::NodeId n = 0; n < graph_.node_count(); ++n)
      if (graph_.node(n).kind == g::NodeKind::kCollective) {
        gang_seq_[n].assign(static_cast<std::size_t>(count_), 0);
        gang_record_[n].assign(static_cast<std::size_t>(count_), -1);
      }
  }
  // Every (node, device) part with the accesses it makes there: a gang's
  // rank d makes the d-th group of its accesses on device d.
  auto for_parts = [&](g::NodeId n, auto&& f) {
    const auto& acc = graph_.node(n).accesses;
    if (!gang(n)) return f(logical_[n], std::size_t{0}, acc.size());
    const std::size_t k = acc.size() / static_cast<std::size_t>(count_);
    for (int d = 0; d < count_; ++d) f(d, static_cast<std::size_t>(d) * k, static_cast<std::size_t>(d + 1) * k);
  };
  for (g::NodeId n : order_) {
    for_parts(n, [&](int d, std::size_t lo, std::size_t hi) {
      (gang(n) ? gang_seq_[n][static_cast<std::size_t>(d)] : seq_[n]) = next_seq[static_cast<std::size_t>(d)]++;
      for (std::size_t i = lo; i < hi; ++i) {
        const auto& a = graph_.node(n).accesses[i];
        if (first_use[a.buffer] < 0) first_use[a.buffer] = d;
        touches_[static_cast<std::size_t>(d)][a.buffer] = 1;
      }
    });
  }
  for (std::size_t b = 0; b < n_buf; ++b) {
    if (first_use[b] < 0) first_use[b] = 0;
    if (graph_.buffers()[b].bytes > 0) last[b].emplace(0, std::make_pair(graph_.buffers()[b].bytes, first_use[b]));
  }
  if (options_.homes == HomePolicy::kLastWriter) {
    for (g::NodeId n : order_)
      for_parts(n, [&](int part, std::size_t lo, std::size_t hi) {
        for (std::size_t i = lo; i < hi; ++i) {
          const auto& a = graph_.node(n).accesses[i];
          if (!a.writes() || a.bytes == 0) continue;
          auto& m = last[a.buffer];
          for (std::uint64_t cut : {a.offset, a.end()}) {  // split at both ends
            auto it = m.upper_bound(cut);
            if (it == m.begin()) continue;
            --it;
            if (it->first < cut && cut < it->second.first) {
              const auto tail = it->second;
              it->second.first = cut;
              m.emplace(cut, tail);
            }
          }
          for (auto it = m.lower_bound(a.offset); it != m.end() && it->first < a.end(); ++it) it->second.second = part;
        }
      });
  }
  homes_.assign(n_buf, {});
  versions_.resize(n_buf);
  for (std::size_t b = 0; b < n_buf; ++b) {
    for (const auto& [start, v] : last[b]) {
      append(homes_[b], start, v.first - start, v.second);
      touches_[static_cast<std::size_t>(v.second)][b] = 1;
    }
    versions_[b] = Versions(homes_[b]);
  }
  for (int d = 0; d < count_; ++d) {  // event 0: the fork; 1..count-1: the device streams' joins
    join_event_.push_back(event_logical_.size());
    event_logical_.push_back(d);
  }
  preds_.assign(graph_.node_count(), {});
  for (const auto& e : graph_.edges()) preds_[e.dst].push_back(e.src);
  for (g::NodeId n : order_) plan_node(n);
  if (options_.final_copies == FinalCopies::kWriteBackToHome) plan_write_back();
}

void Lowerer::plan_node(g::NodeId n) {
  if (gang(n)) return plan_gang(n);
  plan_on(n, logical_[n], 0, graph_.node(n).accesses.size());
}

// Note [Collectives in a lowered graph]
// With LoweringOptions::collectives = kCommunicators, a collective (gang)
// node runs on every logical device: rank d's part, on device d's stream,
// is an AllReduce through communicator d of the d-th of count equal groups
// of the node's accesses (replicate_data_parallel lays a gang's accesses
// out replica by replica: group d is replica d's buffers). Each part is
// planned like a node of its own: it waits for the node's predecessors,
// brings group d's ranges to device d if their latest version is elsewhere,
// and leaves them as the latest version on device d. The parts meet inside
// the communicator, which is the only synchronisation between them; a
// consumer waits for the part on its own device (or, for a copy, the part
// on the device that owns the bytes).
void Lowerer::plan_gang(g::NodeId n) {
  const std::size_t k = graph_.node(n).accesses.size() / static_cast<std::size_t>(count_);
  for (int d = 0; d < count_; ++d) plan_on(n, d, static_cast<std::size_t>(d) * k, static_cast<std::size_t>(d + 1) * k);
}

void Lowerer::plan_on(g::NodeId n, int d, std::size_t first, std::size_t last) {
  const auto ud = static_cast<std::size_t>(d);
  const auto& node = graph_.node(n);
  const bool pair_streams = options_.copy_streams == CopyStreams::kPerDevicePair;
  // Cross-device predecessors. With copy streams they come after the
  // copies, whose waits may already imply them.
  if (!pair_streams)
    for (g::NodeId p : preds_[n]) need_after(ud, p);
  // Copies for every read range whose latest version is elsewhere.
  for (std::size_t ai = first; ai < last; ++ai) {
    const auto& a = node.accesses[ai];
    if (!a.reads() || a.bytes == 0) continue;
    struct Piece {
      std::uint64_t start, end;
      int owner;
      g::NodeId writer;
    };
    std::vector<Piece> pieces;
    versions_[a.buffer].for_range(a.offset, a.end(), [&](std::uint64_t start, Segment& s) {
      if (s.valid & Versions::bit(d)) return;
      pieces.push_back({start, s.end, s.owner, s.writer});
      s.valid |= Versions::bit(d);
    });
    // Merge contiguous pieces from one owner into one copy; wait for the
    // latest of their writers (one stream: the latest implies the others).
    for (std::size_t i = 0; i < pieces.size();) {
      std::size_t j = i + 1;
      while (j < pieces.size() && pieces[j].start == pieces[j - 1].end && pieces[j].owner == pieces[i].owner) ++j;
      g::NodeId last_writer = g::kNoNode;
      for (std::size_t k = i; k < j; ++k)
        if (pieces[k].writer != g::kNoNode && (last_writer == g::kNoNode || seq_on(pieces[k].writer, pieces[k].owner) >
                                                                                seq_on(last_writer, pieces[k].owner)))
          last_writer = pieces[k].writer;
      // The copy's stream waits for the writer (one stream: the latest
      // implies the others); copies of a range's starting contents wait for
      // nothing (the whole capture starts after the fork).
      const std::size_t cs = pair_streams ? copy_stream(pieces[i].owner, d, last_writer) : ud;
      if (last_writer != g::kNoNode) need_after(cs, last_writer, pieces[i].owner);
      InsertedCopy c;
      c.buffer = a.buffer;
      c.offset = pieces[i].start;
      c.bytes = pieces[j - 1].end - pieces[i].start;
      c.src_logical = pieces[i].owner;
      c.dst_logical = d;
      c.reason = CopyReason::kInput;
      c.before_node = n;
      c.skipped = options_.skip_copy_for_test == copies_.size();
      add_copy(cs, c);
      if (pair_streams) need_copy(d, copies_.size() - 1);
      i = j;
    }
  }
  if (pair_streams)
    for (g::NodeId p : preds_[n]) need_after(ud, p);
  // The node, then its (maybe unused) event record.
  Op op;
  op.kind = OpKind::kNode;
  op.stream = ud;
  op.node = n;
  ops_.push_back(op);
  ++stats_[static_cast<std::size_t>(d)].nodes;
  Op rec;
  rec.kind = OpKind::kRecord;
  rec.stream = ud;
  (gang(n) ? gang_record_[n][ud] : record_op_[n]) = static_cast<std::ptrdiff_t>(ops_.size());
  ops_.push_back(rec);
  // Its writes become the latest version, on d only.
  for (std::size_t ai = first; ai < last; ++ai) {
    const auto& a = node.accesses[ai];
    if (!a.writes() || a.bytes == 0) continue;
    versions_[a.buffer].for_range(a.offset, a.end(), [&](std::uint64_t, Segment& s) {
      s.owner = d;
      s.writer = n;
      s.valid = Versions::bit(d);
    });
  }
}

void Lowerer::plan_write_back() {
  for (std::size_t b = 0; b < versions_.size(); ++b) {
    // Merge contiguous segments from one owner to one home, as for inputs.
    std::vector<std::tuple<std::uint64_t, std::uint64_t, int, g::NodeId, int>> pieces;
    for (const auto& [start, s] : versions_[b].segments()) {
      if (s.valid & Versions::bit(s.home)) continue;
      if (!pieces.empty() && std::get<1>(pieces.back()) == start && std::get<2>(pieces.back()) == s.owner &&
          std::get<4>(pieces.back()) == s.home) {
        std::get<1>(pieces.back()) = s.end;
        if (seq_on(s.writer, s.owner) > seq_on(std::get<3>(pieces.back()), s.owner))
          std::get<3>(pieces.back()) = s.writer;
      } else {
        pieces.emplace_back(start, s.end, s.owner, s.writer, s.home);
      }
    }
    for (const auto& [start, end, owner, writer, h] : pieces) {
      // On the home's stream, or the copy stream owner -> home: either
      // joins the origin before the capture ends, which is all a write-back
      // must precede.
      const std::size_t cs = options_.copy_streams == CopyStreams::kPerDevicePair ? copy_stream(owner, h, writer)
                                                                                  : static_cast<std::size_t>(h);
      need_after(cs, writer, owner);
      InsertedCopy c;
      c.buffer = static_cast<g::BufferId>(b);
      c.offset = start;
      c.bytes = end - start;
      c.src_logical = owner;
      c.dst_logical = h;
      c.reason = CopyReason::kWriteBack;
      add_copy(cs, c);
    }
  }
}

void Lowerer::allocate(LoweredState& st) {
  Backend& be = *st.backend;
  const std::size_t n_buf = graph_.buffers().size();
  st.instances.resize(static_cast<std::size_t>(count_));
  for (int d = 0; d < count_; ++d) {
    const auto ud = static_cast<std::size_t>(d);
    std::size_t bytes = 0;
    for (std::size_t b = 0; b < n_buf; ++b)
      if (touches_[ud][b] && graph_.buffers()[b].bytes > 0)
        bytes += DeviceArena::aligned(graph_.buffers()[b].bytes, options_.alignment);
    st.instances[ud].resize(n_buf);
    if (bytes == 0) {
      st.arenas.push_back(nullptr);
      continue;
    }
    // Each logical device gets its own arena, also when it shares a backend
    // device with another: separate memory, like two GPUs.
    st.arenas.push_back(std::make_unique<DeviceArena>(be, devices_.backend_device(d), bytes));
    for (std::size_t b = 0; b < n_buf; ++b) {
      if (!touches_[ud][b] || graph_.buffers()[b].bytes == 0) continue;
      st.instances[ud][b] = st.arenas.back()->allocate(
          graph_.buffers()[b].bytes, fmt::format("{}@L{}", graph_.buffers()[b].name, d), options_.alignment);
      ++stats_[ud].instances;
    }
    stats_[ud].arena_bytes = bytes;
  }
  for (int l : stream_logical_) st.streams.push_back(be.create_stream(devices_.backend_device(l)));
  for (int d : event_logical_) st.events.push_back(be.create_event(devices_.backend_device(d)));
}

void Lowerer::capture(LoweredState& st, const NodeEmitter& emitter) {
  const std::optional<std::size_t> skip = options_.skip_copy_for_test;
  StreamRef origin = st.streams[0].ref();
  CaptureSession session(origin, CaptureMode::kThreadLocal);
  origin.record(st.events[0]);
  for (std::size_t s = 1; s < st.streams.size(); ++s) st.streams[s].wait(st.events[0]);
  for (const Op& op : ops_) {
    const StreamRef s = st.streams[op.stream].ref();
    switch (op.kind) {
      case OpKind::kWait:
        s.wait(st.events[op.event]);
        break;
      case OpKind::kRecord:
        if (op.record_event >= 0) s.record(st.events[static_cast<std::size_t>(op.record_event)]);
        break;
      case OpKind::kCopy: {
        const auto& c = copies_[op.copy];
        if (c.skipped) break;
        const auto& dst = st.instances[static_cast<std::size_t>(c.dst_logical)][c.buffer];
        const auto& src = st.instances[static_cast<std::size_t>(c.src_logical)][c.buffer];
        s.copy(
            dst.slice(c.offset, c.bytes), src.slice(c.offset, c.bytes),
            fmt::format("copy {}[{}:+{}] L{}->L{}{}", graph_.buffers()[c.buffer].name, c.offset, c.bytes, c.src_logical,
                        c.dst_logical,
                        c.reason == CopyReason::kWriteBack ? std::string(" write-back")
                                                           : fmt::format(" for {}", graph_.node(c.before_node).name)));
        break;
      }
      case OpKind::kNode: {
        const auto& node = graph_.node(op.node);
        if (gang(op.node)) {  // Note [Collectives in a lowered graph]
          const std::size_t k = node.accesses.size() / static_cast<std::size_t>(count_);
          auto& comm = *options_.communicators[op.stream];
          const std::size_t es = dtype_size(options_.collective_dtype);
          for (std::size_t i = op.stream * k; i < (op.stream + 1) * k; ++i) {
            const auto& a = node.accesses[i];
            if (a.bytes == 0) continue;
            comm.all_reduce(s, st.instances[op.stream][a.buffer], static_cast<std::size_t>(a.offset),
                            static_cast<std::size_t>(a.bytes) / es, options_.collective_dtype,
                            options_.collective_reduce);
          }
          break;
        }
        NodeLaunch nl;
        nl.node = op.node;
        nl.ir = &node;
        nl.stream = s;
        nl.logical_device = static_cast<int>(op.stream);
        nl.backend_device = devices_.backend_device(nl.logical_device);
        const InsertedCopy* skipped = skip && options_.skipped_copy_access == SkippedCopyAccess::kRemoteInstance &&
                                              copies_[*skip].before_node == op.node
                                          ? &copies_[*skip]
                                          : nullptr;
        for (const auto& a : node.accesses) {
          int from = nl.logical_device;
          if (skipped && skipped->buffer == a.buffer && a.offset < skipped->offset + skipped->bytes &&
              skipped->offset < a.end())
            from = skipped->src_logical;
          const auto& inst = st.instances[static_cast<std::size_t>(from)][a.buffer];
          nl.accesses.push_back(ResolvedAccess{a.buffer, inst.valid() ? &inst : nullptr,
                                               static_cast<std::size_t>(a.offset), static_cast<std::size_t>(a.bytes),
                                               a.mode});
        }
        emitter(nl);
        break;
      }
    }
  }
  for (std::size_t s = 1; s < st.streams.size(); ++s) {
    st.streams[s].record(st.events[join_event_[s]]);
    origin.wait(st.events[join_event_[s]]);
  }
  st.graph = session.end();
}

std::unique_ptr<LoweredState> Lowerer::run(std::shared_ptr<Backend> backend, const NodeEmitter& emitter) {
  plan();
  if (options_.skip_copy_for_test) {
    const auto i = *options_.skip_copy_for_test;
    STEPGRAPH_CHECK(i < copies_.size() && copies_[i].reason == CopyReason::kInput, InvalidArgument,
                    "lower: LoweringOptions::skip_copy_for_test = {}, but the lowering inserts {} copies feeding "
                    "nodes; give the index of one of them (LoweredGraph::copies())",
                    i, std::count_if(copies_.begin(), copies_.end(), [](const InsertedCopy& c) {
                      return c.reason == CopyReason::kInput;
                    }));
  }
  auto st = std::make_unique<LoweredState>();
  st->backend = std::move(backend);
  st->devices = devices_;
  allocate(*st);
  capture(*st, emitter);
  st->exec = st->graph.instantiate();
  st->buffer_bytes.reserve(graph_.buffers().size());
  for (const auto& b : graph_.buffers()) st->buffer_bytes.push_back(static_cast<std::size_t>(b.bytes));
  st->homes = homes_;
  st->final_location.resize(versions_.size());
  for (std::size_t b = 0; b < versions_.size(); ++b)
    for (const auto& [start, s] : versions_[b].segments())
      append(st->final_location[b], start, s.end - start,
             options_.final_copies == FinalCopies::kWriteBackToHome ? s.home : s.owner);
  st->copies = std::move(copies_);
  st->stats = std::move(stats_);
  st->order = order_;
  st->event_waits = waits_;
  STEPGRAPH_DEBUG(kRuntime, "lowered {} nodes onto {} logical devices: {} copies, {} cross-device waits",
                  graph_.node_count(), count_, st->copies.size(), st->event_waits);
  return st;
}

void check_communicators(const g::StepGraph& graph, const DeviceMap& devices, const LoweringOptions& options) {
  const auto count = static_cast<std::size_t>(devices.logical_count());
  STEPGRAPH_CHECK(options.communicators.size() == count, InvalidArgument,
                  "lower: collectives = kCommunicators needs one communicator per logical device ({}); {} given", count,
                  options.communicators.size());
  for (std::size_t d = 0; d < count; ++d) {
    const auto& c = options.communicators[d];
    STEPGRAPH_CHECK(
        c && c->rank() == static_cast<int>(d) && c->world_size() == static_cast<int>(count), InvalidArgument,
        "lower: communicator {} must be rank {} of a world of {} (one rank per logical device)", d, d, count);
  }
  const std::size_t es = dtype_size(options.collective_dtype);
  for (g::NodeId n = 0; n < graph.node_count(); ++n) {
    const auto& node = graph.node(n);
    if (node.kind != g::NodeKind::kCollective) continue;
    STEPGRAPH_CHECK(node.collective && node.collective->op == g::CollectiveOp::kAllReduce, InvalidArgument,
                    "lower: node {} is a {}; the lowering runs AllReduce collectives only", node_label(graph, n),
                    node.collective ? g::to_string(node.collective->op) : std::string_view("collective"));
    STEPGRAPH_CHECK(!node.accesses.empty() && node.accesses.size() % count == 0, InvalidArgument,
                    "lower: collective node {} has {} accesses; with {} logical devices it needs one equal group per "
                    "device (rank d reduces group d: graphs::replicate_data_parallel makes them)",
                    node_label(graph, n), node.accesses.size(), count);
    for (const auto& a : node.accesses)
      STEPGRAPH_CHECK(a.mode == g::AccessMode::kReadWrite && a.bytes % es == 0 && a.offset % es == 0, InvalidArgument,
                      "lower: collective node {} must read and write whole {} elements of each buffer it reduces",
                      node_label(graph, n), to_string(options.collective_dtype));
  }
}

void check_common(const g::StepGraph& graph, const std::shared_ptr<Backend>& backend, const DeviceMap& devices,
                  const NodeEmitter& emitter, const LoweringOptions& options) {
  STEPGRAPH_CHECK(graph.origin() != g::GraphOrigin::kRawCudaGraph, InvalidArgument,
                  "lower: the graph's origin is '{}': a raw CUDA graph carries no buffers, so it cannot be placed "
                  "or lowered; build it with the builder or capture it with the annotated launch API",
                  g::to_string(graph.origin()));
  STEPGRAPH_CHECK(backend != nullptr, InvalidArgument, "lower: the backend is null; give Backend::create(...)");
  STEPGRAPH_CHECK(static_cast<bool>(emitter), InvalidArgument,
                  "lower: the node emitter is empty; give a function that launches each node's work");
  STEPGRAPH_CHECK(devices.logical_count() >= 1 && devices.logical_count() <= kMaxLogicalDevices, InvalidArgument,
                  "lower: the DeviceMap has {} logical devices; give between 1 and {}", devices.logical_count(),
                  kMaxLogicalDevices);
  for (int d = 0; d < devices.logical_count(); ++d) {
    const int b = devices.backend_device(d);
    STEPGRAPH_CHECK(b >= 0 && b < backend->device_count(), InvalidArgument,
                    "lower: DeviceMap maps logical device {} to backend device {}, but the {} backend has {} "
                    "devices; map it to an existing device (host: raise BackendOptions::host_devices)",
                    d, b, backend->name(), backend->device_count());
  }
  g::validate(graph, g::ValidateOptions{options.races});
}

}  // namespace

// ------------------------------------------------------------------ entry points

LoweredGraph lower(const g::StepGraph& graph, const g::Placement& placement, std::shared_ptr<Backend> backend,
                   const DeviceMap& devices, NodeEmitter emitter, const LoweringOptions& options) {
  check_common(graph, backend, devices, emitter, options);
  STEPGRAPH_CHECK(placement.nodes.size() == graph.node_count(), InvalidArgument,
                  "lower: the placement has {} nodes and the graph {}: {} unplaced; place this graph with "
                  "graphs::place",
                  placement.nodes.size(), graph.node_count(),
                  placement.nodes.size() < graph.node_count()
                      ? fmt::format("node {} is", node_label(graph, static_cast<g::NodeId>(placement.nodes.size())))
                      : std::string("the placement is of another graph, nothing is"));
  std::vector<int> logical(graph.node_count());
  for (g::NodeId n = 0; n < graph.node_count(); ++n) logical[n] = logical_of(graph, placement, n, devices, options);
  const bool gangs = options.collectives == CollectiveLowering::kCommunicators;
  if (gangs) check_communicators(graph, devices, options);
  auto orders = device_orders(graph, placement, logical, devices.logical_count(), gangs);
  auto order = emission_order(graph, placement, orders);
  Lowerer lw(graph, devices, options, std::move(logical), std::move(order));
  return LoweredGraph(lw.run(std::move(backend), emitter));
}

LoweredGraph lower_single_device(const g::StepGraph& graph, std::shared_ptr<Backend> backend, int backend_device,
                                 NodeEmitter emitter, const LoweringOptions& options) {
  const DeviceMap devices({backend_device});
  check_common(graph, backend, devices, emitter, options);
  STEPGRAPH_CHECK(!options.skip_copy_for_test, InvalidArgument,
                  "lower_single_device: skip_copy_for_test is set, but a single-device lowering inserts no copies");
  std::vector<int> logical(graph.node_count(), 0);
  Lowerer lw(graph, devices, options, std::move(logical), g::topological_order(graph));
  return LoweredGraph(lw.run(std::move(backend), emitter));
}

// ------------------------------------------------------------------ LoweredGraph

LoweredGraph::LoweredGraph() = default;
LoweredGraph::LoweredGraph(std::unique_ptr<detail::LoweredState> state) : state_(std::move(state)) {}
LoweredGraph::LoweredGraph(LoweredGraph&& other) noexcept = default;

LoweredGraph& LoweredGraph::operator=(LoweredGraph&& other) noexcept {
  if (this != &other) {
    LoweredGraph old(std::move(*this));  // waits for this one's runs, then releases it
    state_ = std::move(other.state_);
  }
  return *this;
}

LoweredGraph::~LoweredGraph() {
  if (!state_ || state_->runs == 0) return;
  try {
    state_->streams[0].synchronize();
  } catch (const std::exception& e) {
    STEPGRAPH_WARN(kRuntime, "LoweredGraph: a run failed while the graph was destroyed: {}", e.what());
  }
}

detail::LoweredState& LoweredGraph::state() const {
  STEPGRAPH_CHECK(state_ != nullptr, InvalidState,
                  "LoweredGraph: the handle is empty (moved from or default-made); use the one lower() returned");
  return *state_;
}

namespace {
void check_buffer(const LoweredState& st, g::BufferId buffer, const char* what) {
  STEPGRAPH_CHECK(buffer < st.buffer_bytes.size(), InvalidArgument,
                  "LoweredGraph::{}: buffer id {} is not in the graph ({} buffers)", what, buffer,
                  st.buffer_bytes.size());
  STEPGRAPH_CHECK(st.buffer_bytes[buffer] > 0, InvalidArgument,
                  "LoweredGraph::{}: buffer id {} has zero bytes and no instance", what, buffer);
}
}  // namespace

void LoweredGraph::upload(g::BufferId buffer, std::span<const std::byte> bytes) {
  auto& st = state();
  check_buffer(st, buffer, "upload");
  STEPGRAPH_CHECK(bytes.size() == st.buffer_bytes[buffer], InvalidArgument,
                  "LoweredGraph::upload: buffer id {} has {} bytes, {} were given; give the whole buffer", buffer,
                  st.buffer_bytes[buffer], bytes.size());
  auto pinned = st.backend->allocate_pinned(bytes.size());
  std::memcpy(pinned.host_data(), bytes.data(), bytes.size());
  const StreamRef origin = st.streams[0].ref();  // after every launched run
  for (const auto& h : st.homes[buffer])
    origin.copy(st.instances[static_cast<std::size_t>(h.logical)][buffer].slice(h.offset, h.bytes),
                pinned.slice(h.offset, h.bytes), "lowering upload");
  origin.synchronize();
}

void LoweredGraph::fill(g::BufferId buffer, unsigned char value) {
  auto& st = state();
  check_buffer(st, buffer, "fill");
  const StreamRef origin = st.streams[0].ref();
  for (const auto& h : st.homes[buffer])
    origin.memset(st.instances[static_cast<std::size_t>(h.logical)][buffer].slice(h.offset, h.bytes), value,
                  "lowering fill");
  origin.synchronize();
}

std::vector<std::byte> LoweredGraph::read(g::BufferId buffer) {
  auto& st = state();
  check_buffer(st, buffer, "read");
  auto pinned = st.backend->allocate_pinned(st.buffer_bytes[buffer]);
  const StreamRef origin = st.streams[0].ref();
  for (const auto& p : st.runs == 0 ? st.homes[buffer] : st.final_location[buffer])
    origin.copy(pinned.slice(p.offset, p.bytes),
                st.instances[static_cast<std::size_t>(p.logical)][buffer].slice(p.offset, p.bytes), "lowering read");
  origin.synchronize();
  const auto* b = static_cast<const std::byte*>(pinned.host_data());
  return {b, b + st.buffer_bytes[buffer]};
}

void LoweredGraph::launch() {
  auto& st = state();
  st.exec.launch(st.streams[0].ref());
  ++st.runs;
}
void LoweredGraph::synchronize() {
  state().streams[0].synchronize();
}
void LoweredGraph::run() {
  launch();
  synchronize();
}

const Graph& LoweredGraph::graph() const {
  return state().graph;
}
GraphInfo LoweredGraph::info() const {
  return state().graph.info();
}
const std::vector<InsertedCopy>& LoweredGraph::copies() const {
  return state().copies;
}
const std::vector<LoweredDeviceStats>& LoweredGraph::device_stats() const {
  return state().stats;
}
std::size_t LoweredGraph::event_waits() const {
  return state().event_waits;
}
const std::vector<PlacedRange>& LoweredGraph::homes(g::BufferId buffer) const {
  const auto& st = state();
  STEPGRAPH_CHECK(buffer < st.homes.size(), InvalidArgument, "LoweredGraph::homes: buffer id {} is not in the graph",
                  buffer);
  return st.homes[buffer];
}
const Buffer* LoweredGraph::instance(int logical, g::BufferId buffer) const {
  const auto& st = state();
  STEPGRAPH_CHECK(logical >= 0 && logical < st.devices.logical_count() && buffer < st.buffer_bytes.size(),
                  InvalidArgument, "LoweredGraph::instance: no logical device {} or buffer id {}", logical, buffer);
  const auto& b = st.instances[static_cast<std::size_t>(logical)][buffer];
  return b.valid() ? &b : nullptr;
}
std::size_t LoweredGraph::copy_stream_count() const {
  return state().streams.size() - static_cast<std::size_t>(state().devices.logical_count());
}

StreamRef LoweredGraph::stream(int logical) const {
  const auto& st = state();
  STEPGRAPH_CHECK(logical >= 0 && logical < st.devices.logical_count(), InvalidArgument,
                  "LoweredGraph::stream: no logical device {}", logical);
  return st.streams[static_cast<std::size_t>(logical)].ref();
}
const DeviceMap& LoweredGraph::device_map() const {
  return state().devices;
}
const std::vector<g::NodeId>& LoweredGraph::emission_order() const {
  return state().order;
}

}  // namespace stepgraph::runtime
