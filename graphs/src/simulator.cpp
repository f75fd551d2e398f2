#include <stepgraph/graphs/simulator.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include <fmt/format.h>
#include <stepgraph/core/error.h>
#include <nlohmann/json.hpp>

namespace stepgraph::graphs {

namespace {

enum class EventType : std::uint8_t { kNodeFinish, kDelayDone };

struct Event {
  double time;
  std::uint32_t seq;
  std::uint32_t id;  // node or transfer
  EventType type;
  bool operator>(const Event& o) const { return time != o.time ? time > o.time : seq > o.seq; }
};

struct Transfer {
  std::size_t src, dst;
  NodeId node;  // destination node
  double bytes;
  double begin_flow = 0;
};

// A min-heap on a vector that keeps its capacity between runs (the same
// operations as std::priority_queue with std::greater, so the same order).
template <typename T>
class MinHeap {
 public:
  void clear() noexcept { v_.clear(); }
  [[nodiscard]] bool empty() const noexcept { return v_.empty(); }
  [[nodiscard]] const T& top() const noexcept { return v_.front(); }
  void push(const T& x) {
    v_.push_back(x);
    std::push_heap(v_.begin(), v_.end(), std::greater<>{});
  }
  void pop() {
    std::pop_heap(v_.begin(), v_.end(), std::greater<>{});
    v_.pop_back();
  }

 private:
  std::vector<T> v_;
};

// The pending done event of each active pair group, at most one per group:
// a min-heap over groups by (time, seq), updated in place when a group is
// re-timed (instead of a new event in the main queue and a stale one left
// behind). seq comes from the main queue's counter, so the two queues
// together pop events in the order one queue would.
class GroupQueue {
 public:
  void reset(std::size_t groups) {
    heap_.clear();
    pos_.assign(groups, kAbsent);
    key_.resize(groups);
  }
  [[nodiscard]] bool empty() const noexcept { return heap_.empty(); }
  [[nodiscard]] std::uint32_t top() const noexcept { return heap_.front(); }
  [[nodiscard]] const std::pair<double, std::uint32_t>& key(std::uint32_t g) const noexcept { return key_[g]; }
  // Inserts group g or moves it to its new (time, seq).
  void set(std::uint32_t g, double time, std::uint32_t seq) {
    key_[g] = {time, seq};
    if (pos_[g] == kAbsent) {
      pos_[g] = static_cast<std::uint32_t>(heap_.size());
      heap_.push_back(g);
    }
    sift_down(sift_up(pos_[g]));
  }
  void erase(std::uint32_t g) {
    const std::uint32_t i = pos_[g];
    if (i == kAbsent) return;
    pos_[g] = kAbsent;
    const std::uint32_t last = heap_.back();
    heap_.pop_back();
    if (last == g) return;
    heap_[i] = last;
    pos_[last] = i;
    sift_down(sift_up(i));
  }

 private:
  static constexpr std::uint32_t kAbsent = 0xffffffffu;
  [[nodiscard]] bool before(std::uint32_t a, std::uint32_t b) const noexcept { return key_[a] < key_[b]; }
  void place(std::uint32_t i, std::uint32_t g) {
    heap_[i] = g;
    pos_[g] = i;
  }
  std::uint32_t sift_up(std::uint32_t i) {
    const std::uint32_t g = heap_[i];
    while (i > 0) {
      const std::uint32_t parent = (i - 1) / 2;
      if (!before(g, heap_[parent])) break;
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, g);
    return i;
  }
  void sift_down(std::uint32_t i) {
    const std::uint32_t g = heap_[i];
    const auto size = static_cast<std::uint32_t>(heap_.size());
    for (;;) {
      std::uint32_t child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && before(heap_[child + 1], heap_[child])) ++child;
      if (!before(heap_[child], g)) break;
      place(i, heap_[child]);
      i = child;
    }
    place(i, g);
  }
  std::vector<std::uint32_t> heap_;
  std::vector<std::uint32_t> pos_;
  std::vector<std::pair<double, std::uint32_t>> key_;
};

// All transfers between one ordered device pair cross the same links, so
// they always flow at the same rate: a group serves them with a virtual
// clock (bytes served per transfer so far) and finishes them in order of
// their finishing clock value (Note [Shared links in the simulator]).
struct PairGroup {
  double served = 0;  // virtual bytes per active transfer, as of `last`
  double last = 0;
  double rate = 0;  // bytes per µs per transfer
  std::size_t active = 0;
  using Due = std::pair<double, std::uint32_t>;  // (served value at which it is done, transfer)
  MinHeap<Due> due;
};

constexpr double kByteEps = 1e-3;

}  // namespace

