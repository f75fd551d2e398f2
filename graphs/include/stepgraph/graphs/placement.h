// stepgraph/graphs/placement.h — node -> device assignment and a schedule.
//
// `place()` takes a StepGraph, a Platform (the device set; built from a
// topology::CostMatrix or by hand) and an algorithm:
// * kHeft       — HEFT (Topcuoglu, Hariri & Wu, IEEE TPDS 13(3), 2002):
//                 nodes by decreasing upward rank, each on the device giving
//                 the earliest finish time, inserted into the earliest idle
//                 gap that fits (insertion policy). The gap search is an
//                 augmented treap per device (O(log n) per query), not a scan.
//                 By default it also models link occupancy and charges the
//                 delay a queued transfer inflicts on a shared link, and
//                 returns the best of a portfolio judged by the simulator:
//                 classic and lookahead lists on the real view (links as
//                 queues and as shared bandwidth), on the uniform view and
//                 on each NUMA node's devices, and the one-device schedule
//                 (PlaceOptions; Notes in placement.cpp; docs/placement.md).
// * kHeftBlind  — the same HEFT on `platform.without_topology()`: every link
//                 equal. Its schedule is then judged on the real platform.
// * kRoundRobin — topological order, device i mod p (skipping devices that
//                 cannot run the node), each node appended (no insertion).
// * kGreedy     — the naive baseline: each node on the device with the
//                 smallest Σ NUMA-distance / bandwidth from its predecessors'
//                 devices (device 0, where inputs live, for entry nodes). It
//                 piles the whole graph onto one device; it is here to be
//                 beaten.
// After any of them, `PlaceOptions::search_evaluations` runs
// search_placement(): node moves judged by the simulator (below). By default
// (kAutoSearch) only kHeft does, and only on graphs of at most 10 000 nodes +
// edges.
// Collective nodes are gang nodes: they occupy every device at once
// (`ScheduledNode::device == kAllDevices`) and start when every device is
// free and every predecessor has signalled every device. An edge into a gang
// node costs a synchronisation only (the collective's α–β cost moves its
// bytes); an edge out of one is free (its result is on every device).
//
// Ownership: Placement is a value type. Thread-safety: place() is reentrant.
// Capture: no CUDA calls.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <stepgraph/graphs/cost_model.h>
#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/platform.h>

