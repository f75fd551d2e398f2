#include <stepgraph/graphs/simulator.h>

#include <algorithm>
#include <cmath>
#include <queue>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

namespace {

enum class EventType : std::uint8_t { kNodeFinish, kDelayDone, kTransferDone };

struct Event {
  double time;
  std::uint64_t seq;
  EventType type;
  std::uint32_t id;       // node or transfer
  std::uint64_t version;  // transfer version for kTransferDone
  bool operator>(const Event& o) const { return time != o.time ? time > o.time : seq > o.seq; }
};

struct Transfer {
  std::size_t src, dst;
  NodeId node;  // destination node
  double remaining;  // bytes, as of `last`
  double rate = 0;   // bytes per µs since `last`
  double last = 0;
  double begin_flow = 0;
  std::uint64_t version = 0;  // bumped whenever the rate changes
  std::uint64_t stamp = 0;
};

constexpr double kByteEps = 1e-3;

}  // namespace

SimResult simulate(const StepGraph& g, const Platform& platform, const Placement& pl,
                   const SimulateOptions& options) {
  const std::size_t n = g.node_count();
  const std::size_t p = platform.size();
  const CostModel model(platform, options.cost);
  STEPGRAPH_CHECK(pl.nodes.size() == n, InvalidArgument,
                  "simulate: placement has {} nodes but the graph has {}; place this graph first", pl.nodes.size(), n);
  STEPGRAPH_CHECK(pl.device_order.size() == p, InvalidArgument,
                  "simulate: placement has {} device lists but the platform has {} devices", pl.device_order.size(),
                  p);
  const Adjacency adj(g);
  auto gang = [&](NodeId u) { return g.nodes()[u].kind == NodeKind::kCollective; };
  {
    std::vector<std::size_t> seen(n, 0);
    for (std::size_t d = 0; d < p; ++d)
      for (NodeId u : pl.device_order[d]) {
        STEPGRAPH_CHECK(u < n, InvalidArgument, "simulate: device {} lists node #{} which does not exist", d, u);
        STEPGRAPH_CHECK(gang(u) || pl.nodes[u].device == static_cast<int>(d), InvalidArgument,
                        "simulate: node '{}' is placed on device {} but listed on device {}", g.nodes()[u].name,
                        pl.nodes[u].device, d);
        ++seen[u];
      }
    for (NodeId u = 0; u < n; ++u) {
      STEPGRAPH_CHECK(gang(u) || (pl.nodes[u].device >= 0 && static_cast<std::size_t>(pl.nodes[u].device) < p),
                      InvalidArgument, "simulate: node '{}' is placed on device {} which does not exist (0..{})",
                      g.nodes()[u].name, pl.nodes[u].device, p - 1);
      STEPGRAPH_CHECK(seen[u] == (gang(u) ? p : 1), InvalidArgument,
                      "simulate: node '{}' appears {} times in the device lists; expected {}", g.nodes()[u].name,
                      seen[u], gang(u) ? p : 1);
    }
  }

  SimResult res;
  res.nodes.assign(n, {});
  res.busy_us.assign(p, 0.0);
  std::vector<std::size_t> pending(n);
  for (NodeId u = 0; u < n; ++u) pending[u] = adj.in_degree(u) * (gang(u) ? p : 1);
  std::vector<std::size_t> head(p, 0);
  std::vector<bool> busy(p, false);
  std::vector<bool> started(n, false);
  // Sized up front: one transfer per cross-device edge (per device for an
  // edge into a gang node); at most one pending event per node, transfer and
  // link check.
  std::size_t max_transfers = 0;
  for (NodeId u = 0; u < n; ++u) max_transfers += adj.in_degree(u) * (gang(u) ? p : 1);
  std::vector<Transfer> transfers;
  transfers.reserve(max_transfers);
  // Note [Shared links in the simulator]
  // A resource is a directed device pair's private link (index src * p +
  // dst) or one of the platform's shared links (p² + index); a transfer
  // crosses its pair's route (Platform::route) or else its private link.
  // Each resource divides its bandwidth equally among the transfers on it;
  // a transfer flows at its smallest share (the bottleneck share; unused
  // share is not redistributed). Whenever a transfer starts or ends, the
  // transfers on its resources are settled and re-timed.
  const std::size_t private_links = p * p;
  const auto& shared = platform.shared_links();
  std::vector<std::vector<std::uint32_t>> on_resource(private_links + shared.size());
  auto resource_gbps = [&](std::size_t r) {
    return r < private_links ? platform.link(r / p, r % p).bandwidth_gbps : shared[r - private_links].bandwidth_gbps;
  };
  std::vector<std::size_t> route_buf;
  auto resources_of = [&](const Transfer& t) -> const std::vector<std::size_t>& {
    route_buf.clear();
    const auto& route = platform.route(t.src, t.dst);
    if (route.empty()) {
      route_buf.push_back(t.src * p + t.dst);
    } else {
      for (auto l : route) route_buf.push_back(private_links + l);
    }
    return route_buf;
  };
  std::vector<Event> event_storage;
  event_storage.reserve(n + 64);
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q(std::greater<>{}, std::move(event_storage));
  std::uint64_t seq = 0;
  double now = 0;
  std::size_t finished = 0;
  struct FlowSpan {
    std::size_t src, dst;
    double begin, end;
    NodeId node;
  };
  std::vector<FlowSpan> flows;
  const bool tracing = options.trace != TraceOutput::kNone;

  auto push = [&](double t, EventType type, std::uint32_t id, std::uint64_t version = 0) {
    q.push(Event{t, seq++, type, id, version});
  };
  auto duration = [&](NodeId u) {
    return gang(u) ? model.node_us(g.nodes()[u], 0)
                   : model.node_us(g.nodes()[u], static_cast<std::size_t>(pl.nodes[u].device));
  };
  // Note [Device dispatch]
  // kStrict: a device runs exactly its device_order list; a node whose inputs
  // are late blocks everything behind it. kReadyFirst (default): a device
  // runs, among its nodes whose inputs have arrived, the one earliest in its
  // list — what a lowered per-device graph does, where only edges order
  // work. A gang node is taken by each device when it is the first ready one;
  // the device then idles until every device has taken it.
  const bool strict = options.dispatch == DeviceDispatch::kStrict;
  // Priority of node u on device d: its index in d's list.
  std::vector<std::uint32_t> rank_on(n, 0);
  std::vector<std::vector<std::pair<NodeId, std::uint32_t>>> gang_rank(p);
  for (std::size_t d = 0; d < p; ++d)
    for (std::uint32_t i = 0; i < pl.device_order[d].size(); ++i) {
      const NodeId u = pl.device_order[d][i];
      if (gang(u)) {
        gang_rank[d].emplace_back(u, i);
      } else {
        rank_on[u] = i;
      }
    }
  for (auto& v : gang_rank) std::sort(v.begin(), v.end());
  auto rank_of = [&](std::size_t d, NodeId u) -> std::uint32_t {
    if (!gang(u)) return rank_on[u];
    auto it = std::lower_bound(gang_rank[d].begin(), gang_rank[d].end(), std::pair<NodeId, std::uint32_t>{u, 0});
    return it->second;
  };
  using Ready = std::pair<std::uint32_t, NodeId>;
  using ReadyQueue = std::priority_queue<Ready, std::vector<Ready>, std::greater<>>;
  std::vector<ReadyQueue> ready(p);       // non-gang nodes whose inputs arrived
  std::vector<ReadyQueue> ready_gang(p);  // gang nodes whose inputs arrived
  // A gang node is a barrier in list order: a device takes it only once
  // every node listed before it there has started (else a device could sit
  // in a collective while work it owes the others waits behind it).
  std::vector<std::size_t> first_unstarted(p, 0);
  std::vector<NodeId> waiting(p, kNoNode);  // gang node a device has taken
  std::vector<std::size_t> gang_takers(n, 0);

  auto start_node = [&](NodeId u, std::size_t d) {
    started[u] = true;
    const double dur = duration(u);
    res.nodes[u] = ScheduledNode{gang(u) ? kAllDevices : static_cast<int>(d), now, now + dur};
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
    if (!gang(u)) {
      busy[d] = true;
      start_node(u, d);
      return;
    }
    waiting[d] = u;
    if (++gang_takers[u] < p) return;
    for (std::size_t e = 0; e < p; ++e) {
      waiting[e] = kNoNode;
      busy[e] = true;
    }
    start_node(u, d);
  };
  auto wake = [&](NodeId u) {
    if (gang(u)) {
      for (std::size_t e = 0; e < p; ++e) try_start(e);
    } else {
      try_start(static_cast<std::size_t>(pl.nodes[u].device));
    }
  };
  auto make_ready = [&](NodeId u) {
    if (!strict) {
      if (gang(u)) {
        for (std::size_t e = 0; e < p; ++e) ready_gang[e].emplace(rank_of(e, u), u);
      } else {
        const auto d = static_cast<std::size_t>(pl.nodes[u].device);
        ready[d].emplace(rank_on[u], u);
      }
    }
    wake(u);
  };
  std::uint64_t epoch = 0;
  std::vector<std::uint32_t> touched;
  // Settles and re-times every transfer on `resources` (a copy: the
  // caller's list may be route_buf, which resources_of reuses).
  auto retime = [&](std::vector<std::size_t> resources) {
    ++epoch;
    touched.clear();
    for (auto r : resources)
      for (auto id : on_resource[r])
        if (transfers[id].stamp != epoch) {
          transfers[id].stamp = epoch;
          touched.push_back(id);
        }
    for (auto id : touched) {
      Transfer& t = transfers[id];
      t.remaining = std::max(0.0, t.remaining - t.rate * (now - t.last));
      t.last = now;
      double r = INFINITY;
      for (auto res_id : resources_of(t))
        r = std::min(r, resource_gbps(res_id) * 1e3 / static_cast<double>(on_resource[res_id].size()));
      t.rate = r;
      ++t.version;
      push(now + t.remaining / r, EventType::kTransferDone, id, t.version);
    }
  };
  auto arrive = [&](NodeId v) {
    --pending[v];
    if (pending[v] == 0) make_ready(v);
  };

  for (NodeId u = 0; u < n; ++u)
    if (pending[u] == 0 && !strict) make_ready(u);
  for (std::size_t d = 0; d < p; ++d) try_start(d);
  while (!q.empty()) {
    const Event ev = q.top();
    q.pop();
    now = ev.time;
    switch (ev.type) {
      case EventType::kNodeFinish: {
        const NodeId u = ev.id;
        ++finished;
        const double dur = res.nodes[u].finish_us - res.nodes[u].start_us;
        if (gang(u)) {
          for (std::size_t e = 0; e < p; ++e) {
            busy[e] = false;
            ++head[e];
            res.busy_us[e] += dur;
          }
        } else {
          const auto d = static_cast<std::size_t>(pl.nodes[u].device);
          busy[d] = false;
          ++head[d];
          res.busy_us[d] += dur;
        }
        for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a) {
          const NodeId v = a->node;
          auto send = [&](std::size_t to) {
            if (gang(u) || static_cast<std::size_t>(pl.nodes[u].device) == to) {
              arrive(v);
              return;
            }
            const auto from = static_cast<std::size_t>(pl.nodes[u].device);
            // Into a gang node only the dependency crosses devices: the
            // collective's own cost moves its bytes.
            const std::uint64_t bytes = gang(v) ? 0 : a->bytes;
            const double delay =
                model.options().sync_latency_us + (bytes > 0 ? platform.link(from, to).latency_us : 0.0);
            transfers.push_back(Transfer{from, to, v, static_cast<double>(bytes)});
            ++res.transfers;
            res.transfer_bytes += static_cast<double>(bytes);
            push(now + delay, EventType::kDelayDone, static_cast<std::uint32_t>(transfers.size() - 1));
          };
          if (gang(v)) {
            for (std::size_t e = 0; e < p; ++e) send(e);
          } else {
            send(static_cast<std::size_t>(pl.nodes[v].device));
          }
        }
        wake(u);
        if (!gang(u)) try_start(static_cast<std::size_t>(pl.nodes[u].device));
        break;
      }
      case EventType::kDelayDone: {
        Transfer& t = transfers[ev.id];
        if (t.remaining <= kByteEps) {
          arrive(t.node);
          break;
        }
        t.begin_flow = now;
        t.last = now;
        t.rate = 0;
        const auto resources = resources_of(t);
        for (auto r : resources) on_resource[r].push_back(ev.id);
        retime(resources);
        break;
      }
      case EventType::kTransferDone: {
        Transfer& t = transfers[ev.id];
        if (t.version != ev.version) break;  // re-timed since
        t.remaining = 0;
        t.rate = 0;
        const auto resources = resources_of(t);
        for (auto r : resources) std::erase(on_resource[r], ev.id);
        retime(resources);
        if (tracing) flows.push_back(FlowSpan{t.src, t.dst, t.begin_flow, now, t.node});
        arrive(t.node);
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
  for (std::size_t d = 0; d < p; ++d)
    res.utilization[d] = res.makespan_us > 0 ? res.busy_us[d] / res.makespan_us : 0.0;

  if (tracing) {
    nlohmann::json events = nlohmann::json::array();
    for (std::size_t d = 0; d < p; ++d) {
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 0}, {"tid", d},
                        {"args", {{"name", platform.device(d).name}}}});
    }
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 0}, {"args", {{"name", "devices"}}}});
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"args", {{"name", "links"}}}});
    for (NodeId u = 0; u < n; ++u) {
      const auto& s = res.nodes[u];
      const auto& node = g.nodes()[u];
      auto one = [&](std::size_t d) {
        events.push_back({{"ph", "X"}, {"name", node.name}, {"cat", std::string(to_string(node.kind))},
                          {"pid", 0}, {"tid", d}, {"ts", s.start_us}, {"dur", s.finish_us - s.start_us}});
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
        events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", li},
                          {"args", {{"name", platform.device(f.src).name + "->" + platform.device(f.dst).name}}}});
      }
      events.push_back({{"ph", "X"}, {"name", "to " + g.nodes()[f.node].name}, {"cat", "transfer"}, {"pid", 1},
                        {"tid", li}, {"ts", f.begin}, {"dur", f.end - f.begin}});
    }
    nlohmann::json doc{{"traceEvents", events}, {"displayTimeUnit", "ns"},
                       {"otherData", {{"makespan_us", res.makespan_us}, {"generator", "stepgraph simulate"}}}};
    res.trace_json = doc.dump();
  }
  return res;
}

}  // namespace stepgraph::graphs