// Note [Prepared simulator]
// The search (search.cpp) simulates thousands of placements of one graph on
// one platform. Everything that depends only on those two -- the adjacency,
// each node's duration on each device, the routes and link rates, the
// collective ring -- is built once by the constructor; run() reuses its
// buffers. run() makes the same events in the same order as a fresh
// simulate(), so results are identical.
struct Simulator::Impl {
  const StepGraph& g;
  const Platform& platform;
  SimulateOptions options;
  CostModel model;
  Adjacency adj;
  std::size_t n, p;
  std::vector<char> gang;           // per node: a collective (gang node)
  std::vector<double> duration;     // node * p + device
  std::vector<std::size_t> inputs;  // pending inputs at the start
  std::size_t max_transfers = 0;
  // Note [Shared links in the simulator]
  // A resource is a directed device pair's private link (index src * p +
  // dst) or one of the platform's shared links (p² + index); a transfer
  // crosses its pair's route (Platform::route) or else its private link.
  // Each resource divides its bandwidth equally among the transfers on it;
  // a transfer flows at its smallest share (the bottleneck share; unused
  // share is not redistributed). Transfers of one pair share their route
  // and so their rate: each pair is a group with a virtual clock, and an
  // event re-times only the active groups that cross a resource whose count
  // changed -- independent of how many transfers are in flight.
  std::size_t resource_count;
  std::vector<std::vector<std::size_t>> route_of;  // pair -> resources
  std::vector<double> resource_rate;               // GB/s x 1e3: bytes per µs
  std::vector<double> delay_with_bytes;            // pair: sync + link latency

  // Buffers of one run.
  std::vector<std::size_t> seen, pending, head, first_unstarted, gang_takers;
  std::vector<char> busy, started;
  std::vector<NodeId> waiting;
  std::vector<Transfer> transfers;
  std::vector<std::size_t> on_resource;
  std::vector<double> share;                        // per resource: rate / on_resource, each active transfer's share
  std::vector<std::vector<std::size_t>> active_on;  // resource -> active groups crossing it, ascending
  std::vector<PairGroup> groups;
  MinHeap<Event> q;
  GroupQueue group_events;  // each active pair group's next transfer done
  std::vector<std::uint32_t> rank_on;
  std::vector<std::vector<std::pair<NodeId, std::uint32_t>>> gang_rank;
  using Ready = std::pair<std::uint32_t, NodeId>;
  std::vector<MinHeap<Ready>> ready, ready_gang;
  std::vector<std::uint64_t> stamp;
  std::vector<std::size_t> touched;
  std::vector<std::uint32_t> done;