namespace stepgraph::graphs {

inline constexpr int kAllDevices = -1;

enum class Algorithm : std::uint8_t { kHeft, kHeftBlind, kRoundRobin, kGreedy };
[[nodiscard]] std::string_view to_string(Algorithm algorithm) noexcept;
/// "heft", "heft-blind", "rr", "greedy"; throws InvalidArgument otherwise.
[[nodiscard]] Algorithm parse_algorithm(std::string_view name);

/// What HEFT does about the single-device schedule (the whole graph on the
/// device with the least work): at high CCR a list schedule can be slower.
/// kSimulated: run the list schedule through the simulator on HEFT's own view
/// of the machine (the real platform; the uniform one for kHeftBlind) and
/// keep the serial schedule when it is faster. kEstimated: compare with the
/// list schedule's own estimate (cheaper, blind to link sharing). kOff: never.
enum class SerialFallback : std::uint8_t { kSimulated, kEstimated, kOff };

/// How HEFT sees links. kModel: it reserves link time for transfers,
/// queueing transfers that share a link (Note [Link occupancy in HEFT]).
/// kIgnore: every transfer has its link to itself (the original paper).
/// kShare: transfers on a link share its bandwidth, as in the simulator
/// (Note [Shared bandwidth in HEFT]).
enum class LinkContention : std::uint8_t { kModel, kIgnore, kShare };

/// With LinkContention::kModel or kShare: whether a device's score also carries the
/// delay its queued transfers would inflict on transfers already committed
/// to the same link, which on the machine share it rather than queue
/// (Note [Shared-link penalty] in placement.cpp). kOff: queueing only.
enum class SharedLinkPenalty : std::uint8_t { kCharge, kOff };

/// kOptimisticCostTable: HEFT also builds the PEFT-style schedule (list
/// order by mean optimistic cost table, device by EFT + OCT; Arabnejad &
/// Barbosa 2014) and keeps whichever of the two is shorter, judged as the
/// serial fallback is (simulated by default). kOff: the classic list only.
enum class Lookahead : std::uint8_t { kOptimisticCostTable, kOff };

/// kCandidate: kHeft also builds its list schedules on the uniform view of
/// the machine (what kHeftBlind builds) and keeps one if, judged on the real
/// platform, it is shorter (Note [HEFT portfolio]; only when judged by
/// simulation). kOff: only the real view.
enum class UniformView : std::uint8_t { kCandidate, kOff };

/// kCandidate: kHeft also builds its lists on the devices of each NUMA node
/// alone (at least two devices, not all; no gang nodes or pins in the
/// graph), so that no transfer crosses the inter-socket link, and keeps one
/// if it is shorter on the whole platform (Note [NUMA subsets]; only when
/// judged by simulation). kHeftBlind never does: the groups come from the
/// topology. kOff: never.
enum class NumaSubsets : std::uint8_t { kCandidate, kOff };

/// kCandidate (with LinkContention::kModel): kHeft also builds its two
/// real-view lists with LinkContention::kShare -- links as bandwidth shared
/// by the transfers on them, as the simulator has them, instead of queues --
/// and keeps one when it is shorter, judged by simulation (Note [Shared
/// bandwidth in HEFT] in placement.cpp).
enum class SharedView : std::uint8_t { kCandidate, kOff };

/// Which of HEFT's candidate schedules was returned (Note [HEFT portfolio]);
/// kAssignment for the baselines and schedule_assignment().
enum class ScheduleSource : std::uint8_t {
  kList,
  kLookahead,
  kUniformList,
  kUniformLookahead,
  kNumaList,
  kNumaLookahead,
  kSharedList,
  kSharedLookahead,
  kSerial,
  kAssignment
};
[[nodiscard]] std::string_view to_string(ScheduleSource source) noexcept;

inline constexpr int kAutoSearch = -1;
/// kAutoSearch's bounds (SearchOptions): at most this many evaluations...
inline constexpr int kAutoSearchEvaluations = 5000;
/// ...and at most this much work: about 360 evaluations of a 1000-node,
/// 4600-edge graph spread over 16 GPUs, 4000 if every evaluation kept it on
/// one device (from a one-device start the search spreads some nodes: about
/// 1300 measured on the DGX-1 at CCR 10).
inline constexpr std::int64_t kAutoSearchWork = 24'000'000;
/// kAutoSearch searches graphs of at most this many nodes + edges.
inline constexpr std::size_t kAutoSearchSize = 10000;

struct PlaceOptions {
  Algorithm algorithm = Algorithm::kHeft;
  CostModelOptions cost{};
  SerialFallback fallback = SerialFallback::kSimulated;
  LinkContention links = LinkContention::kModel;
  SharedLinkPenalty link_penalty = SharedLinkPenalty::kCharge;
  Lookahead lookahead = Lookahead::kOptimisticCostTable;
  UniformView uniform_view = UniformView::kCandidate;
  NumaSubsets numa_subsets = NumaSubsets::kCandidate;
  SharedView shared_view = SharedView::kCandidate;
  /// After the algorithm: simulator evaluations for search_placement() on
  /// the real platform (0: no search; see SearchOptions). kAutoSearch (the
  /// default): for kHeft on a graph of at most kAutoSearchSize nodes +
  /// edges, a search bounded by kAutoSearchEvaluations and kAutoSearchWork;
  /// none otherwise. That is at most about 1.5 s on the development VM
  /// whatever the graph: a 1000-node, 4600-edge graph gets about 360
  /// evaluations spread over 16 GPUs, about 1300 from a one-device start on
  /// 8; a 100-node graph takes 0.13-0.22 s mostly on one device, 1.1 s
  /// spread over 16 GPUs. A step graph is placed once for every step it
  /// runs (Note [Placement search] in search.cpp).
  int search_evaluations = kAutoSearch;
  std::uint64_t search_seed = 1;
};

struct ScheduledNode {
  int device = 0;  ///< index into the Platform, or kAllDevices (collective)
  double start_us = 0;
  double finish_us = 0;
};

/// The placement result a lowering pass consumes.
struct Placement {
  Algorithm algorithm = Algorithm::kHeft;
  /// Indexed by NodeId.
  std::vector<ScheduledNode> nodes;
  /// Per device, the nodes it runs in execution order (gang nodes appear in
  /// every device's list). The order is consistent with the edges.
  std::vector<std::vector<NodeId>> device_order;
  /// The algorithm's own estimate (HEFT: with its link-occupancy model;
  /// baselines: without link sharing); the simulator gives the makespan to
  /// compare algorithms by.
  double estimated_makespan_us = 0;
  /// Whether HEFT fell back to the serial schedule (source == kSerial).
  bool serial_fallback = false;
  /// Which candidate schedule this is (Note [HEFT portfolio]); after a
  /// search, the schedule the search started from.
  ScheduleSource source = ScheduleSource::kAssignment;
  /// Nodes whose device search_placement() changed (0: no search, or the
  /// search found nothing shorter and returned its start).
  std::size_t searched_moves = 0;
  /// Simulator evaluations search_placement() made (0: no search).
  std::size_t searched_evaluations = 0;

