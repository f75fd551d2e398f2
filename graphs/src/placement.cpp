#include <stepgraph/graphs/placement.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>

#include <fmt/format.h>
#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include <stepgraph/graphs/simulator.h>

#include "gap_index.h"
#include "schedule_detail.h"
#include "share_line.h"

namespace stepgraph::graphs {

namespace detail {

void build_device_order(const StepGraph& g, const std::vector<NodeId>& topo, std::size_t p, Placement& out) {
  std::vector<std::size_t> pos(g.node_count());
  for (std::size_t i = 0; i < topo.size(); ++i) pos[topo[i]] = i;
  out.device_order.assign(p, {});
  for (NodeId u = 0; u < g.node_count(); ++u) {
    const auto& s = out.nodes[u];
    if (s.device == kAllDevices) {
      for (auto& list : out.device_order) list.push_back(u);
    } else {
      out.device_order[static_cast<std::size_t>(s.device)].push_back(u);
    }
  }
  // Sort by (start, topological position) on precomputed keys: no random
  // access into the node table inside the comparator.
  struct Key {
    double start;
    std::size_t pos;
    NodeId node;
  };
  std::vector<Key> keys;
  for (auto& list : out.device_order) {
    keys.clear();
    keys.reserve(list.size());
    for (NodeId u : list) keys.push_back(Key{out.nodes[u].start_us, pos[u], u});
    std::sort(keys.begin(), keys.end(),
              [](const Key& x, const Key& y) { return x.start != y.start ? x.start < y.start : x.pos < y.pos; });
    for (std::size_t i = 0; i < keys.size(); ++i) list[i] = keys[i].node;
  }
  out.estimated_makespan_us = 0;
  for (const auto& s : out.nodes) out.estimated_makespan_us = std::max(out.estimated_makespan_us, s.finish_us);
}

}  // namespace detail

namespace {

using detail::build_device_order;
using detail::is_gang;
constexpr double kInf = std::numeric_limits<double>::infinity();
// Note [Shared bandwidth in HEFT]: the most breakpoints one transfer's
// arrival walks through.
constexpr int kShareWalk = 64;

void check_placeable(const StepGraph& g, const Platform& platform, const CostModel& model) {
  STEPGRAPH_CHECK(g.origin() != GraphOrigin::kRawCudaGraph, InvalidArgument,
                  "this graph was imported from a raw CUDA graph: its kernel arguments are opaque pointers and it "
                  "declares no buffers, so it cannot be placed; build it with the builder API or capture it with "
                  "the annotated launch API");
  STEPGRAPH_CHECK(platform.size() > 0, InvalidArgument, "the device set is empty; give placement at least one device");
  for (const auto& n : g.nodes()) {
    if (n.pinned_device) {
      STEPGRAPH_CHECK(static_cast<std::size_t>(*n.pinned_device) < platform.size(), InvalidArgument,
                      "node '{}' (#{}): pinned_device {} does not exist; the device set has {} devices (0..{})", n.name,
                      n.id, *n.pinned_device, platform.size(), platform.size() - 1);
    }
    if (is_gang(n)) continue;
    bool any = false;
    for (std::size_t d = 0; d < platform.size() && !any; ++d) any = model.can_run(n, d);
    STEPGRAPH_CHECK(any, InvalidArgument,
                    "node '{}' (#{}) can run on no device of the set: it has no cost estimate for the kinds "
                    "present{}; add an estimate with DeviceCosts::set",
                    n.name, n.id, n.pinned_device ? " (or its pinned device is of another kind)" : "");
  }
}

// Arrival time at device p of the data of edge (pred -> succ) carrying bytes.
// Into a gang node only the dependency crosses devices (the collective's own
// cost moves its bytes); out of a gang node the data is everywhere.
// Callers pass bytes = 0 for an edge into a gang node.
double arrival(const CostModel& model, const Node& pred, const ScheduledNode& ps, std::size_t p, std::uint64_t bytes) {
  if (is_gang(pred)) return ps.finish_us;
  return ps.finish_us + model.transfer_us(static_cast<std::size_t>(ps.device), p, bytes);
}

Placement schedule_assignment_impl(const StepGraph& g, const CostModel& model, const std::vector<int>& device_of,
                                   const std::vector<NodeId>& topo, const Adjacency& adj) {
  const std::size_t p = model.platform().size();
  Placement out;
  out.nodes.assign(g.node_count(), {});
  std::vector<double> free_at(p, 0.0);
  for (NodeId u : topo) {
    const Node& n = g.nodes()[u];
    auto& s = out.nodes[u];
    if (is_gang(n)) {
      double start = *std::max_element(free_at.begin(), free_at.end());
      for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a)
        for (std::size_t d = 0; d < p; ++d)
          start = std::max(start, arrival(model, g.nodes()[a->node], out.nodes[a->node], d, 0));
      s = ScheduledNode{kAllDevices, start, start + model.node_us(n, 0)};
      std::fill(free_at.begin(), free_at.end(), s.finish_us);
      continue;
    }
    const auto d = static_cast<std::size_t>(device_of[u]);
    STEPGRAPH_CHECK(d < p && model.can_run(n, d), InvalidArgument,
                    "node '{}' (#{}) assigned to device {} which cannot run it", n.name, u, device_of[u]);
    double start = free_at[d];
    for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a)
      start = std::max(start, arrival(model, g.nodes()[a->node], out.nodes[a->node], d, a->bytes));
    s = ScheduledNode{static_cast<int>(d), start, start + model.node_us(n, d)};
    free_at[d] = s.finish_us;
  }
  build_device_order(g, topo, p, out);
  return out;
}

