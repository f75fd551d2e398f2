// The simulator against hand-computed makespans.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>

namespace sg = stepgraph::graphs;

namespace {
sg::SimulateOptions ideal() {
  sg::SimulateOptions o;
  o.cost = sg::CostModelOptions::ideal();
  return o;
}

sg::Placement assign(const sg::StepGraph& g, const sg::Platform& p, std::vector<int> dev) {
  sg::CostModel m(p, sg::CostModelOptions::ideal());
  return sg::schedule_assignment(g, m, dev);
}

// A -> {B, C} -> D; A and D 10 us, B and C 20 us; 5000-byte edges.
struct ForkJoin {
  sg::StepGraph g;
  sg::NodeId a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  sg::NodeId b = g.add_kernel("B", sg::DeviceCosts::uniform(20));
  sg::NodeId c = g.add_kernel("C", sg::DeviceCosts::uniform(20));
  sg::NodeId d = g.add_kernel("D", sg::DeviceCosts::uniform(10));
  ForkJoin() {
    for (auto [s, t] : {std::pair{a, b}, {a, c}, {b, d}, {c, d}}) g.connect(s, t, 5000);
  }
};
}  // namespace

TEST(Simulator, ReproducesAContentionFreeSchedule) {
  // Fork-join of placement_test on two devices, HEFT's assignment:
  // A dev0 [0,10], B dev0 [10,30], C dev1 [15,35], D dev1 [35,45].
  const ForkJoin fj;
  const auto& [g, a, b, c, d] = fj;
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  auto r = sg::simulate(g, p, assign(g, p, {0, 0, 1, 1}), ideal());
  EXPECT_DOUBLE_EQ(r.makespan_us, 45);
  EXPECT_DOUBLE_EQ(r.nodes[c].start_us, 15);
  EXPECT_DOUBLE_EQ(r.nodes[d].start_us, 35);
  EXPECT_EQ(r.transfers, 2u);
  // dev0 busy 30 of 45, dev1 30 of 45.
  EXPECT_NEAR(r.utilization[0], 30.0 / 45, 1e-12);
  EXPECT_NEAR(r.utilization[1], 30.0 / 45, 1e-12);
}

TEST(Simulator, PreparedSimulatorRunsManyPlacementsOfOneGraph) {
  // Note [Prepared simulator]: one Simulator, several placements, each
  // against hand arithmetic; a run after another (or after a rejected
  // placement) starts from a clean state. Fork-join A -> {B, C} -> D,
  // 5000-byte edges at 1 GB/s (5 us).
  const ForkJoin fj;
  const auto& [g, a, b, c, d] = fj;
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  sg::Simulator sim(g, p, ideal());
  // A dev0 [0,10], B dev0 [10,30], C dev1 [15,35], D dev1 [35,45].
  const auto split = assign(g, p, {0, 0, 1, 1});
  EXPECT_DOUBLE_EQ(sim.run(split).makespan_us, 45);
  // Everything on device 0: 10 + 20 + 20 + 10, no transfers.
  const auto one = sim.run(assign(g, p, {0, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(one.makespan_us, 60);
  EXPECT_EQ(one.transfers, 0u);
  // B alone on dev1: B [15,35], C dev0 [10,30], D waits for B's bytes: [40,50].
  const auto b_away = sim.run(assign(g, p, {0, 1, 0, 0}));
  EXPECT_DOUBLE_EQ(b_away.makespan_us, 50);
  EXPECT_DOUBLE_EQ(b_away.nodes[d].start_us, 40);
  EXPECT_EQ(b_away.transfers, 2u);
  // A placement of another graph is refused; the next run is unaffected.
  sg::Placement wrong = split;
  wrong.nodes.pop_back();
  EXPECT_THROW((void)sim.run(wrong), stepgraph::InvalidArgument);
  sg::Simulator moved = std::move(sim);
  const auto again = moved.run(split);
  EXPECT_DOUBLE_EQ(again.makespan_us, 45);
  EXPECT_DOUBLE_EQ(again.nodes[c].start_us, 15);
  EXPECT_EQ(again.transfers, 2u);
}

TEST(Simulator, TransfersCrossingOneLinkShareItsBandwidth) {
  // A(10) on dev0 feeds B(20) and C(20) on dev1, 10 kB each at 1 GB/s:
  // alone 10 us each; together each gets half the link, both arrive at
  // 10 + 20 = 30. B [30,50], C [50,70]. (Without sharing: 60.)
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(20));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(20));
  g.connect(a, b, 10000);
  g.connect(a, c, 10000);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  auto r = sg::simulate(g, p, assign(g, p, {0, 1, 1}), ideal());
  EXPECT_DOUBLE_EQ(r.nodes[b].start_us, 30);
  EXPECT_DOUBLE_EQ(r.makespan_us, 70);
}

TEST(Simulator, StaggeredTransfersShareOnlyWhileOverlapping) {
  // dev0: A(10) -> X on dev1 (20 kB), B(10) after A on dev0 -> Y on dev1
  // (10 kB). T1 flows alone on [10,20) (10 kB done), shares with T2 on
  // [20,40) at 0.5 kB/us each: T1's last 10 kB done at 40, T2 done at 40.
  // X(5) [40,45], Y(5) [45,50].
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(10));
  auto x = g.add_kernel("X", sg::DeviceCosts::uniform(5));
  auto y = g.add_kernel("Y", sg::DeviceCosts::uniform(5));
  g.connect(a, b, 0);
  g.connect(a, x, 20000);
  g.connect(b, y, 10000);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  auto r = sg::simulate(g, p, assign(g, p, {0, 0, 1, 1}), ideal());
  EXPECT_NEAR(r.nodes[x].start_us, 40, 1e-9);
  EXPECT_NEAR(r.makespan_us, 50, 1e-9);
}

