// search_placement (Note [Placement search]): against hand-computed bounds,
// never longer than its start, deterministic, pins and gang nodes kept, the
// result's order consistent with the edges, bad input.
#include <gtest/gtest.h>

#include <algorithm>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/graphs/workloads.h>

namespace sg = stepgraph::graphs;

namespace {

sg::SearchOptions search(int evaluations, std::uint64_t seed = 1) {
  sg::SearchOptions o;
  o.evaluations = evaluations;
  o.seed = seed;
  o.cost = sg::CostModelOptions::ideal();
  return o;
}

double simulated(const sg::StepGraph& g, const sg::Platform& p, const sg::Placement& pl) {
  sg::SimulateOptions so;
  so.cost = sg::CostModelOptions::ideal();
  return sg::simulate(g, p, pl, so).makespan_us;
}

// Every edge between two nodes of one device goes forward in its list.
void expect_order_follows_edges(const sg::StepGraph& g, const sg::Placement& pl) {
  for (const auto& list : pl.device_order) {
    std::vector<std::size_t> at(g.node_count(), list.size());
    for (std::size_t i = 0; i < list.size(); ++i) at[list[i]] = i;
    for (const auto& e : g.edges())
      if (at[e.src] < list.size() && at[e.dst] < list.size()) {
        EXPECT_LT(at[e.src], at[e.dst]) << e.src << "->" << e.dst;
      }
  }
}

sg::StepGraph random_dag(std::size_t nodes, double ccr, std::uint64_t seed) {
  const sg::RandomDagSpec spec{.nodes = nodes,
                               .shape = 1.0,
                               .out_degree = 3,
                               .ccr = ccr,
                               .mean_cost_us = 100,
                               .reference_bandwidth_gbps = 10,
                               .seed = seed};
  return sg::make_random_dag(spec);
}

// Eight independent 100 us nodes, all on device 0 of four free-linked GPUs.
struct OneDeviceStart {
  sg::StepGraph g = eight_nodes();
  sg::Platform p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {10.0, 0.0});
  sg::Placement start =
      sg::schedule_assignment(g, sg::CostModel(p, sg::CostModelOptions::ideal()), std::vector<int>(8, 0));

  static sg::StepGraph eight_nodes() {
    sg::StepGraph g;
    for (int i = 0; i < 8; ++i) g.add_kernel("k" + std::to_string(i), sg::DeviceCosts::uniform(100));
    return g;
  }
};

}  // namespace

TEST(PlacementSearch, SpreadsIndependentNodesOffOneDevice) {
  // Eight independent 100 us nodes, all on device 0 of four: 800 us. The
  // optimum is two per device, 200 us (total work / devices); any spread
  // that leaves at most three on a device is <= 300 us.
  const OneDeviceStart setup;
  const auto& [g, p, start] = setup;
  ASSERT_DOUBLE_EQ(simulated(g, p, start), 800);
  const auto out = sg::search_placement(g, p, start, search(300));
  const double m = simulated(g, p, out);
  EXPECT_LE(m, 300);
  EXPECT_GE(m, 200);
  EXPECT_DOUBLE_EQ(out.estimated_makespan_us, m);  // the result carries the simulator's times
  EXPECT_GT(out.searched_moves, 0u);
}

TEST(PlacementSearch, ZeroEvaluationsReturnsTheStart) {
  const auto g = random_dag(40, 1.0, 5);
  const auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10.0, 1.0});
  sg::PlaceOptions po;
  po.search_evaluations = 0;  // the list schedules themselves
  po.cost = sg::CostModelOptions::ideal();
  const auto start = sg::place(g, p, po);
  const auto out = sg::search_placement(g, p, start, search(0));
  EXPECT_EQ(out.device_order, start.device_order);
  for (sg::NodeId u = 0; u < g.node_count(); ++u) EXPECT_EQ(out.device(u), start.device(u));
  EXPECT_EQ(out.searched_moves, 0u);
}