// Note [Optimistic cost table]
// With Lookahead::kOptimisticCostTable the list order and the device choice
// follow PEFT (Arabnejad & Barbosa, IEEE TPDS 25(3), 2014): OCT(i, d) is the
// longest remaining path from node i's successors to an exit when i runs on
// d and every later node gets its best device (mean transfer cost when the
// device changes); nodes go by decreasing mean OCT and each to the device
// minimising EFT + OCT, so a node is not put where it finishes early but
// strands its successors.
Placement heft(const StepGraph& g, const CostModel& model, const std::vector<NodeId>& topo, const Adjacency& adj,
               LinkContention links_mode, SharedLinkPenalty link_penalty, Lookahead lookahead) {
  const std::size_t p = model.platform().size();
  const std::size_t n = g.node_count();
  // The list order's key: the upward rank from mean costs (HEFT's w̄ and
  // c̄), or with the lookahead the mean optimistic cost (below).
  std::vector<double> rank(n, 0.0);
  if (lookahead == Lookahead::kOff) {
    std::vector<double> wbar(n);
    for (NodeId u = 0; u < n; ++u) {
      const Node& node = g.nodes()[u];
      if (is_gang(node)) {
        wbar[u] = model.node_us(node, 0);
        continue;
      }
      double sum = 0;
      int count = 0;
      for (std::size_t d = 0; d < p; ++d)
        if (model.can_run(node, d)) {
          sum += model.node_us(node, d);
          ++count;
        }
      wbar[u] = sum / count;
    }
    for (auto it = topo.rbegin(); it != topo.rend(); ++it) {
      const NodeId u = *it;
      double best = 0;
      const bool gang = is_gang(g.nodes()[u]);
      for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a)
        best = std::max(
            best, (gang ? 0.0 : model.mean_transfer_us(is_gang(g.nodes()[a->node]) ? 0 : a->bytes)) + rank[a->node]);
      rank[u] = wbar[u] + best;
    }
  }
  std::vector<double> oct;
  if (lookahead == Lookahead::kOptimisticCostTable) {
    oct.assign(n * p, 0.0);
    std::vector<double> wdev(p);
    for (auto it = topo.rbegin(); it != topo.rend(); ++it) {
      const NodeId u = *it;
      double* row = &oct[static_cast<std::size_t>(u) * p];
      for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a) {
        const NodeId v = a->node;
        const Node& nv = g.nodes()[v];
        const double c = is_gang(g.nodes()[u]) ? 0.0 : model.mean_transfer_us(is_gang(nv) ? 0 : a->bytes);
        // best_same[d] = OCT(v,d) + w(v,d); best_any = min over devices + c.
        double best_any = kInf;
        for (std::size_t d = 0; d < p; ++d) {
          wdev[d] = model.can_run(nv, d) ? oct[static_cast<std::size_t>(v) * p + d] + model.node_us(nv, d) : kInf;
          best_any = std::min(best_any, wdev[d] + c);
        }
        for (std::size_t d = 0; d < p; ++d) row[d] = std::max(row[d], std::min(wdev[d], best_any));
      }
      double sum = 0;
      for (std::size_t d = 0; d < p; ++d) sum += row[d];
      rank[u] = sum / static_cast<double>(p);
    }
  }
  // Decreasing rank (upward rank, or mean OCT); ties by topological position.
  // Upward rank is a topological order even with zero costs; mean OCT is not
  // always one, so the OCT order is repaired below.
  std::vector<std::pair<double, std::size_t>> keyed(n);
  for (std::size_t i = 0; i < n; ++i) keyed[i] = {-rank[topo[i]], i};
  std::sort(keyed.begin(), keyed.end());
  std::vector<NodeId> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = topo[keyed[i].second];
  std::vector<std::pair<double, std::size_t>>().swap(keyed);
  if (lookahead == Lookahead::kOptimisticCostTable) {
    // Emit in rank order, but never a node before its predecessors: a
    // priority queue of ready nodes keyed by position in the rank order.
    std::vector<std::size_t> at(n), indeg(n);
    for (std::size_t i = 0; i < n; ++i) at[order[i]] = i;
    std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> ready_q;
    for (NodeId u = 0; u < n; ++u) {
      indeg[u] = adj.in_degree(u);
      if (indeg[u] == 0) ready_q.push(at[u]);
    }
    std::vector<NodeId> fixed;
    fixed.reserve(n);
    while (!ready_q.empty()) {
      const NodeId u = order[ready_q.top()];
      ready_q.pop();
      fixed.push_back(u);
      for (auto* a = adj.succ_begin(u); a != adj.succ_end(u); ++a)
        if (--indeg[a->node] == 0) ready_q.push(at[a->node]);
    }
    order.swap(fixed);
  }

  Placement out;
  out.nodes.assign(n, {});
  std::vector<detail::GapIndex> gaps(p);
  // Note [Link occupancy in HEFT]
  // With LinkContention::kModel every directed link keeps its own gap index
  // (a pair's private link, or each shared link on its route, which the
  // transfer then occupies in one common slot): a transfer's bytes occupy
  // the link for bytes / bandwidth, inserted at the
  // earliest idle time after its source finishes, so transfers that would
  // cross one link at once queue instead of each assuming the whole link
  // (Sinnen & Sousa, "Communication contention in task scheduling", IEEE
  // TPDS 16(6), 2005). Candidates are evaluated against the committed link
  // state; the chosen device's transfers are then committed in order of
  // their source's finish time and the node's start recomputed.
  //
  // Note [Shared-link penalty]
  // Queueing is HEFT's view; on the machine (and in the simulator) a
  // transfer starts when its source finishes and shares the link with every
  // transfer already on it. A transfer HEFT queues behind committed ones
  // (it would start at s > f, its source's finish) therefore flows during
  // [f, s] in fact, and delays those committed transfers -- whose consumers
  // are already scheduled -- by up to min(its own time, s - f).
  // SharedLinkPenalty::kCharge adds that delay to the device's score (not to
  // the node's planned start): among devices that finish the node equally
  // early, the one that does not slow transfers other nodes wait for wins.
  // Measured on the benchmark grid in docs/placement.md.
  //
  // Note [Shared bandwidth in HEFT]
  // LinkContention::kShare models a link as the simulator does: bandwidth
  // divided equally among the transfers on it at each moment, not a queue.
  // Each link (private or shared) keeps a step function of how many
  // committed transfers flow on it over time (share_line.h). A new transfer
  // starts flowing at its source's finish plus the fixed delay and advances,
  // between the breakpoints of the links on its route, at its smallest
  // share: min over those links of (link bandwidth / (count + 1)) relative
  // to the pair's bandwidth, capped at the pair's rate. Committing adds it
  // to every link of its route for [flow start, arrival). Past kShareWalk
  // breakpoints the share reached is assumed to last, so a query on a busy
  // link costs O(kShareWalk log n), not the number of transfers in its
  // window (on four grid cells a 32-step cap moved the shared lists' simulated
  // makespans by at most 1.5 %). What this leaves
  // out is the transfer's effect on those already committed (they would
  // slow down, and their consumers are already scheduled); with
  // SharedLinkPenalty::kCharge the device's score carries it, counted as
  // the transfer's progress made while sharing (each unit of it is a unit
  // the others lose). The portfolio builds the real-view lists both ways
  // (SharedView::kCandidate, Note [HEFT portfolio]): neither view is the
  // machine, and on the benchmark grid neither wins everywhere.
  const bool share_links = links_mode == LinkContention::kShare && p > 1;
  const bool model_links = (links_mode == LinkContention::kModel || share_links) && p > 1;
  const Platform& plat = model.platform();
  // One gap index per directed private link, then one per shared link.
  std::vector<detail::GapIndex> links(model_links && !share_links ? p * p + plat.shared_links().size() : 0);
  std::vector<detail::ShareLine> lines(share_links ? p * p + plat.shared_links().size() : 0);
  struct OnRoute {
    detail::ShareLine* line;
    double relative_bw;  // the link's bandwidth / the pair's
    detail::ShareLine::Cursor at;
  };
  std::vector<OnRoute> on_route;
  auto data_us = [&](std::size_t a, std::size_t b, std::uint64_t bytes) {
    return static_cast<double>(bytes) / (plat.link(a, b).bandwidth_gbps * 1e3);
  };
  struct PredInfo {
    double finish;
    std::size_t dev;
    std::uint64_t bytes;
    bool local_everywhere;  // a gang source: its result is on every device
  };
  std::vector<PredInfo> preds;
  const bool charge = model_links && link_penalty == SharedLinkPenalty::kCharge;
  double inflicted = 0;  // set by ready_at: Note [Shared-link penalty]
  // Arrival at device d of a transfer over the modelled links, each view
  // adding its shared-link penalty to `inflicted`; commit = reserve them.
  // Shared view (Note [Shared bandwidth in HEFT]): the transfer flows at its
  // smallest share along the route, walking the links' step functions.
  auto shared_arrival = [&](const PredInfo& pr, std::size_t d, bool commit) {
    const double dt = data_us(pr.dev, d, pr.bytes);
    const auto& route = plat.route(pr.dev, d);
    const double pair_bw = plat.link(pr.dev, d).bandwidth_gbps;
    const double flow_start = pr.finish + model.transfer_us(pr.dev, d, pr.bytes) - dt;
    on_route.clear();
    auto via = [&](detail::ShareLine& line, double relative_bw) {
      on_route.push_back({&line, relative_bw, {line, flow_start}});
    };
    if (route.empty()) via(lines[pr.dev * p + d], 1.0);
    for (auto l : route) via(lines[p * p + l], plat.shared_links()[l].bandwidth_gbps / pair_bw);
    double t = flow_start, left = dt;
    for (int steps = 0;; ++steps) {
      double rate = 1.0, next = kInf;
      bool crowded = false;
      for (const auto& on : on_route) {
        const int k = on.at.count();
        crowded = crowded || k > 0;
        rate = std::min(rate, on.relative_bw / (k + 1));
        next = std::min(next, on.at.next());
      }
      // Past kShareWalk breakpoints the current share is assumed to
      // last: bounds the cost of a query on a busy link.
      const double step = steps < kShareWalk ? (next - t) * rate : kInf;
      if (step >= left) {
        if (crowded && charge) inflicted += left;
        t += left / rate;
        break;
      }
      if (crowded && charge) inflicted += step;
      left -= step;
      t = next;
      for (auto& on : on_route)
        if (on.at.next() == t) on.at.advance();
    }
    if (commit)
      for (const auto& on : on_route) on.line->add(flow_start, t);
    return t;
  };
  // Queue view: the transfer needs the same slot on every link of its route
  // (Note [Routes] in platform.h): the earliest start all agree on.
  auto queued_arrival = [&](const PredInfo& pr, std::size_t d, bool commit) {
    const double dt = data_us(pr.dev, d, pr.bytes);
    const auto& route = plat.route(pr.dev, d);
    double s = pr.finish;
    if (route.empty()) {
      auto& link = links[pr.dev * p + d];
      s = link.earliest_start(s, dt);
      if (commit) link.occupy(s, dt);
    } else {
      for (;;) {
        double next = s;
        for (auto l : route) next = std::max(next, links[p * p + l].earliest_start(s, dt));
        if (next == s) break;
        s = next;
      }
      if (commit)
        for (auto l : route) links[p * p + l].occupy(s, dt);
    }
    if (charge) inflicted += std::min(dt, s - pr.finish);
    return s + model.transfer_us(pr.dev, d, pr.bytes);
  };
  // Arrival of every input at device d; commit = reserve the links.
  auto ready_at = [&](std::size_t d, bool commit) {
    double r = 0;
    inflicted = 0;
    for (const auto& pr : preds) {
      if (pr.local_everywhere || pr.dev == d) {
        r = std::max(r, pr.finish);
      } else if (!model_links || pr.bytes == 0) {
        r = std::max(r, pr.finish + model.transfer_us(pr.dev, d, pr.bytes));
      } else {
        r = std::max(r, share_links ? shared_arrival(pr, d, commit) : queued_arrival(pr, d, commit));
      }
    }
    return r;
  };
  // Note [Forgetting the past]
  // Every later query of a gap index asks from a time >= L, where L is the
  // earliest finish among scheduled nodes that still have an unscheduled
  // successor (a later transfer leaves such a node's device when it
  // finishes; a later node waits for its inputs, which come from such nodes
  // or from nodes scheduled later still, themselves bounded the same way),
  // or 0 while an entry node is unscheduled (it may start at 0). Gaps that
  // end by L can never be used again and are dropped every so often; the
  // schedule is unchanged. A min-heap of (finish, node) with lazy deletion
  // tracks L.
  std::vector<std::uint32_t> open_succ(n);
  std::size_t unscheduled_entries = 0;
  for (NodeId u = 0; u < n; ++u) {
    open_succ[u] = static_cast<std::uint32_t>(adj.out_degree(u));
    unscheduled_entries += adj.in_degree(u) == 0;
  }
  using Live = std::pair<double, NodeId>;
  std::priority_queue<Live, std::vector<Live>, std::greater<>> live;
  constexpr std::size_t kForgetEvery = 256;
  std::size_t since_forget = 0;
  auto scheduled = [&](NodeId u) {
    if (adj.in_degree(u) == 0) --unscheduled_entries;
    for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a) --open_succ[a->node];
    if (open_succ[u] > 0) live.emplace(out.nodes[u].finish_us, u);
    if (++since_forget < kForgetEvery || unscheduled_entries > 0) return;
    since_forget = 0;
    while (!live.empty() && open_succ[live.top().second] == 0) live.pop();
    if (live.empty()) return;
    const double bound = live.top().first;
    for (auto& gi : gaps) gi.forget_before(bound);
    for (auto& li : links) li.forget_before(bound);
    for (auto& li : lines) li.forget_before(bound);
  };
  for (NodeId u : order) {
    const Node& node = g.nodes()[u];
    preds.clear();
    for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a) {
      const auto& ps = out.nodes[a->node];
      preds.push_back(PredInfo{ps.finish_us, static_cast<std::size_t>(std::max(ps.device, 0)),
                               is_gang(node) ? 0 : a->bytes, ps.device == kAllDevices});
    }
    std::sort(preds.begin(), preds.end(), [](const PredInfo& x, const PredInfo& y) { return x.finish < y.finish; });
    if (is_gang(node)) {
      const double dur = model.node_us(node, 0);
      double t = 0;
      for (std::size_t d = 0; d < p; ++d) t = std::max(t, ready_at(d, true));
      // Fixpoint: the earliest t at which every device has a gap of `dur`.
      for (;;) {
        double next = t;
        for (std::size_t d = 0; d < p; ++d) next = std::max(next, gaps[d].earliest_start(t, dur));
        if (next == t) break;
        t = next;
      }
      for (auto& gi : gaps) gi.occupy(t, dur);
      out.nodes[u] = ScheduledNode{kAllDevices, t, t + dur};
      scheduled(u);
      continue;
    }
    double best_finish = kInf;
    std::size_t best_dev = p;
    for (std::size_t d = 0; d < p; ++d) {
      if (!model.can_run(node, d)) continue;
      const double dur = model.node_us(node, d);
      const double look = oct.empty() ? 0.0 : oct[static_cast<std::size_t>(u) * p + d];
      const double s = gaps[d].earliest_start(ready_at(d, false), dur);
      const double score = s + dur + inflicted + look;
      if (score < best_finish) {
        best_finish = score;
        best_dev = d;
      }
    }
    STEPGRAPH_INTERNAL_ASSERT(best_dev < p, "node {} has no device", u);
    const double dur = model.node_us(node, best_dev);
    const double start = gaps[best_dev].earliest_start(ready_at(best_dev, true), dur);
    gaps[best_dev].occupy(start, dur);
    out.nodes[u] = ScheduledNode{static_cast<int>(best_dev), start, start + dur};
    scheduled(u);
  }
  build_device_order(g, topo, p, out);
  return out;
}