TEST(Simulator, LatencyAndSyncAreAFixedDelayBeforeTheBytes) {
  // Default cost model: sync 5 us, link latency 3 us, 1e4 B at 10 GB/s = 1 us;
  // launch floor 2 us (A, B have 20 us estimates). B starts at 20+5+3+1 = 29.
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(20));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(20));
  g.connect(a, b, 10000);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {10.0, 3.0});
  sg::CostModel m(p);
  auto r = sg::simulate(g, p, sg::schedule_assignment(g, m, {0, 1}));
  EXPECT_NEAR(r.nodes[b].start_us, 29, 1e-9);
  EXPECT_NEAR(r.makespan_us, 49, 1e-9);
}

TEST(Simulator, GangNodeOccupiesEveryDevice) {
  // X(10) dev0, Y(20) dev1 -> AR (10 us, see placement_test) -> Z(5) dev1.
  sg::StepGraph g;
  auto x = g.add_kernel("X", sg::DeviceCosts::uniform(10));
  auto y = g.add_kernel("Y", sg::DeviceCosts::uniform(20));
  auto ar = g.add_collective("AR", {sg::CollectiveOp::kAllReduce, 10000});
  auto z = g.add_kernel("Z", sg::DeviceCosts::uniform(5));
  g.connect(x, ar, 0);
  g.connect(y, ar, 0);
  g.connect(ar, z, 0);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  auto r = sg::simulate(g, p, assign(g, p, {0, 1, 0, 1}), ideal());
  EXPECT_DOUBLE_EQ(r.nodes[ar].start_us, 20);
  EXPECT_DOUBLE_EQ(r.makespan_us, 35);
  EXPECT_DOUBLE_EQ(r.busy_us[0], 20);  // X + AR
  EXPECT_DOUBLE_EQ(r.busy_us[1], 35);  // Y + AR + Z
}

TEST(Simulator, WritesAChromeTraceWithOneEventPerNodeAndTransfer) {
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(10));
  g.connect(a, b, 1000);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  auto o = ideal();
  o.trace = sg::TraceOutput::kChromeJson;
  auto r = sg::simulate(g, p, assign(g, p, {0, 1}), o);
  auto doc = nlohmann::json::parse(r.trace_json);
  int nodes = 0, transfers = 0;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] != "X") continue;
    if (e["cat"] == "transfer") {
      ++transfers;
      EXPECT_DOUBLE_EQ(e["ts"].get<double>(), 10);
      EXPECT_DOUBLE_EQ(e["dur"].get<double>(), 1);
    } else {
      ++nodes;
    }
  }
  EXPECT_EQ(nodes, 2);
  EXPECT_EQ(transfers, 1);
}