  [[nodiscard]] int device(NodeId node) const { return nodes.at(node).device; }
};

/// Throws InvalidArgument for: a raw CUDA graph (no buffers: cannot be
/// placed), an empty device set, a pinned device that does not exist, a node
/// that can run on no device of the set; plus everything `validate()` reports
/// (races are not re-checked here; call validate() on untrusted graphs).
[[nodiscard]] Placement place(const StepGraph& graph, const Platform& platform, const PlaceOptions& options = {});

/// Builds the per-device order and start/finish times for a given node ->
/// device map by appending each node (topological order) to its device as
/// early as its inputs allow. Baselines use it; so can a caller with its own
/// assignment. `device_of[n]` is ignored for collective nodes.
[[nodiscard]] Placement schedule_assignment(const StepGraph& graph, const CostModel& model,
                                            const std::vector<int>& device_of);

/// Note [Placement search] in search.cpp. A simulated-annealing search over
/// node -> device moves (a node, a node to a neighbour's device, a node and
/// a few neighbours together), each candidate judged by simulate() on the
/// platform; the per-device order keeps the start's priority (start time).
/// A step graph is placed once and replayed for many steps, so spending
/// seconds here to shorten every step can pay.
struct SearchOptions {
  /// Simulations the search may make (one prepared Simulator); each costs
  /// O((nodes + edges) log) (about 1.7 ms for 1000 nodes and 5000 edges
  /// spread over 16 devices on the development VM, under 0.1 ms with the
  /// same graph mostly on one device). 0 returns the start unchanged.
  int evaluations = 1000;
  /// A second bound, deterministic too: the search stops once the work of
  /// its evaluations reaches this (0: no bound). An evaluation's work is
  /// nodes + edges + kSearchTransferWork x the transfers the simulation
  /// made (SimResult::transfers: edges between two devices; an edge into a
  /// collective once per other device): a transfer costs the simulator
  /// events and link-sharing updates, 3 to 50 times a local edge on the
  /// development VM (more where many transfers share links at once). So a schedule mostly on one device, cheap to
  /// simulate, gets more evaluations for the same time. The annealing cools
  /// by whichever bound is nearer.
  std::int64_t work = 0;
  /// The search is deterministic for a given seed, graph, platform and start.
  std::uint64_t seed = 1;
  CostModelOptions cost{};
};
inline constexpr std::int64_t kSearchTransferWork = 16;

/// The search place() runs after the algorithm: options.search_evaluations,
/// with kAutoSearch resolved for this graph (evaluations 0: none; work 0
/// unless kAutoSearch), and the options' seed and cost model.
[[nodiscard]] SearchOptions search_options(const StepGraph& g, const PlaceOptions& options) noexcept;

/// Returns `start` improved by the search, or `start` (searched_moves = 0)
/// when nothing shorter was found; searched_evaluations says how many
/// evaluations were made either way: the result's simulated makespan is
/// never above the start's. Gang (collective) and pinned nodes keep their
/// devices; a node only moves to devices that can run it. The result's times
/// are the simulator's and its device_order is consistent with the edges.
/// Throws InvalidArgument for evaluations < 0 or work < 0, or a placement that does not
/// match the graph or the platform. Reentrant; no CUDA calls.
[[nodiscard]] Placement search_placement(const StepGraph& graph, const Platform& platform, const Placement& start,
                                         const SearchOptions& options = {});

struct Bounds {
  double critical_path_us = 0;  ///< longest path by min cost over devices, no comm
  double total_work_us = 0;     ///< Σ min cost over devices
  double lower_bound_us = 0;    ///< max(critical path, total work / devices)
};
/// The HEFT paper's SLR denominator and the lower bound of the benchmark.
[[nodiscard]] Bounds bounds(const StepGraph& graph, const CostModel& model);

/// Data-parallel replication: the whole graph once per replica, node r/<name>
/// pinned to device r, buffers duplicated; collective nodes stay single gang
/// nodes fed by (and feeding) every replica. The input graph states its
/// gradient AllReduce nodes (the transformer generator does).
[[nodiscard]] StepGraph replicate_data_parallel(const StepGraph& graph, int replicas);

}  // namespace stepgraph::graphs