TEST(PlacementSearch, NeverLongerThanItsStartAndDeterministic) {
  const auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {10.0, 1.0});
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    SCOPED_TRACE("graph seed " + std::to_string(seed));
    const auto g = random_dag(60, 1.0, seed);
    for (auto algo : {sg::Algorithm::kHeft, sg::Algorithm::kRoundRobin}) {
      sg::PlaceOptions po;
      po.search_evaluations = 0;  // the list schedules themselves
      po.algorithm = algo;
      po.cost = sg::CostModelOptions::ideal();
      const auto start = sg::place(g, p, po);
      const auto a = sg::search_placement(g, p, start, search(150, 7));
      const auto b = sg::search_placement(g, p, start, search(150, 7));
      EXPECT_LE(simulated(g, p, a), simulated(g, p, start));
      for (sg::NodeId u = 0; u < g.node_count(); ++u) EXPECT_EQ(a.device(u), b.device(u));
      expect_order_follows_edges(g, a);
      // The order alone (no ready-first reordering) must not deadlock.
      sg::SimulateOptions strict;
      strict.dispatch = sg::DeviceDispatch::kStrict;
      EXPECT_NO_THROW((void)sg::simulate(g, p, a, strict));
    }
  }
}

TEST(PlacementSearch, ThroughPlaceOptions) {
  // Round-robin on a chain with heavy edges moves data at every step; the
  // search (given to place()) must not make it longer, and with 200
  // evaluations it finds a shorter one: one device, no transfers, is 10 x 100 us.
  sg::StepGraph g;
  sg::NodeId prev = g.add_kernel("n0", sg::DeviceCosts::uniform(100));
  for (int i = 1; i < 10; ++i) {
    const auto n = g.add_kernel("n" + std::to_string(i), sg::DeviceCosts::uniform(100));
    g.connect(prev, n, 1'000'000);  // 100 us at 10 GB/s
    prev = n;
  }
  const auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {10.0, 0.0});
  sg::PlaceOptions po;
  po.algorithm = sg::Algorithm::kRoundRobin;
  po.cost = sg::CostModelOptions::ideal();
  const double rr = simulated(g, p, sg::place(g, p, po));
  ASSERT_DOUBLE_EQ(rr, 10 * 100 + 9 * 100);  // every edge crosses
  po.search_evaluations = 200;
  const auto out = sg::place(g, p, po);
  EXPECT_LT(simulated(g, p, out), rr);
  EXPECT_GE(simulated(g, p, out), 1000);  // the critical path
  EXPECT_EQ(out.algorithm, sg::Algorithm::kRoundRobin);
}

TEST(PlacementSearch, KeepsPinnedAndGangNodes) {
  sg::StepGraph g;
  sg::NodeSpec pinned;
  pinned.name = "pinned";
  pinned.cost = sg::DeviceCosts::uniform(50);
  pinned.pinned_device = 2;
  const auto a = g.add_node(pinned);
  const auto ar = g.add_collective("allreduce", {sg::CollectiveOp::kAllReduce, 1 << 20});
  std::vector<sg::NodeId> free;
  for (int i = 0; i < 12; ++i) {
    free.push_back(g.add_kernel("f" + std::to_string(i), sg::DeviceCosts::uniform(40)));
    g.connect(a, free.back(), 1000);
    g.connect(free.back(), ar, 0);
  }
  const auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10.0, 1.0});
  const sg::CostModel model(p, sg::CostModelOptions::ideal());
  const auto start = sg::schedule_assignment(g, model, std::vector<int>(g.node_count(), 2));
  const auto out = sg::search_placement(g, p, start, search(200));
  EXPECT_EQ(out.device(a), 2);
  EXPECT_EQ(out.device(ar), sg::kAllDevices);
  for (const auto& list : out.device_order) EXPECT_NE(std::find(list.begin(), list.end(), ar), list.end());
  EXPECT_LT(simulated(g, p, out), simulated(g, p, start));  // the twelve spread out
}

TEST(PlacementSearch, BadInput) {
  const auto g = random_dag(20, 1.0, 1);
  const auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {10.0, 1.0});
  const auto start = sg::place(g, p);
  EXPECT_THROW((void)sg::search_placement(g, p, start, search(-1)), stepgraph::InvalidArgument);
  const auto other = random_dag(21, 1.0, 1);
  EXPECT_THROW((void)sg::search_placement(other, p, start, search(10)), stepgraph::InvalidArgument);
  const auto three = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10.0, 1.0});
  const auto on_three = sg::place(g, three);
  EXPECT_THROW((void)sg::search_placement(g, p, on_three, search(10)), stepgraph::InvalidArgument);
}

