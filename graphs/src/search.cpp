#include <algorithm>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>

#include "schedule_detail.h"

namespace stepgraph::graphs {

// Note [Placement search]
// List schedulers decide each node once, greedily, on their own model of the
// machine. Two places where that model and the simulator disagree were
// measured on the benchmark grid (docs/placement.md):
// * at high CCR the portfolio often keeps the one-device schedule, although
//   moving a few nodes whose inputs are small to an idle device shortens it:
//   the freed device finishes earlier and the moved node's result comes back
//   before anyone needs it. EFT never sees that gain: on the other device the
//   moved node itself finishes later;
// * on an NVSwitch machine all of a GPU's outgoing transfers share its port;
//   the simulator starts them together when their source finishes, HEFT
//   queues them, and where ports are the bottleneck its plan is far from the
//   simulated result.
// The search starts from a placement, keeps each node's priority (the
// start's start time, ties by topological position) and changes only
// devices. A step proposes one of: a node to a random device; a node to the
// device of one of its neighbours; a node and up to 11 of its neighbours
// (breadth first) to one device; the node is drawn uniformly (a draw
// weighted towards nodes with light edges was measured on the whole grid
// and not kept: docs/placement.md). Each proposal is judged by a prepared
// Simulator on the platform; it is kept if shorter, or with the simulated-annealing
// probability exp(-increase / T), T falling geometrically from 0.2 % of the
// start's makespan to a thousandth of that over the budget. The budget is
// evaluations and, optionally, work: an evaluation's work counts the
// graph's nodes and edges and 16 (kSearchTransferWork) for each transfer
// the simulation made (SimResult::transfers: the edges between two
// devices), because the simulator spends most of its time on transfers. Both are deterministic, unlike a time limit;
// the work bound lets a schedule mostly on one device, which the high-CCR cells of the grid start from, get four times
// the evaluations or more for the same time. The best placement seen is returned, never one longer than the start. Gang
// nodes and pinned nodes never move, and a node only moves where it can run. Measured: docs/placement.md, "Placement
// search".

Placement search_placement(const StepGraph& g, const Platform& platform, const Placement& start,
                           const SearchOptions& options) {
  STEPGRAPH_CHECK(options.evaluations >= 0, InvalidArgument, "search: evaluations must be >= 0, got {}",
                  options.evaluations);
  STEPGRAPH_CHECK(options.work >= 0, InvalidArgument, "search: work must be >= 0, got {}", options.work);
  STEPGRAPH_CHECK(start.nodes.size() == g.node_count(), InvalidArgument,
                  "search: the placement has {} nodes, the graph {}", start.nodes.size(), g.node_count());
  const std::size_t n = g.node_count();
  const std::size_t p = platform.size();
  const CostModel model(platform, options.cost);
  SimulateOptions so;
  so.cost = options.cost;
  // One prepared simulator for every evaluation (Note [Prepared simulator]).
  Simulator simulator(g, platform, so);
  // Also checks the start against the platform (devices, orders).
  const double start_makespan = simulator.run(start).makespan_us;
  // Nothing shorter found: the start, with how much was tried.
  auto unchanged = [&](int evaluations) {
    Placement out = start;
    out.searched_moves = 0;
    out.searched_evaluations = static_cast<std::size_t>(evaluations);
    return out;
  };
  if (options.evaluations == 0 || p < 2 || n == 0) return unchanged(0);

  const auto topo = topological_order(g);
  std::vector<std::size_t> pos(n);
  for (std::size_t i = 0; i < n; ++i) pos[topo[i]] = i;
  // Priority: the start's start time, then topological position. Edge
  // consistent because every start schedule starts a node after its inputs.
  std::vector<NodeId> priority(topo);
  std::stable_sort(priority.begin(), priority.end(),
                   [&](NodeId a, NodeId b) { return start.nodes[a].start_us < start.nodes[b].start_us; });

  std::vector<int> dev(n);
  std::vector<NodeId> movable;
  std::vector<std::vector<int>> targets(n);  // devices a movable node can run on
  for (NodeId u = 0; u < n; ++u) {
    const Node& node = g.nodes()[u];
    dev[u] = start.nodes[u].device;
    if (detail::is_gang(node) || node.pinned_device) continue;
    for (std::size_t d = 0; d < p; ++d)
      if (model.can_run(node, d)) targets[u].push_back(static_cast<int>(d));
    if (targets[u].size() > 1) movable.push_back(u);
  }
  if (movable.empty()) return unchanged(0);
  std::vector<std::vector<NodeId>> neighbours(n);
  for (const auto& e : g.edges()) {
    neighbours[e.src].push_back(e.dst);
    neighbours[e.dst].push_back(e.src);
  }
  // Gang and pinned nodes have no targets, so they never move.
  auto can_run = [&](NodeId u, int d) {
    return std::find(targets[u].begin(), targets[u].end(), d) != targets[u].end();
  };

  Placement trial;
  trial.nodes.assign(n, {});
  trial.device_order.assign(p, {});
  auto fill_trial = [&] {
    for (auto& list : trial.device_order) list.clear();
    for (NodeId u : priority) {
      trial.nodes[u].device = dev[u];
      if (dev[u] == kAllDevices) {
        for (auto& list : trial.device_order) list.push_back(u);
      } else {
        trial.device_order[static_cast<std::size_t>(dev[u])].push_back(u);
      }
    }
  };

  std::mt19937_64 rng(options.seed);
  auto below = [&](std::size_t k) { return static_cast<std::size_t>(rng() % k); };
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  double current = start_makespan;
  double best = start_makespan;
  std::vector<int> best_dev = dev;
  const double hottest = 0.002 * start_makespan;
  double temperature = hottest;
  // An evaluation's work (SearchOptions::work): nodes + edges, and
  // kSearchTransferWork more for each transfer the simulator made.
  const auto local_work = static_cast<std::int64_t>(n + g.edges().size());
  std::int64_t worked = 0;
  std::vector<std::pair<NodeId, int>> undo;  // (node, old device)
  std::vector<NodeId> ball;
  // Proposals that change nothing (a node already there) cost no
  // evaluation; the attempt cap only guards a graph where that is common.
  int spent = 0;
  for (long attempt = 0; spent < options.evaluations && attempt < 8L * options.evaluations &&
                         (options.work == 0 || worked < options.work);
       ++attempt) {
    undo.clear();
    const NodeId u = movable[below(movable.size())];
    auto move = [&](NodeId v, int d) {
      if (dev[v] == d || !can_run(v, d)) return;  // gang and pinned nodes have no targets
      undo.emplace_back(v, dev[v]);
      dev[v] = d;
    };
    const std::size_t kind = below(3);
    if (kind == 1 && !neighbours[u].empty()) {
      const NodeId w = neighbours[u][below(neighbours[u].size())];
      if (dev[w] != kAllDevices) move(u, dev[w]);
    } else {
      const int d = targets[u][below(targets[u].size())];
      move(u, d);
      if (kind == 2) {
        const std::size_t limit = 2 + below(11);
        ball.assign(1, u);
        for (std::size_t k = 0; k < ball.size() && ball.size() < limit; ++k)
          for (NodeId w : neighbours[ball[k]]) {
            if (ball.size() >= limit) break;
            if (std::find(ball.begin(), ball.end(), w) != ball.end()) continue;
            ball.push_back(w);
            move(w, d);
          }
      }
    }
    if (undo.empty()) continue;
    ++spent;
    fill_trial();
    const SimResult sim = simulator.run(trial);
    const double m = sim.makespan_us;
    worked += local_work + kSearchTransferWork * static_cast<std::int64_t>(sim.transfers);
    if (m < current || unit(rng) < std::exp((current - m) / temperature)) {
      current = m;
      if (m < best) {
        best = m;
        best_dev = dev;
      }
    } else {
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) dev[it->first] = it->second;
    }
    // Geometric cooling to a thousandth over whichever budget is nearer
    // its end.
    double progress = static_cast<double>(spent) / options.evaluations;
    if (options.work > 0) progress = std::max(progress, static_cast<double>(worked) / options.work);
    temperature = hottest * std::pow(1e-3, progress);
  }
  if (!(best < start_makespan)) return unchanged(spent);

  // The result: the best devices, the simulator's times, orders by them.
  dev = best_dev;
  fill_trial();
  const SimResult sim = simulator.run(trial);
  Placement out = start;
  out.nodes = sim.nodes;
  detail::build_device_order(g, topo, p, out);
  out.serial_fallback = false;
  out.searched_moves = 0;
  out.searched_evaluations = static_cast<std::size_t>(spent);
  for (NodeId u = 0; u < n; ++u) out.searched_moves += out.nodes[u].device != start.nodes[u].device;
  return out;
}

}  // namespace stepgraph::graphs
