#include <stepgraph/graphs/simulator.h>

#include <algorithm>
#include <cmath>
#include <queue>

#include <fmt/format.h>
#include <stepgraph/core/error.h>
#include <nlohmann/json.hpp>

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
  double bytes;
  double begin_flow = 0;
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
  std::uint64_t version = 0;
  using Due = std::pair<double, std::uint32_t>;  // (served value at which it is done, transfer)
  std::priority_queue<Due, std::vector<Due>, std::greater<>> due;
};

constexpr double kByteEps = 1e-3;

}  // namespace

SimResult simulate(const StepGraph& g, const Platform& platform, const Placement& pl, const SimulateOptions& options) {
  const std::size_t n = g.node_count();
  const std::size_t p = platform.size();
  const CostModel model(platform, options.cost);
  STEPGRAPH_CHECK(pl.nodes.size() == n, InvalidArgument,
                  "simulate: placement has {} nodes but the graph has {}; place this graph first", pl.nodes.size(), n);
  STEPGRAPH_CHECK(pl.device_order.size() == p, InvalidArgument,
                  "simulate: placement has {} device lists but the platform has {} devices", pl.device_order.size(), p);
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
  // share is not redistributed). Transfers of one pair share their route
  // and so their rate: each pair is a group with a virtual clock, and an
  // event re-times only the groups that cross a resource whose count
  // changed -- independent of how many transfers are in flight.
  const std::size_t private_links = p * p;
  const auto& shared = platform.shared_links();
  const std::size_t resource_count = private_links + shared.size();
  std::vector<std::vector<std::size_t>> route_of(p * p);            // pair -> resources
  std::vector<std::vector<std::size_t>> groups_on(resource_count);  // resource -> pairs crossing it
  for (std::size_t a = 0; a < p; ++a)
    for (std::size_t b = 0; b < p; ++b) {
      if (a == b) continue;
      const std::size_t g = a * p + b;
      const auto& route = platform.route(a, b);
      if (route.empty()) {
        route_of[g].push_back(g);
      } else {
        for (auto l : route) route_of[g].push_back(private_links + l);
      }
      for (auto r : route_of[g]) groups_on[r].push_back(g);
    }
  auto resource_gbps = [&](std::size_t r) {
    return r < private_links ? platform.link(r / p, r % p).bandwidth_gbps : shared[r - private_links].bandwidth_gbps;
  };
  std::vector<std::size_t> on_resource(resource_count, 0);  // active transfers per resource
  std::vector<PairGroup> groups(p * p);
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
  std::vector<std::uint64_t> stamp(p * p, 0);
  std::vector<std::size_t> touched;
  auto settle = [&](PairGroup& grp) {
    grp.served += grp.rate * (now - grp.last);
    grp.last = now;
  };
  // After the counts on pair `changed`'s resources changed: new rates and
  // next-done events for every group crossing one of them (settled first by
  // the caller, see settle_around).
  auto collect_around = [&](std::size_t changed) {
    ++epoch;
    touched.clear();
    for (auto r : route_of[changed])
      for (auto g : groups_on[r])
        if (stamp[g] != epoch) {
          stamp[g] = epoch;
          touched.push_back(g);
        }
  };
  auto settle_around = [&](std::size_t changed) {
    collect_around(changed);
    for (auto g : touched) settle(groups[g]);
  };
  // `changed` is the group whose own transfers changed: it always gets a new
  // event. Another group whose rate stayed the same keeps its pending event,
  // which is still exact (same due transfer, same rate).
  auto retime_touched = [&](std::size_t changed) {
    for (auto g : touched) {
      PairGroup& grp = groups[g];
      if (grp.active == 0) {
        ++grp.version;
        grp.rate = 0;
        continue;
      }
      double r = INFINITY;
      for (auto res : route_of[g]) r = std::min(r, resource_gbps(res) * 1e3 / static_cast<double>(on_resource[res]));
      if (g != changed && r == grp.rate) continue;
      ++grp.version;
      grp.rate = r;
      const double left = std::max(0.0, grp.due.top().first - grp.served);
      push(now + left / r, EventType::kTransferDone, static_cast<std::uint32_t>(g), grp.version);
    }
  };
  std::vector<std::uint32_t> done;  // transfers finished by one event
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
        if (t.bytes <= kByteEps) {
          arrive(t.node);
          break;
        }
        t.begin_flow = now;
        const std::size_t g = t.src * p + t.dst;
        settle_around(g);
        PairGroup& grp = groups[g];
        grp.due.emplace(grp.served + t.bytes, ev.id);
        ++grp.active;
        for (auto r : route_of[g]) ++on_resource[r];
        retime_touched(g);
        break;
      }
      case EventType::kTransferDone: {
        const std::size_t g = ev.id;
        PairGroup& grp = groups[g];
        if (grp.version != ev.version) break;  // re-timed since
        settle_around(g);
        // Everything due within rounding of the clock is done.
        const double eps = std::max(kByteEps, grp.served * 1e-12);
        done.clear();
        while (!grp.due.empty() && grp.due.top().first <= grp.served + eps) {
          done.push_back(grp.due.top().second);
          grp.due.pop();
        }
        grp.active -= done.size();
        for (auto r : route_of[g]) on_resource[r] -= done.size();
        retime_touched(g);
        for (auto id : done) {
          const Transfer& t = transfers[id];
          if (tracing) flows.push_back(FlowSpan{t.src, t.dst, t.begin_flow, now, t.node});
          arrive(t.node);
        }
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