TEST(Simulator, StrictDispatchRejectsAnOrderThatContradictsTheEdges) {
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(1));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(1));
  g.connect(a, b, 0);
  auto p = sg::Platform::uniform(1, sg::DeviceKind::kGpu, {1.0, 0.0});
  sg::Placement pl;
  pl.nodes = {{0, 0, 1}, {0, 0, 1}};
  pl.device_order = {{b, a}};
  sg::SimulateOptions strict;
  strict.dispatch = sg::DeviceDispatch::kStrict;
  EXPECT_THROW((void)sg::simulate(g, p, pl, strict), stepgraph::InvalidState);
  // Ready-first dispatch treats the list as a priority: A runs first.
  EXPECT_DOUBLE_EQ(sg::simulate(g, p, pl, ideal()).makespan_us, 2.0);
  pl.device_order = {{a}};
  EXPECT_THROW((void)sg::simulate(g, p, pl), stepgraph::InvalidArgument);
}

TEST(Simulator, ReadyFirstDispatchRunsAReadyNodeAheadOfALateOne) {
  // dev1's list is [B, C]; B waits for A(10) on dev0 plus a 50 us transfer,
  // C(5) has no inputs. Strict: B [60,70], C [70,75]. Ready-first: C [0,5],
  // B [60,70].
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(10));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(5));
  g.connect(a, b, 50000);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  sg::Placement pl;
  pl.nodes = {{0, 0, 10}, {1, 60, 70}, {1, 70, 75}};
  pl.device_order = {{a}, {b, c}};
  auto o = ideal();
  o.dispatch = sg::DeviceDispatch::kStrict;
  EXPECT_DOUBLE_EQ(sg::simulate(g, p, pl, o).makespan_us, 75);
  auto r = sg::simulate(g, p, pl, ideal());
  EXPECT_DOUBLE_EQ(r.nodes[c].start_us, 0);
  EXPECT_DOUBLE_EQ(r.makespan_us, 70);
}

TEST(Simulator, GangNodeIsABarrierInEachDevicesOrder) {
  // dev0: X(10) -> Y(10); dev1: S(1), V(5) after X; AR (0 bytes: 0 us in
  // the ideal model) after S only. Plan: dev0 [X, Y, AR], dev1 [S, V, AR].
  // AR is ready at t = 1, but dev1 must not sit in it while V (listed
  // before it) waits for X: V [10,15], AR at 20 once dev0 is through Y.
  // (Taking AR at t = 1 would hold dev1 until 20 and push V to [20,25].)
  sg::StepGraph g;
  auto x = g.add_kernel("X", sg::DeviceCosts::uniform(10));
  auto y = g.add_kernel("Y", sg::DeviceCosts::uniform(10));
  auto s = g.add_kernel("S", sg::DeviceCosts::uniform(1));
  auto v = g.add_kernel("V", sg::DeviceCosts::uniform(5));
  auto ar = g.add_collective("AR", {sg::CollectiveOp::kAllReduce, 0});
  g.connect(x, y, 0);
  g.connect(x, v, 0);
  g.connect(s, ar, 0);
  auto p = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
  sg::Placement pl;
  pl.nodes = {{0, 0, 10}, {0, 10, 20}, {1, 0, 1}, {1, 10, 15}, {sg::kAllDevices, 20, 20}};
  pl.device_order = {{x, y, ar}, {s, v, ar}};
  auto r = sg::simulate(g, p, pl, ideal());
  EXPECT_DOUBLE_EQ(r.nodes[v].start_us, 10);
  EXPECT_DOUBLE_EQ(r.nodes[ar].start_us, 20);
  EXPECT_DOUBLE_EQ(r.makespan_us, 20);
}

namespace {
// Two independent pairs: A(10) on dev0 sends 10 kB to B(1) on dev2, X(10) on
// dev1 sends 10 kB to Y(1) on dev3. Private links at 1 GB/s (1000 B/us).
struct TwoPairs {
  sg::StepGraph g;
  sg::NodeId a, b, x, y;
  TwoPairs() {
    a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
    b = g.add_kernel("B", sg::DeviceCosts::uniform(1));
    x = g.add_kernel("X", sg::DeviceCosts::uniform(10));
    y = g.add_kernel("Y", sg::DeviceCosts::uniform(1));
    g.connect(a, b, 10000);
    g.connect(x, y, 10000);
  }
};
}  // namespace