// Note [NUMA subsets]
// On a machine whose sockets are joined by one shared link (NUMA nodes),
// the best step often stays on one socket: every transfer between sockets
// shares that link, and a list scheduler that sees idle devices across it
// fills them and then waits on the link. HEFT therefore also schedules on
// the devices of each NUMA node alone -- groups of at least two devices and
// not all of them; none when the graph has gang nodes (they span every
// device) or pins, or for a group some node cannot run on -- and the
// portfolio keeps such a schedule when the simulator says it is shorter on
// the whole platform. The groups come from the devices' NUMA nodes, i.e.
// from the topology, so heft-blind does not get them.
std::vector<std::vector<std::size_t>> numa_groups(const StepGraph& g, const Platform& platform) {
  std::vector<std::vector<std::size_t>> out;
  for (const auto& n : g.nodes())
    if (is_gang(n) || n.pinned_device) return out;
  std::vector<int> numa;
  for (const auto& d : platform.devices())
    if (d.numa_node >= 0 && std::find(numa.begin(), numa.end(), d.numa_node) == numa.end()) numa.push_back(d.numa_node);
  for (int node : numa) {
    std::vector<std::size_t> group;
    for (std::size_t d = 0; d < platform.size(); ++d)
      if (platform.device(d).numa_node == node) group.push_back(d);
    if (group.size() < 2 || group.size() == platform.size()) continue;
    bool runs = true;
    for (const auto& n : g.nodes()) {
      bool any = false;
      for (auto d : group) any = any || n.cost.runs_on(platform.device(d).kind);
      runs = runs && any;
    }
    if (runs) out.push_back(std::move(group));
  }
  return out;
}