  Impl(const StepGraph& graph, const Platform& plat, const SimulateOptions& opts)
      : g(graph),
        platform(plat),
        options(opts),
        model(plat, opts.cost),
        adj(graph),
        n(graph.node_count()),
        p(plat.size()),
        resource_count(p * p + plat.shared_links().size()) {
    gang.resize(n);
    duration.resize(n * p);
    inputs.resize(n);
    for (NodeId u = 0; u < n; ++u) {
      const Node& node = g.nodes()[u];
      gang[u] = node.kind == NodeKind::kCollective;
      for (std::size_t d = 0; d < p; ++d) duration[u * p + d] = model.node_us(node, gang[u] ? 0 : d);
      inputs[u] = adj.in_degree(u) * (gang[u] ? p : 1);
      max_transfers += inputs[u];
    }
    const std::size_t private_links = p * p;
    const auto& shared = platform.shared_links();
    route_of.resize(p * p);
    delay_with_bytes.resize(p * p);
    for (std::size_t a = 0; a < p; ++a)
      for (std::size_t b = 0; b < p; ++b) {
        if (a == b) continue;
        const std::size_t pair = a * p + b;
        delay_with_bytes[pair] = model.options().sync_latency_us + platform.link(a, b).latency_us;
        const auto& route = platform.route(a, b);
        if (route.empty()) {
          route_of[pair].push_back(pair);
        } else {
          for (auto l : route) route_of[pair].push_back(private_links + l);
        }
      }
    resource_rate.resize(resource_count);
    for (std::size_t r = 0; r < resource_count; ++r)
      resource_rate[r] =
          (r < private_links ? platform.link(r / p, r % p).bandwidth_gbps : shared[r - private_links].bandwidth_gbps) *
          1e3;
    seen.resize(n);
    pending.resize(n);
    started.resize(n);
    gang_takers.resize(n);
    rank_on.resize(n);
    head.resize(p);
    first_unstarted.resize(p);
    busy.resize(p);
    waiting.resize(p);
    gang_rank.resize(p);
    ready.resize(p);
    ready_gang.resize(p);
    on_resource.resize(resource_count);
    share.resize(resource_count);
    active_on.resize(resource_count);
    groups.resize(p * p);
    stamp.resize(p * p);
    transfers.reserve(max_transfers);
  }

  SimResult run(const Placement& pl);
};

Simulator::Simulator(const StepGraph& graph, const Platform& platform, const SimulateOptions& options)
    : impl_(std::make_unique<Impl>(graph, platform, options)) {}
Simulator::~Simulator() = default;
Simulator::Simulator(Simulator&&) noexcept = default;
Simulator& Simulator::operator=(Simulator&&) noexcept = default;

SimResult Simulator::run(const Placement& placement) {
  return impl_->run(placement);
}

SimResult simulate(const StepGraph& g, const Platform& platform, const Placement& pl, const SimulateOptions& options) {
  return Simulator(g, platform, options).run(pl);
}