TEST(Simulator, PairsWhoseRoutesCrossOneSharedLinkShareIt) {
  // Without routes each transfer has its private link: both take 10 us,
  // B and Y run [20,21]. With routes 0->2 and 1->3 both over one shared
  // 1 GB/s link ("smp"), the transfers flow together at 500 B/us: 20 us,
  // B and Y [30,31].
  TwoPairs t;
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {1.0, 0.0});
  const auto pl = assign(t.g, p, {0, 2, 1, 3});
  EXPECT_DOUBLE_EQ(sg::simulate(t.g, p, pl, ideal()).makespan_us, 21);
  const auto smp = p.add_shared_link({"smp", 1.0});
  p.set_route(0, 2, {smp});
  p.set_route(1, 3, {smp});
  const auto r = sg::simulate(t.g, p, pl, ideal());
  EXPECT_DOUBLE_EQ(r.nodes[t.b].start_us, 30);
  EXPECT_DOUBLE_EQ(r.nodes[t.y].start_us, 30);
  EXPECT_DOUBLE_EQ(r.makespan_us, 31);
  // Routes are directed: 2 -> 0 still has its private link.
  EXPECT_TRUE(p.route(2, 0).empty());
}

TEST(Simulator, ATransferFlowsAtItsSmallestShareAlongItsRoute) {
  // Route 0->2 = {smp, slow} (slow: 0.25 GB/s), route 1->3 = {smp}. While
  // both flow: A->B gets min(1000/2, 250/1) = 250 B/us, X->Y min(1000/2) =
  // 500 B/us (the unused share is not redistributed). X->Y is done after
  // 20 us (t = 30): Y [30,31]. A->B has moved 5 kB by then and keeps 250 B/us
  // (its bottleneck is `slow`): 20 us more, B [50,51].
  TwoPairs t;
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {1.0, 0.0});
  const auto smp = p.add_shared_link({"smp", 1.0});
  const auto slow = p.add_shared_link({"pcie up", 0.25});
  p.set_route(0, 2, {slow, smp});
  p.set_route(1, 3, {smp});
  const auto r = sg::simulate(t.g, p, assign(t.g, p, {0, 2, 1, 3}), ideal());
  EXPECT_DOUBLE_EQ(r.nodes[t.y].start_us, 30);
  EXPECT_DOUBLE_EQ(r.nodes[t.b].start_us, 50);
  EXPECT_DOUBLE_EQ(r.makespan_us, 51);
}

TEST(Platform, RoutesAreCheckedKeptBySubsetAndDroppedWhenBlind) {
  auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {1.0, 0.0});
  EXPECT_THROW(p.add_shared_link({"zero", 0.0}), stepgraph::InvalidArgument);
  const auto l = p.add_shared_link({"smp", 2.0});
  EXPECT_THROW(p.set_route(0, 0, {l}), stepgraph::InvalidArgument);
  EXPECT_THROW(p.set_route(0, 3, {l}), stepgraph::InvalidArgument);
  EXPECT_THROW(p.set_route(0, 1, {l + 1}), stepgraph::InvalidArgument);
  p.set_route(1, 2, {l});
  const auto sub = p.subset({2, 1});
  ASSERT_EQ(sub.shared_links().size(), 1u);
  EXPECT_EQ(sub.route(1, 0), std::vector<std::uint32_t>{l});
  EXPECT_TRUE(sub.route(0, 1).empty());
  const auto blind = p.without_topology();
  EXPECT_TRUE(blind.shared_links().empty());
  EXPECT_TRUE(blind.route(1, 2).empty());
}

// Found by fuzz_placement (fuzz/corpus/placement/regression-simulator-clock-tick.bin):
// one node costs 1.57e15 µs on a GPU, so the clock runs where one tick is a
// quarter of a microsecond, and a transfer due less than a tick away was
// re-timed to the same instant forever. The step must end, no earlier than
// the costly node alone would take.
TEST(Simulator, EndsWhenTheClockTickIsCoarserThanATransfer) {
  const sg::StepGraph g =
      sg::load_json(std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "simulator-clock-tick.json");
  double costliest = 0;
  for (const auto& n : g.nodes()) costliest = std::max(costliest, n.cost.get(sg::DeviceKind::kGpu).value_or(0));
  ASSERT_GT(costliest, 1e15);
  const auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {25.0, 2.0});
  sg::PlaceOptions po;
  po.search_evaluations = 16;
  const sg::Placement pl = sg::place(g, p, po);  // the search simulates: it hung here
  const sg::SimResult sim = sg::simulate(g, p, pl, {});
  EXPECT_GE(sim.makespan_us, costliest);
  EXPECT_LT(sim.makespan_us, 2 * costliest);
}