// A placement made on platform.subset(group) as a placement on the whole
// platform (device indices mapped back; the other devices idle).
Placement on_devices(Placement sub, const std::vector<std::size_t>& group, std::size_t p) {
  for (auto& s : sub.nodes)
    if (s.device != kAllDevices) s.device = static_cast<int>(group[static_cast<std::size_t>(s.device)]);
  std::vector<std::vector<NodeId>> order(p);
  for (std::size_t i = 0; i < group.size(); ++i) order[group[i]] = std::move(sub.device_order[i]);
  sub.device_order = std::move(order);
  return sub;
}

}  // namespace

std::string_view to_string(Algorithm a) noexcept {
  switch (a) {
    case Algorithm::kHeft:
      return "heft";
    case Algorithm::kHeftBlind:
      return "heft-blind";
    case Algorithm::kRoundRobin:
      return "rr";
    case Algorithm::kGreedy:
      return "greedy";
  }
  return "?";
}

std::string_view to_string(ScheduleSource s) noexcept {
  switch (s) {
    case ScheduleSource::kList:
      return "list";
    case ScheduleSource::kLookahead:
      return "lookahead";
    case ScheduleSource::kUniformList:
      return "uniform-list";
    case ScheduleSource::kUniformLookahead:
      return "uniform-lookahead";
    case ScheduleSource::kNumaList:
      return "numa-list";
    case ScheduleSource::kNumaLookahead:
      return "numa-lookahead";
    case ScheduleSource::kSharedList:
      return "shared-list";
    case ScheduleSource::kSharedLookahead:
      return "shared-lookahead";
    case ScheduleSource::kSerial:
      return "serial";
    case ScheduleSource::kAssignment:
      return "assignment";
  }
  return "?";
}