SimResult Simulator::Impl::run(const Placement& pl) {
  auto is_gang = [&](NodeId u) { return gang[u] != 0; };
  STEPGRAPH_CHECK(pl.nodes.size() == n, InvalidArgument,
                  "simulate: placement has {} nodes but the graph has {}; place this graph first", pl.nodes.size(), n);
  STEPGRAPH_CHECK(pl.device_order.size() == p, InvalidArgument,
                  "simulate: placement has {} device lists but the platform has {} devices", pl.device_order.size(), p);
  {
    std::fill(seen.begin(), seen.end(), 0);
    for (std::size_t d = 0; d < p; ++d)
      for (NodeId u : pl.device_order[d]) {
        STEPGRAPH_CHECK(u < n, InvalidArgument, "simulate: device {} lists node #{} which does not exist", d, u);
        STEPGRAPH_CHECK(is_gang(u) || pl.nodes[u].device == static_cast<int>(d), InvalidArgument,
                        "simulate: node '{}' is placed on device {} but listed on device {}", g.nodes()[u].name,
                        pl.nodes[u].device, d);
        ++seen[u];
      }
    for (NodeId u = 0; u < n; ++u) {
      STEPGRAPH_CHECK(is_gang(u) || (pl.nodes[u].device >= 0 && static_cast<std::size_t>(pl.nodes[u].device) < p),
                      InvalidArgument, "simulate: node '{}' is placed on device {} which does not exist (0..{})",
                      g.nodes()[u].name, pl.nodes[u].device, p - 1);
      STEPGRAPH_CHECK(seen[u] == (is_gang(u) ? p : 1), InvalidArgument,
                      "simulate: node '{}' appears {} times in the device lists; expected {}", g.nodes()[u].name,
                      seen[u], is_gang(u) ? p : 1);
    }
  }

  SimResult res;
  res.nodes.assign(n, {});
  res.busy_us.assign(p, 0.0);
  std::copy(inputs.begin(), inputs.end(), pending.begin());
  std::fill(head.begin(), head.end(), 0);
  std::fill(busy.begin(), busy.end(), 0);
  std::fill(started.begin(), started.end(), 0);
  transfers.clear();
  std::fill(on_resource.begin(), on_resource.end(), 0);
  for (auto& list : active_on) list.clear();
  for (auto& grp : groups) {
    grp.served = grp.last = grp.rate = 0;
    grp.active = 0;
    grp.due.clear();
  }
  q.clear();
  group_events.reset(p * p);
  std::uint32_t seq = 0;
  double now = 0;
  std::size_t finished = 0;
  struct FlowSpan {
    std::size_t src, dst;
    double begin, end;
    NodeId node;
  };
  std::vector<FlowSpan> flows;
  const bool tracing = options.trace != TraceOutput::kNone;

  auto next_seq = [&] {
    STEPGRAPH_CHECK(seq != std::numeric_limits<std::uint32_t>::max(), InvalidState,
                    "simulate: more than 2^32 events in one run");
    return seq++;
  };
  auto push = [&](double t, EventType type, std::uint32_t id) { q.push(Event{t, next_seq(), id, type}); };
  auto duration_of = [&](NodeId u, std::size_t d) { return duration[static_cast<std::size_t>(u) * p + d]; };
  // Note [Device dispatch]
  // kStrict: a device runs exactly its device_order list; a node whose inputs
  // are late blocks everything behind it. kReadyFirst (default): a device
  // runs, among its nodes whose inputs have arrived, the one earliest in its
  // list — what a lowered per-device graph does, where only edges order
  // work. A gang node is taken by each device when it is the first ready one;
  // the device then idles until every device has taken it.
  const bool strict = options.dispatch == DeviceDispatch::kStrict;
  // Priority of node u on device d: its index in d's list.
  for (auto& v : gang_rank) v.clear();
  for (std::size_t d = 0; d < p; ++d)
    for (std::uint32_t i = 0; i < pl.device_order[d].size(); ++i) {
      const NodeId u = pl.device_order[d][i];
      if (is_gang(u)) {
        gang_rank[d].emplace_back(u, i);
      } else {
        rank_on[u] = i;
      }
    }
  for (auto& v : gang_rank) std::sort(v.begin(), v.end());
  auto rank_of = [&](std::size_t d, NodeId u) -> std::uint32_t {
    if (!is_gang(u)) return rank_on[u];
    auto it = std::lower_bound(gang_rank[d].begin(), gang_rank[d].end(), std::pair<NodeId, std::uint32_t>{u, 0});
    return it->second;
  };
  for (auto& r : ready) r.clear();       // non-gang nodes whose inputs arrived
  for (auto& r : ready_gang) r.clear();  // gang nodes whose inputs arrived
  // A gang node is a barrier in list order: a device takes it only once
  // every node listed before it there has started (else a device could sit
  // in a collective while work it owes the others waits behind it).
  std::fill(first_unstarted.begin(), first_unstarted.end(), 0);
  std::fill(waiting.begin(), waiting.end(), kNoNode);  // gang node a device has taken
  std::fill(gang_takers.begin(), gang_takers.end(), 0);

  auto start_node = [&](NodeId u, std::size_t d) {
    started[u] = 1;
    const double dur = duration_of(u, d);
    res.nodes[u] = ScheduledNode{is_gang(u) ? kAllDevices : static_cast<int>(d), now, now + dur};
    push(now + dur, EventType::kNodeFinish, u);
  };
  auto try_start = [&](std::size_t d) {
    if (busy[d] || waiting[d] != kNoNode) return;
    NodeId u = kNoNode;
    if (strict) {
      if (head[d] >= pl.device_order[d].size()) return;
      u = pl.device_order[d][head[d]];
      if (started[u] || pending[u] != 0) return;
    } else {
      auto& list = pl.device_order[d];
      while (first_unstarted[d] < list.size() && started[list[first_unstarted[d]]]) ++first_unstarted[d];
      if (!ready_gang[d].empty() && ready_gang[d].top().first == first_unstarted[d]) {
        u = ready_gang[d].top().second;
        ready_gang[d].pop();
      } else if (!ready[d].empty()) {
        u = ready[d].top().second;
        ready[d].pop();
      } else {
        return;
      }
    }
    if (!is_gang(u)) {
      busy[d] = 1;
      start_node(u, d);
      return;
    }
    waiting[d] = u;
    if (++gang_takers[u] < p) return;
    for (std::size_t e = 0; e < p; ++e) {
      waiting[e] = kNoNode;
      busy[e] = 1;
    }
    start_node(u, d);
  };
  auto wake = [&](NodeId u) {
    if (is_gang(u)) {
      for (std::size_t e = 0; e < p; ++e) try_start(e);
    } else {
      try_start(static_cast<std::size_t>(pl.nodes[u].device));
    }
  };
  auto make_ready = [&](NodeId u) {
    if (!strict) {
      if (is_gang(u)) {
        for (std::size_t e = 0; e < p; ++e) ready_gang[e].push({rank_of(e, u), u});
      } else {
        const auto d = static_cast<std::size_t>(pl.nodes[u].device);
        ready[d].push({rank_on[u], u});
      }
    }
    wake(u);
  };
  std::uint64_t epoch = 0;
  std::fill(stamp.begin(), stamp.end(), 0);
  auto settle = [&](PairGroup& grp) {
    grp.served += grp.rate * (now - grp.last);
    grp.last = now;
  };
  // The groups whose rate may change when the counts on pair `changed`'s
  // resources change: `changed` itself and every active group crossing one
  // of them, in the order of the resources on its route and, per resource,
  // ascending (the order their events are pushed in). An inactive group
  // has no pending event and rate 0, so leaving it out changes nothing.
  auto settle_around = [&](std::size_t changed) {
    ++epoch;
    touched.clear();
    for (auto r : route_of[changed])
      for (auto grp : active_on[r])
        if (stamp[grp] != epoch) {
          stamp[grp] = epoch;
          touched.push_back(grp);
        }
    for (auto grp : touched) settle(groups[grp]);
  };
  // `changed` is the group whose own transfers changed: it always gets a new
  // event. Another group whose rate stayed the same keeps its pending event,
  // which is still exact (same due transfer, same rate).
  auto retime_touched = [&](std::size_t changed) {
    for (auto gi : touched) {
      PairGroup& grp = groups[gi];
      if (grp.active == 0) {
        group_events.erase(static_cast<std::uint32_t>(gi));
        grp.rate = 0;
        continue;
      }
      double r = INFINITY;
      for (auto res_i : route_of[gi]) r = std::min(r, share[res_i]);
      if (gi != changed && r == grp.rate) continue;
      grp.rate = r;
      const double left = std::max(0.0, grp.due.top().first - grp.served);
      group_events.set(static_cast<std::uint32_t>(gi), now + left / r, next_seq());
    }
  };
  auto activate = [&](std::size_t pair) {
    for (auto r : route_of[pair]) {
      auto& list = active_on[r];
      list.insert(std::lower_bound(list.begin(), list.end(), pair), pair);
    }
  };
  auto deactivate = [&](std::size_t pair) {
    for (auto r : route_of[pair]) {
      auto& list = active_on[r];
      list.erase(std::lower_bound(list.begin(), list.end(), pair));
    }
  };
  auto arrive = [&](NodeId v) {
    --pending[v];
    if (pending[v] == 0) make_ready(v);
  };

  for (NodeId u = 0; u < n; ++u)
    if (pending[u] == 0 && !strict) make_ready(u);
  for (std::size_t d = 0; d < p; ++d) try_start(d);
  while (!q.empty() || !group_events.empty()) {
    // The earlier of the two queues' next events, by (time, seq).
    if (!group_events.empty() &&
        (q.empty() || group_events.key(group_events.top()) < std::pair{q.top().time, q.top().seq})) {
      const std::uint32_t pair = group_events.top();
      now = group_events.key(pair).first;
      group_events.erase(pair);
      PairGroup& grp = groups[pair];
      settle_around(pair);
      // Everything due within rounding of the clock is done: of the bytes
      // served (relative), and of the time itself — far from zero (a node
      // costing 1e15 µs) a clock tick is large, and a transfer due less
      // than two ticks away would be re-timed to this same instant forever.
      const double tick = std::nextafter(now, INFINITY) - now;
      const double eps = std::max({kByteEps, grp.served * 1e-12, 2 * tick * grp.rate});
      done.clear();
      while (!grp.due.empty() && grp.due.top().first <= grp.served + eps) {
        done.push_back(grp.due.top().second);
        grp.due.pop();
      }
      grp.active -= done.size();
      for (auto r : route_of[pair]) {
        on_resource[r] -= done.size();
        share[r] = resource_rate[r] / static_cast<double>(on_resource[r]);  // inf at 0: no group reads it then
      }
      retime_touched(pair);
      if (grp.active == 0) deactivate(pair);
      for (auto id : done) {
        const Transfer& t = transfers[id];
        if (tracing) flows.push_back(FlowSpan{t.src, t.dst, t.begin_flow, now, t.node});
        arrive(t.node);
      }
      continue;
    }
    const Event ev = q.top();
    q.pop();
    now = ev.time;
    switch (ev.type) {
      case EventType::kNodeFinish: {
        const NodeId u = ev.id;
        ++finished;
        const double dur = res.nodes[u].finish_us - res.nodes[u].start_us;
        if (is_gang(u)) {
          for (std::size_t e = 0; e < p; ++e) {
            busy[e] = 0;
            ++head[e];
            res.busy_us[e] += dur;
          }
        } else {
          const auto d = static_cast<std::size_t>(pl.nodes[u].device);
          busy[d] = 0;
          ++head[d];
          res.busy_us[d] += dur;
        }
        for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a) {
          const NodeId v = a->node;
          auto send = [&](std::size_t to) {
            if (is_gang(u) || static_cast<std::size_t>(pl.nodes[u].device) == to) {
              arrive(v);
              return;
            }
            const auto from = static_cast<std::size_t>(pl.nodes[u].device);
            // Into a gang node only the dependency crosses devices: the
            // collective's own cost moves its bytes.
            const std::uint64_t bytes = is_gang(v) ? 0 : a->bytes;
            const double delay = bytes > 0 ? delay_with_bytes[from * p + to] : model.options().sync_latency_us;
            transfers.push_back(Transfer{from, to, v, static_cast<double>(bytes)});
            ++res.transfers;
            res.transfer_bytes += static_cast<double>(bytes);
            push(now + delay, EventType::kDelayDone, static_cast<std::uint32_t>(transfers.size() - 1));
          };
          if (is_gang(v)) {
            for (std::size_t e = 0; e < p; ++e) send(e);
          } else {
            send(static_cast<std::size_t>(pl.nodes[v].device));
          }
        }
        wake(u);
        if (!is_gang(u)) try_start(static_cast<std::size_t>(pl.nodes[u].device));
        break;
      }
      case EventType::kDelayDone: {
        Transfer& t = transfers[ev.id];
        if (t.bytes <= kByteEps) {
          arrive(t.node);
          break;
        }
        t.begin_flow = now;
        const std::size_t pair = t.src * p + t.dst;
        PairGroup& grp = groups[pair];
        if (grp.active == 0) activate(pair);
        settle_around(pair);
        grp.due.push({grp.served + t.bytes, ev.id});
        ++grp.active;
        for (auto r : route_of[pair]) {
          ++on_resource[r];
          share[r] = resource_rate[r] / static_cast<double>(on_resource[r]);
        }
        retime_touched(pair);
        break;
      }
    }
  }
  if (finished != n) {
    std::vector<std::string> stuck;
    for (std::size_t d = 0; d < p && stuck.size() < 8; ++d)
      if (strict && head[d] < pl.device_order[d].size())
        stuck.push_back(fmt::format("device {} waits at '{}'", d, g.nodes()[pl.device_order[d][head[d]]].name));
      else if (waiting[d] != kNoNode)
        stuck.push_back(fmt::format("device {} waits for gang node '{}'", d, g.nodes()[waiting[d]].name));
    throw InvalidState(fmt::format(
        "simulate: the device orders deadlock ({} of {} nodes ran): {}; the order on each device must follow "
        "the edges",
        finished, n, fmt::join(stuck, "; ")));
  }
  for (const auto& s : res.nodes) res.makespan_us = std::max(res.makespan_us, s.finish_us);
  res.utilization.resize(p);
  for (std::size_t d = 0; d < p; ++d) res.utilization[d] = res.makespan_us > 0 ? res.busy_us[d] / res.makespan_us : 0.0;

  if (tracing) {
    nlohmann::json events = nlohmann::json::array();
    for (std::size_t d = 0; d < p; ++d) {
      events.push_back({{"ph", "M"},
                        {"name", "thread_name"},
                        {"pid", 0},
                        {"tid", d},
                        {"args", {{"name", platform.device(d).name}}}});
    }
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 0}, {"args", {{"name", "devices"}}}});
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"args", {{"name", "links"}}}});
    for (NodeId u = 0; u < n; ++u) {
      const auto& s = res.nodes[u];
      const auto& node = g.nodes()[u];
      auto one = [&](std::size_t d) {
        events.push_back({{"ph", "X"},
                          {"name", node.name},
                          {"cat", std::string(to_string(node.kind))},
                          {"pid", 0},
                          {"tid", d},
                          {"ts", s.start_us},
                          {"dur", s.finish_us - s.start_us}});
      };
      if (s.device == kAllDevices) {
        for (std::size_t d = 0; d < p; ++d) one(d);
      } else {
        one(static_cast<std::size_t>(s.device));
      }
    }
    std::vector<bool> named(p * p, false);
    for (const auto& f : flows) {
      const std::size_t li = f.src * p + f.dst;
      if (!named[li]) {
        named[li] = true;
        events.push_back({{"ph", "M"},
                          {"name", "thread_name"},
                          {"pid", 1},
                          {"tid", li},
                          {"args", {{"name", platform.device(f.src).name + "->" + platform.device(f.dst).name}}}});
      }
      events.push_back({{"ph", "X"},
                        {"name", "to " + g.nodes()[f.node].name},
                        {"cat", "transfer"},
                        {"pid", 1},
                        {"tid", li},
                        {"ts", f.begin},
                        {"dur", f.end - f.begin}});
    }
    nlohmann::json doc{{"traceEvents", events},
                       {"displayTimeUnit", "ns"},
                       {"otherData", {{"makespan_us", res.makespan_us}, {"generator", "stepgraph simulate"}}}};
    res.trace_json = doc.dump();
  }
  return res;
}

}  // namespace stepgraph::graphs
