#include <stepgraph/graphs/simulator.h>

#include <algorithm>
#include <cmath>
#include <queue>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

namespace {

enum class EventType : std::uint8_t { kNodeFinish, kDelayDone, kLinkCheck };

struct Event {
  double time;
  std::uint64_t seq;
  EventType type;
  std::uint32_t id;       // node, transfer or link
  std::uint64_t version;  // link version for kLinkCheck
  bool operator>(const Event& o) const { return time != o.time ? time > o.time : seq > o.seq; }
};

struct Transfer {
  std::size_t src, dst;
  NodeId node;  // destination node
  double remaining;
  double begin_flow = 0;
};

struct LinkState {
  double last = 0;
  std::vector<std::uint32_t> active;
  std::uint64_t version = 0;
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
  std::vector<Transfer> transfers;
  std::vector<LinkState> links(p * p);
  std::priority_queue<Event, std::vector<Event>, std::greater<>> q;
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
  auto try_start = [&](std::size_t d) {
    if (busy[d] || head[d] >= pl.device_order[d].size()) return;
    const NodeId u = pl.device_order[d][head[d]];
    if (started[u] || pending[u] != 0) return;
    if (gang(u)) {
      for (std::size_t e = 0; e < p; ++e)
        if (busy[e] || head[e] >= pl.device_order[e].size() || pl.device_order[e][head[e]] != u) return;
      for (std::size_t e = 0; e < p; ++e) busy[e] = true;
    } else {
      busy[d] = true;
    }
    started[u] = true;
    const double dur = duration(u);
    res.nodes[u] = ScheduledNode{gang(u) ? kAllDevices : static_cast<int>(d), now, now + dur};
    push(now + dur, EventType::kNodeFinish, u);
  };
  auto wake = [&](NodeId u) {
    if (gang(u)) {
      for (std::size_t e = 0; e < p; ++e) try_start(e);
    } else {
      try_start(static_cast<std::size_t>(pl.nodes[u].device));
    }
  };
  auto rate = [&](std::size_t li, std::size_t count) {
    const Link& l = platform.link(li / p, li % p);
    return l.bandwidth_gbps * 1e3 / static_cast<double>(count);  // bytes per µs
  };
  auto advance = [&](std::size_t li) {
    LinkState& ls = links[li];
    if (!ls.active.empty()) {
      const double moved = rate(li, ls.active.size()) * (now - ls.last);
      for (auto t : ls.active) transfers[t].remaining -= moved;
    }
    ls.last = now;
  };
  auto reschedule = [&](std::size_t li) {
    LinkState& ls = links[li];
    ++ls.version;
    if (ls.active.empty()) return;
    double min_rem = INFINITY;
    for (auto t : ls.active) min_rem = std::min(min_rem, transfers[t].remaining);
    push(now + std::max(0.0, min_rem) / rate(li, ls.active.size()), EventType::kLinkCheck,
         static_cast<std::uint32_t>(li), ls.version);
  };
  auto arrive = [&](NodeId v) {
    --pending[v];
    if (pending[v] == 0) wake(v);
  };

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
            const double delay =
                model.options().sync_latency_us + (a->bytes > 0 ? platform.link(from, to).latency_us : 0.0);
            transfers.push_back(Transfer{from, to, v, static_cast<double>(a->bytes)});
            ++res.transfers;
            res.transfer_bytes += static_cast<double>(a->bytes);
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
        const std::size_t li = t.src * p + t.dst;
        advance(li);
        links[li].active.push_back(ev.id);
        reschedule(li);
        break;
      }
      case EventType::kLinkCheck: {
        const std::size_t li = ev.id;
        if (links[li].version != ev.version) break;
        advance(li);
        auto& act = links[li].active;
        // Finish every transfer within rounding of done.
        const double eps = std::max(kByteEps, rate(li, act.size()) * 1e-9);
        std::vector<std::uint32_t> done;
        std::erase_if(act, [&](std::uint32_t id) {
          if (transfers[id].remaining <= eps) {
            done.push_back(id);
            return true;
          }
          return false;
        });
        reschedule(li);
        for (auto id : done) {
          if (tracing)
            flows.push_back(FlowSpan{transfers[id].src, transfers[id].dst, transfers[id].begin_flow, now,
                                     transfers[id].node});
          arrive(transfers[id].node);
        }
        break;
      }
    }
  }
  if (finished != n) {
    std::vector<std::string> stuck;
    for (std::size_t d = 0; d < p && stuck.size() < 8; ++d)
      if (head[d] < pl.device_order[d].size())
        stuck.push_back(fmt::format("device {} waits at '{}'", d, g.nodes()[pl.device_order[d][head[d]]].name));
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