Algorithm parse_algorithm(std::string_view name) {
  for (auto a : {Algorithm::kHeft, Algorithm::kHeftBlind, Algorithm::kRoundRobin, Algorithm::kGreedy})
    if (to_string(a) == name) return a;
  throw InvalidArgument(fmt::format("unknown placement algorithm '{}'; use heft, heft-blind, rr or greedy", name));
}

Placement schedule_assignment(const StepGraph& g, const CostModel& model, const std::vector<int>& device_of) {
  STEPGRAPH_CHECK(device_of.size() == g.node_count(), InvalidArgument,
                  "schedule_assignment: {} devices given for {} nodes", device_of.size(), g.node_count());
  const auto topo = topological_order(g);
  const Adjacency adj(g);
  return schedule_assignment_impl(g, model, device_of, topo, adj);
}

SearchOptions search_options(const StepGraph& g, const PlaceOptions& options) noexcept {
  SearchOptions so;
  so.seed = options.search_seed;
  so.cost = options.cost;
  so.evaluations = options.search_evaluations;
  if (options.search_evaluations == kAutoSearch) {
    const bool searched = options.algorithm == Algorithm::kHeft && g.node_count() + g.edges().size() <= kAutoSearchSize;
    so.evaluations = searched ? kAutoSearchEvaluations : 0;
    so.work = searched ? kAutoSearchWork : 0;
  }
  return so;
}