TEST(PlacementSearch, DefaultSearchesSmallGraphsForHeftOnly) {
  // PlaceOptions::search_evaluations = kAutoSearch: kHeft on a graph of at
  // most kAutoSearchSize nodes + edges is the list schedule refined by
  // search_placement() with kAutoSearchEvaluations and kAutoSearchWork
  // (seed 1); larger graphs and the other algorithms are not searched.
  const auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {10.0, 1.0});
  const auto small = random_dag(60, 1.0, 2);
  ASSERT_LE(small.node_count() + small.edges().size(), sg::kAutoSearchSize);
  sg::PlaceOptions po;
  po.cost = sg::CostModelOptions::ideal();
  ASSERT_EQ(po.search_evaluations, sg::kAutoSearch);
  const auto so = sg::search_options(small, po);
  EXPECT_EQ(so.evaluations, sg::kAutoSearchEvaluations);
  EXPECT_EQ(so.work, sg::kAutoSearchWork);
  const auto automatic = sg::place(small, p, po);
  po.search_evaluations = 0;
  const auto list = sg::place(small, p, po);
  const auto refined = sg::search_placement(small, p, list, so);
  for (sg::NodeId u = 0; u < small.node_count(); ++u) EXPECT_EQ(automatic.device(u), refined.device(u));
  EXPECT_EQ(automatic.searched_moves, refined.searched_moves);
  EXPECT_EQ(automatic.searched_evaluations, refined.searched_evaluations);
  EXPECT_GT(automatic.searched_moves, 0u);  // so the comparison above sees a search
  EXPECT_GT(automatic.searched_evaluations, 0u);
  EXPECT_LE(automatic.searched_evaluations, static_cast<std::size_t>(sg::kAutoSearchEvaluations));

  const auto large = random_dag(3000, 1.0, 2);
  ASSERT_GT(large.node_count() + large.edges().size(), sg::kAutoSearchSize);
  po.search_evaluations = sg::kAutoSearch;
  EXPECT_EQ(sg::search_options(large, po).evaluations, 0);
  const auto unsearched = sg::place(large, p, po);
  EXPECT_EQ(unsearched.searched_moves, 0u);
  EXPECT_EQ(unsearched.searched_evaluations, 0u);
  po.algorithm = sg::Algorithm::kHeftBlind;
  EXPECT_EQ(sg::search_options(small, po).evaluations, 0);
  EXPECT_EQ(sg::place(small, p, po).searched_evaluations, 0u);
}

TEST(PlacementSearch, WorkBoundsTheEvaluations) {
  // SearchOptions::work: an evaluation's work is nodes + edges +
  // kSearchTransferWork per transfer (edge between two devices), and the search stops
  // once the sum reaches the bound. Eight independent nodes: every
  // evaluation is 8, so a bound of 80 allows exactly 10.
  const OneDeviceStart setup;
  const auto& [g, p, start] = setup;
  const sg::CostModel model(p, sg::CostModelOptions::ideal());
  auto o = search(1000);
  o.work = 80;
  EXPECT_EQ(sg::search_placement(g, p, start, o).searched_evaluations, 10u);
  o.evaluations = 4;  // the nearer bound wins
  EXPECT_EQ(sg::search_placement(g, p, start, o).searched_evaluations, 4u);
  o.work = 0;  // no work bound
  o.evaluations = 300;
  EXPECT_EQ(sg::search_placement(g, p, start, o).searched_evaluations, 300u);

  // A chain of 6 nodes (5 edges): an evaluation costs 11 with every node on
  // one device, 11 + 16 x 5 = 91 with every edge crossing; 910 allows
  // between 10 and 83 evaluations.
  sg::StepGraph chain;
  sg::NodeId prev = chain.add_kernel("c0", sg::DeviceCosts::uniform(100));
  for (int i = 1; i < 6; ++i) {
    const auto c = chain.add_kernel("c" + std::to_string(i), sg::DeviceCosts::uniform(100));
    chain.connect(prev, c, 1000);
    prev = c;
  }
  const auto one = sg::schedule_assignment(chain, model, std::vector<int>(6, 0));
  o.evaluations = 1000;
  o.work = 910;
  const auto out = sg::search_placement(chain, p, one, o);
  EXPECT_GE(out.searched_evaluations, 10u);
  EXPECT_LE(out.searched_evaluations, 83u);
  o.work = -1;
  EXPECT_THROW((void)sg::search_placement(chain, p, one, o), stepgraph::InvalidArgument);
}