Placement place(const StepGraph& g, const Platform& platform, const PlaceOptions& options) {
  STEPGRAPH_CHECK(platform.size() > 0, InvalidArgument, "the device set is empty; give placement at least one device");
  const CostModel model(platform, options.cost);
  check_placeable(g, platform, model);
  const auto topo = topological_order(g);  // throws on cycles and dangling edges
  const Adjacency adj(g);
  const std::size_t p = platform.size();
  Placement out;
  switch (options.algorithm) {
    case Algorithm::kHeft:
    case Algorithm::kHeftBlind: {
      // Note [HEFT portfolio]
      // HEFT builds list schedules on its view of the machine (the real
      // platform; the uniform one for kHeftBlind): the classic list and, with
      // the lookahead, the optimistic-cost-table list. kHeft with
      // UniformView::kCandidate also builds the same two lists on the
      // uniform view -- the schedules heft-blind would build -- and judges
      // them on the real platform like the others. With NumaSubsets::
      // kCandidate it also builds both lists on the devices of each NUMA
      // node alone (Note [NUMA subsets]). Last, the whole graph on
      // the single device with the least work. With SharedView::
      // kCandidate the two real-view lists are also built with links as
      // shared bandwidth (Note [Shared bandwidth in HEFT]). The schedule with the
      // shortest judged makespan (simulated by default) is returned and
      // Placement::source says which it was. So heft <= heft-blind by
      // construction whenever the uniform lists are judged by simulation;
      // what topology adds is measured by how far below blind HEFT goes
      // (docs/placement.md).
      const bool blind_algo = options.algorithm == Algorithm::kHeftBlind;
      // The uniform view, only where something uses it (heft-blind, or the
      // uniform-view candidates of Note [HEFT portfolio]).
      const bool simulated = options.fallback == SerialFallback::kSimulated;
      const bool uniform_candidates = !blind_algo && options.uniform_view == UniformView::kCandidate && simulated;
      Platform uniform;
      std::optional<CostModel> uniform_model;
      if (p > 1 && (blind_algo || uniform_candidates)) {
        uniform = platform.without_topology();
        uniform_model.emplace(uniform, options.cost);
      }
      const CostModel& view = blind_algo && p > 1 ? *uniform_model : model;
      SimulateOptions so;
      so.cost = options.cost;
      auto judge = [&](const Placement& pl) {
        return simulated ? simulate(g, view.platform(), pl, so).makespan_us : pl.estimated_makespan_us;
      };
      out = heft(g, view, topo, adj, options.links, options.link_penalty, Lookahead::kOff);
      out.source = ScheduleSource::kList;
      double out_makespan = -1;
      auto consider = [&](Placement candidate, ScheduleSource source) {
        if (out_makespan < 0) out_makespan = judge(out);
        const double m = judge(candidate);
        if (m < out_makespan) {
          out = std::move(candidate);
          out.source = source;
          out_makespan = m;
        }
      };
      const bool lookahead = options.lookahead == Lookahead::kOptimisticCostTable && p > 1;
      if (lookahead)
        consider(heft(g, view, topo, adj, options.links, options.link_penalty, Lookahead::kOptimisticCostTable),
                 ScheduleSource::kLookahead);
      if (!blind_algo && options.shared_view == SharedView::kCandidate && simulated && p > 1 &&
          options.links == LinkContention::kModel) {
        // Note [Shared bandwidth in HEFT]
        consider(heft(g, view, topo, adj, LinkContention::kShare, options.link_penalty, Lookahead::kOff),
                 ScheduleSource::kSharedList);
        if (lookahead)
          consider(
              heft(g, view, topo, adj, LinkContention::kShare, options.link_penalty, Lookahead::kOptimisticCostTable),
              ScheduleSource::kSharedLookahead);
      }
      if (uniform_candidates && p > 1) {
        consider(heft(g, *uniform_model, topo, adj, options.links, options.link_penalty, Lookahead::kOff),
                 ScheduleSource::kUniformList);
        if (lookahead)
          consider(
              heft(g, *uniform_model, topo, adj, options.links, options.link_penalty, Lookahead::kOptimisticCostTable),
              ScheduleSource::kUniformLookahead);
      }
      if (!blind_algo && options.numa_subsets == NumaSubsets::kCandidate && simulated && p > 2)
        for (const auto& group : numa_groups(g, platform)) {
          // Note [NUMA subsets]
          const Platform sub = platform.subset(group);
          const CostModel sub_model(sub, options.cost);
          consider(
              on_devices(heft(g, sub_model, topo, adj, options.links, options.link_penalty, Lookahead::kOff), group, p),
              ScheduleSource::kNumaList);
          if (lookahead)
            consider(on_devices(heft(g, sub_model, topo, adj, options.links, options.link_penalty,
                                     Lookahead::kOptimisticCostTable),
                                group, p),
                     ScheduleSource::kNumaLookahead);
        }
      if (options.fallback != SerialFallback::kOff && p > 1) {
        // The single device with the least total work that can run every
        // node and matches every pin.
        std::size_t best = p;
        double best_work = kInf;
        for (std::size_t d = 0; d < p; ++d) {
          double work = 0;
          for (const auto& node : g.nodes())
            if (!is_gang(node)) work += view.can_run(node, d) ? view.node_us(node, d) : kInf;
          if (work < best_work) {
            best_work = work;
            best = d;
          }
        }
        if (best < p) {
          auto serial =
              schedule_assignment_impl(g, view, std::vector<int>(g.node_count(), static_cast<int>(best)), topo, adj);
          const double list_makespan = out_makespan >= 0 ? out_makespan : judge(out);
          // No transfers in the serial schedule: its estimate is exact.
          if (serial.estimated_makespan_us < list_makespan) {
            out = std::move(serial);
            out.source = ScheduleSource::kSerial;
            out.serial_fallback = true;
          }
        }
      }
      break;
    }
    case Algorithm::kRoundRobin: {
      std::vector<int> dev(g.node_count(), 0);
      std::size_t next = 0;
      for (NodeId u : topo) {
        const Node& node = g.nodes()[u];
        if (is_gang(node)) continue;
        if (node.pinned_device) {
          dev[u] = *node.pinned_device;
          continue;
        }
        for (std::size_t k = 0; k < p; ++k) {
          const std::size_t d = (next + k) % p;
          if (model.can_run(node, d)) {
            dev[u] = static_cast<int>(d);
            next = d + 1;
            break;
          }
        }
      }
      out = schedule_assignment_impl(g, model, dev, topo, adj);
      break;
    }
    case Algorithm::kGreedy: {
      std::vector<int> dev(g.node_count(), 0);
      for (NodeId u : topo) {
        const Node& node = g.nodes()[u];
        if (is_gang(node)) continue;
        double best_score = kInf;
        for (std::size_t d = 0; d < p; ++d) {
          if (!model.can_run(node, d)) continue;
          auto ratio = [&](std::size_t from) {
            if (from == d) return 0.0;
            return platform.numa_distance(from, d) / platform.link(from, d).bandwidth_gbps;
          };
          double score = 0;
          if (adj.in_degree(u) == 0) {
            score = ratio(0);
          } else {
            for (auto* a = adj.pred_begin(u); a != adj.pred_end(u); ++a)
              if (!is_gang(g.nodes()[a->node])) score += ratio(static_cast<std::size_t>(dev[a->node]));
          }
          if (score < best_score) {
            best_score = score;
            dev[u] = static_cast<int>(d);
          }
        }
      }
      out = schedule_assignment_impl(g, model, dev, topo, adj);
      break;
    }
  }
  out.algorithm = options.algorithm;
  const SearchOptions so = search_options(g, options);
  if (so.evaluations != 0) out = search_placement(g, platform, out, so);
  return out;
}

Bounds bounds(const StepGraph& g, const CostModel& model) {
  const std::size_t p = model.platform().size();
  std::vector<double> w(g.node_count(), 0.0);
  Bounds b;
  for (const auto& n : g.nodes()) {
    if (is_gang(n)) {
      w[n.id] = model.node_us(n, 0);
      b.total_work_us += w[n.id] * static_cast<double>(p);
      continue;
    }
    double m = kInf;
    for (std::size_t d = 0; d < p; ++d)
      if (model.can_run(n, d)) m = std::min(m, model.node_us(n, d));
    w[n.id] = std::isfinite(m) ? m : 0.0;
    b.total_work_us += w[n.id];
  }
  b.critical_path_us = critical_path(g, w).length_us;
  b.lower_bound_us = std::max(b.critical_path_us, b.total_work_us / static_cast<double>(p));
  return b;
}

StepGraph replicate_data_parallel(const StepGraph& g, int replicas) {
  STEPGRAPH_CHECK(replicas >= 1, InvalidArgument, "replicate_data_parallel: replicas is {}; need >= 1", replicas);
  STEPGRAPH_CHECK(g.origin() != GraphOrigin::kRawCudaGraph, InvalidArgument,
                  "a raw CUDA graph declares no buffers and cannot be replicated; use the builder or annotated "
                  "capture");
  StepGraph out(g.origin());
  const auto r_count = static_cast<std::size_t>(replicas);
  // buffers: replica r of buffer b is r * B + b.
  const auto nb = static_cast<BufferId>(g.buffers().size());
  for (int r = 0; r < replicas; ++r)
    for (const auto& b : g.buffers()) out.add_buffer(fmt::format("r{}/{}", r, b.name), b.bytes);
  // copies[r][u]; a collective has one copy shared by every replica.
  std::vector<std::vector<NodeId>> copy(r_count, std::vector<NodeId>(g.node_count(), kNoNode));
  for (const auto& n : g.nodes()) {
    if (is_gang(n)) {
      NodeSpec s{n.name, n.kind, n.cost, {}, std::nullopt, n.collective};
      for (int r = 0; r < replicas; ++r)
        for (auto a : n.accesses) {
          a.buffer += static_cast<BufferId>(r) * nb;
          s.accesses.push_back(a);
        }
      const NodeId id = out.add_node(std::move(s));
      for (auto& c : copy) c[n.id] = id;
      continue;
    }
    for (int r = 0; r < replicas; ++r) {
      NodeSpec s{fmt::format("r{}/{}", r, n.name), n.kind, n.cost, n.accesses, r, std::nullopt};
      for (auto& a : s.accesses) a.buffer += static_cast<BufferId>(r) * nb;
      copy[static_cast<std::size_t>(r)][n.id] = out.add_node(std::move(s));
    }
  }
  for (const auto& e : g.edges()) {
    const bool gs = is_gang(g.node(e.src)), gd = is_gang(g.node(e.dst));
    if (gs && gd) {
      out.connect(copy[0][e.src], copy[0][e.dst], e.bytes);
      continue;
    }
    for (std::size_t r = 0; r < r_count; ++r) out.connect(copy[r][e.src], copy[r][e.dst], e.bytes);
  }
  return out;
}

}  // namespace stepgraph::graphs
