// Schedulers against small hand-computed schedules (see the comments for the
// arithmetic), the gap index against a linear-scan reference, bad input.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/graphs/workloads.h>

#include "../../graphs/src/gap_index.h"

namespace sg = stepgraph::graphs;
using stepgraph::InvalidArgument;

namespace {
// Two identical devices joined at 1 GB/s (1000 B/us), no latency; the ideal
// cost model (no floors, no sync), so an edge of 5000 B costs 5 us.
sg::Platform two_devices() {
  return sg::Platform::uniform(2, sg::DeviceKind::kGpu, {1.0, 0.0});
}

sg::PlaceOptions opts(sg::Algorithm a) {
  sg::PlaceOptions o;
  o.search_evaluations = 0;  // the list schedules themselves
  o.algorithm = a;
  o.cost = sg::CostModelOptions::ideal();
  return o;
}

// A(10) -> B(20), A -> C(20), B -> D(10), C -> D; every edge 5000 B (5 us).
sg::StepGraph fork_join() {
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(20));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(20));
  auto d = g.add_kernel("D", sg::DeviceCosts::uniform(10));
  for (auto [s, t] : {std::pair{a, b}, {a, c}, {b, d}, {c, d}}) g.connect(s, t, 5000);
  return g;
}

// The reference for the gap index: every busy interval, scanned in order.
struct LinearScanGaps {
  std::vector<std::pair<double, double>> busy;  // sorted by start
  [[nodiscard]] double earliest_start(double ready, double d) const {
    double t = ready;
    for (auto [s, e] : busy) {
      if (t + d <= s + 1e-9) return t;
      t = std::max(t, e);
    }
    return t;
  }
  void occupy(double s, double d) {
    busy.emplace_back(s, s + d);
    std::sort(busy.begin(), busy.end());
  }
};

sg::NodeId add_pinned(sg::StepGraph& g, const char* name, double us, int dev) {
  sg::NodeSpec s;
  s.name = name;
  s.cost = sg::DeviceCosts::uniform(us);
  s.pinned_device = dev;
  return g.add_node(s);
}

// A node that runs only on `kind`, for `us`, optionally pinned.
sg::NodeId add_node(sg::StepGraph& g, const char* name, sg::DeviceKind kind, double us, std::optional<int> pin) {
  sg::NodeSpec s;
  s.name = name;
  s.cost.set(kind, us);
  s.pinned_device = pin;
  return g.add_node(s);
}

void expect_node(const sg::Placement& p, sg::NodeId n, int dev, double start, double finish) {
  SCOPED_TRACE("node " + std::to_string(n));
  EXPECT_EQ(p.nodes[n].device, dev);
  EXPECT_DOUBLE_EQ(p.nodes[n].start_us, start);
  EXPECT_DOUBLE_EQ(p.nodes[n].finish_us, finish);
}
}  // namespace

TEST(GapIndex, FindsEarliestFittingGap) {
  sg::detail::GapIndex gi;
  gi.occupy(10, 10);  // busy [10,20)
  gi.occupy(30, 10);  // busy [30,40)
  EXPECT_DOUBLE_EQ(gi.earliest_start(0, 5), 0);
  EXPECT_DOUBLE_EQ(gi.earliest_start(5, 5), 5);
  EXPECT_DOUBLE_EQ(gi.earliest_start(8, 5), 20);   // [8,13) hits [10,20)
  EXPECT_DOUBLE_EQ(gi.earliest_start(0, 15), 40);  // no gap of 15 before 40
  EXPECT_DOUBLE_EQ(gi.earliest_start(22, 10), 40);
  EXPECT_DOUBLE_EQ(gi.earliest_start(12, 10), 20);
  EXPECT_EQ(gi.gap_count(), 3u);
}

TEST(GapIndex, AgreesWithLinearScanOnRandomSchedules) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  sg::detail::GapIndex gi;
  LinearScanGaps reference;
  for (int i = 0; i < 3000; ++i) {
    const double ready = u(rng) * 1000, d = 0.5 + u(rng) * 5;
    const double expect = reference.earliest_start(ready, d);
    ASSERT_NEAR(gi.earliest_start(ready, d), expect, 1e-6) << "query " << i;
    gi.occupy(expect, d);
    reference.occupy(expect, d);
  }
}

TEST(GapIndex, ForgettingThePastKeepsLaterAnswers) {
  // Queries only from a rising floor (as HEFT's are, Note [Forgetting the
  // past]): an index that drops the gaps ending before the floor answers
  // like the linear-scan reference over every interval, and stays small.
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> u(0, 1);
  sg::detail::GapIndex gi;
  LinearScanGaps reference;
  double floor = 0;
  std::size_t largest = 0;
  for (int i = 0; i < 4000; ++i) {
    const double ready = floor + u(rng) * 240, d = 0.5 + u(rng) * 5;
    const double expect = reference.earliest_start(ready, d);
    ASSERT_NEAR(gi.earliest_start(ready, d), expect, 1e-6) << "query " << i;
    gi.occupy(expect, d);
    reference.occupy(expect, d);
    if (i % 50 == 49) {
      floor += 200;
      gi.forget_before(floor);
    }
    largest = std::max(largest, gi.gap_count());
  }
  // Without forgetting the index would hold hundreds of gaps by now.
  EXPECT_LT(largest, 100u);
}

TEST(Heft, ForkJoinMatchesHandSchedule) {
  // Upward ranks (c̄ = 5): D 10, B = C = 20+5+10 = 35, A = 10+5+35 = 50.
  // A -> dev0 [0,10]. B: dev0 [10,30] (dev1 would be [15,35]). C: dev0 [30,50]
  // vs dev1 [15,35] -> dev1. D: dev0 max(30, 35+5)=40 -> 50; dev1 max(30+5, 35)
  // = 35 -> 45 -> dev1 [35,45].
  const auto g = fork_join();
  const auto p = two_devices();
  const auto pl = sg::place(g, p, opts(sg::Algorithm::kHeft));
  expect_node(pl, 0, 0, 0, 10);
  expect_node(pl, 1, 0, 10, 30);
  expect_node(pl, 2, 1, 15, 35);
  expect_node(pl, 3, 1, 35, 45);
  EXPECT_DOUBLE_EQ(pl.estimated_makespan_us, 45);
  EXPECT_FALSE(pl.serial_fallback);
  EXPECT_EQ(pl.device_order[0], (std::vector<sg::NodeId>{0, 1}));
  EXPECT_EQ(pl.device_order[1], (std::vector<sg::NodeId>{2, 3}));
}

TEST(Heft, InsertsIntoAnIdleGap) {
  // P(30) pinned dev1 -> Q(10) pinned dev0, 10 us transfer; S(5) free entry.
  // Ranks: P = 30+10+10 = 50, Q = 10, S = 5: order P, Q, S. Q lands on dev0
  // at [40,50], leaving [0,40) idle; S fits there: [0,5] (appending would
  // give [50,55] or dev1 [30,35]).
  sg::StepGraph g;
  sg::NodeSpec p;
  p.name = "P";
  p.cost = sg::DeviceCosts::uniform(30);
  p.pinned_device = 1;
  auto pid = g.add_node(p);
  sg::NodeSpec q;
  q.name = "Q";
  q.cost = sg::DeviceCosts::uniform(10);
  q.pinned_device = 0;
  auto qid = g.add_node(q);
  auto sid = g.add_kernel("S", sg::DeviceCosts::uniform(5));
  g.connect(pid, qid, 10000);
  const auto pl = sg::place(g, two_devices(), opts(sg::Algorithm::kHeft));
  expect_node(pl, pid, 1, 0, 30);
  expect_node(pl, qid, 0, 40, 50);
  expect_node(pl, sid, 0, 0, 5);
  EXPECT_EQ(pl.device_order[0], (std::vector<sg::NodeId>{sid, qid}));
}

TEST(Heft, FallsBackToOneDeviceWhenCommunicationDominates) {
  // A(10) -> B(10), C(10) on 5 us edges; B, C -> D(10) on 100 us edges.
  // Ranks: D 10, B = C = 10+100+10 = 120, A = 135. A dev0 [0,10], B dev0
  // [10,20], C dev1 [15,25] (dev0 would end at 30), D: dev0 25+100 -> 135,
  // dev1 20+100 -> 130. The list schedule ends at 130; serial on one device at
  // 40, so the serial schedule is kept.
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(10));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(10));
  auto d = g.add_kernel("D", sg::DeviceCosts::uniform(10));
  g.connect(a, b, 5000);
  g.connect(a, c, 5000);
  g.connect(b, d, 100000);
  g.connect(c, d, 100000);
  auto no_fallback = opts(sg::Algorithm::kHeft);
  no_fallback.fallback = sg::SerialFallback::kOff;
  const auto list = sg::place(g, two_devices(), no_fallback);
  EXPECT_DOUBLE_EQ(list.estimated_makespan_us, 130);
  expect_node(list, c, 1, 15, 25);
  expect_node(list, d, 1, 120, 130);
  const auto pl = sg::place(g, two_devices(), opts(sg::Algorithm::kHeft));
  EXPECT_TRUE(pl.serial_fallback);
  EXPECT_EQ(pl.source, sg::ScheduleSource::kSerial);
  EXPECT_DOUBLE_EQ(pl.estimated_makespan_us, 40);
  for (const auto& n : pl.nodes) EXPECT_EQ(n.device, pl.nodes[0].device);
}

TEST(Heft, PrefersTheFastLinkOfAnUnevenPlatform) {
  // 3 devices: 0-1 at 100 GB/s, 0-2 and 1-2 at 1 GB/s. A(10) -> B(50), C(50)
  // each carrying 100 kB: 1 us on the fast link, 100 us on the slow ones.
  // C goes to the fast neighbour (dev1: 10+1+50 = 61), never to dev2.
  auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {1.0, 0.0});
  p.set_link(0, 1, {100.0, 0.0});
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(50));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(50));
  g.connect(a, b, 100000);
  g.connect(a, c, 100000);
  auto pl = sg::place(g, p, opts(sg::Algorithm::kHeft));
  EXPECT_EQ(pl.nodes[a].device, 0);
  EXPECT_EQ(pl.nodes[b].device, 0);
  expect_node(pl, c, 1, 11, 61);
  // Blind to topology every link looks like the harmonic mean: a byte takes
  // (2·1e-5 + 4·1e-3)/6 us, so 100 kB take 67 us and C stays on dev0 after B:
  // [60,110].
  auto blind = sg::place(g, p, opts(sg::Algorithm::kHeftBlind));
  EXPECT_EQ(blind.nodes[c].device, 0);
  EXPECT_DOUBLE_EQ(blind.nodes[c].finish_us, 110);
  EXPECT_GT(blind.estimated_makespan_us, pl.estimated_makespan_us);
}

TEST(Baselines, RoundRobinDealsNodesInTopologicalOrder) {
  // Topological order A,B,C,D -> devices 0,1,0,1. A [0,10]; B dev1 [15,35];
  // C dev0 [10,30]; D dev1 max(35, 30+5) = 35 -> [35,45].
  const auto pl = sg::place(fork_join(), two_devices(), opts(sg::Algorithm::kRoundRobin));
  expect_node(pl, 0, 0, 0, 10);
  expect_node(pl, 1, 1, 15, 35);
  expect_node(pl, 2, 0, 10, 30);
  expect_node(pl, 3, 1, 35, 45);
}

TEST(Baselines, GreedyPilesEverythingOntoOneDevice) {
  // Serial on device 0: 10 + 20 + 20 + 10.
  const auto pl = sg::place(fork_join(), two_devices(), opts(sg::Algorithm::kGreedy));
  for (const auto& n : pl.nodes) EXPECT_EQ(n.device, 0);
  EXPECT_DOUBLE_EQ(pl.estimated_makespan_us, 60);
}

TEST(Heft, GangNodeWaitsForEveryDeviceAndInput) {
  // X(10) pinned 0 and Y(20) pinned 1 feed an AllReduce of 10 kB (ideal ring
  // on 2 devices at 1 GB/s: 2·1/2·10000/1000 = 10 us), then Z(5).
  // AR starts at 20 (Y), ends 30; Z [30,35].
  sg::StepGraph g;
  sg::NodeSpec x{"X", sg::NodeKind::kKernel, sg::DeviceCosts::uniform(10), {}, 0, std::nullopt};
  sg::NodeSpec y{"Y", sg::NodeKind::kKernel, sg::DeviceCosts::uniform(20), {}, 1, std::nullopt};
  auto xi = g.add_node(x);
  auto yi = g.add_node(y);
  auto ar = g.add_collective("AR", {sg::CollectiveOp::kAllReduce, 10000});
  auto z = g.add_kernel("Z", sg::DeviceCosts::uniform(5));
  g.connect(xi, ar, 0);
  g.connect(yi, ar, 0);
  g.connect(ar, z, 0);
  for (auto algo : {sg::Algorithm::kHeft, sg::Algorithm::kRoundRobin}) {
    const auto pl = sg::place(g, two_devices(), opts(algo));
    expect_node(pl, ar, sg::kAllDevices, 20, 30);
    EXPECT_DOUBLE_EQ(pl.nodes[z].finish_us, 35);
    EXPECT_EQ(pl.device_order[0].size() + pl.device_order[1].size(), 5u);  // AR on both lists
  }
}

TEST(Placement, BoundsAreCriticalPathAndWorkOverDevices) {
  const auto g = fork_join();
  const auto p = two_devices();
  sg::CostModel m(p, sg::CostModelOptions::ideal());
  const auto b = sg::bounds(g, m);
  EXPECT_DOUBLE_EQ(b.critical_path_us, 40);
  EXPECT_DOUBLE_EQ(b.total_work_us, 60);
  EXPECT_DOUBLE_EQ(b.lower_bound_us, 40);
}

TEST(Placement, RejectsBadInputWithTypedErrors) {
  auto g = fork_join();
  const auto p = two_devices();
  // Empty device set.
  EXPECT_THROW((void)sg::place(g, sg::Platform{}, opts(sg::Algorithm::kHeft)), InvalidArgument);
  // Pinned device that does not exist: the message names the node.
  auto pinned = g;
  pinned.set_pinned_device(2, 5);
  try {
    (void)sg::place(pinned, p, opts(sg::Algorithm::kHeft));
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("'C'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("pinned_device 5"), std::string::npos) << e.what();
  }
  // A raw CUDA graph cannot be placed.
  sg::StepGraph raw(sg::GraphOrigin::kRawCudaGraph);
  raw.add_kernel("k", sg::DeviceCosts::uniform(1));
  try {
    (void)sg::place(raw, p);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("raw CUDA graph"), std::string::npos) << e.what();
  }
  // A cycle.
  auto cyc = g;
  cyc.connect(3, 0, 0);
  EXPECT_THROW((void)sg::place(cyc, p), InvalidArgument);
  // A node with no estimate for the kinds present.
  sg::StepGraph cpu_only;
  sg::DeviceCosts c;
  c.set(sg::DeviceKind::kCpu, 1);
  cpu_only.add_kernel("host_task", c);
  EXPECT_THROW((void)sg::place(cpu_only, p), InvalidArgument);
  EXPECT_THROW((void)sg::parse_algorithm("magic"), InvalidArgument);
}

TEST(Placement, DataParallelReplicationCopiesPerDeviceAroundOneGang) {
  sg::StepGraph g;
  auto buf = g.add_buffer("grad", 64);
  auto bw = g.add_kernel("bwd", sg::DeviceCosts::uniform(10), {{buf, 0, 64, sg::AccessMode::kWrite}});
  auto ar = g.add_collective("ar", {sg::CollectiveOp::kAllReduce, 64}, {{buf, 0, 64, sg::AccessMode::kReadWrite}});
  auto opt = g.add_kernel("opt", sg::DeviceCosts::uniform(3), {{buf, 0, 64, sg::AccessMode::kRead}});
  g.connect(bw, ar);
  g.connect(ar, opt);
  const auto r = sg::replicate_data_parallel(g, 3);
  EXPECT_EQ(r.node_count(), 7u);  // 3 bwd, 1 ar, 3 opt
  EXPECT_EQ(r.edge_count(), 6u);
  EXPECT_EQ(r.buffers().size(), 3u);
  EXPECT_NO_THROW(sg::validate(r));
  auto r1 = r.find("r1/opt");
  ASSERT_TRUE(r1.has_value());
  EXPECT_EQ(r.node(*r1).pinned_device, 1);
  const auto pl = sg::place(r, sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10, 1}));
  EXPECT_EQ(pl.nodes[*r1].device, 1);
}

TEST(Heft, QueuesTransfersThatShareALink) {
  // A(10) pinned dev0 feeds B(1) and C(1) pinned dev1, 10 kB each (10 us at
  // 1 GB/s). Ignoring contention both arrive at 20: B [20,21], C [21,22].
  // Modelling the link, A->C waits for A->B: link [20,30], C [30,31].
  sg::StepGraph g;
  auto pinned = [&](const char* name, double us, int dev) { return add_pinned(g, name, us, dev); };
  auto a = pinned("A", 10, 0);
  auto b = pinned("B", 1, 1);
  auto c = pinned("C", 1, 1);
  g.connect(a, b, 10000);
  g.connect(a, c, 10000);
  auto o = opts(sg::Algorithm::kHeft);
  o.links = sg::LinkContention::kIgnore;
  const auto naive = sg::place(g, two_devices(), o);
  expect_node(naive, b, 1, 20, 21);
  expect_node(naive, c, 1, 21, 22);
  o.links = sg::LinkContention::kModel;
  const auto queued = sg::place(g, two_devices(), o);
  expect_node(queued, b, 1, 20, 21);
  expect_node(queued, c, 1, 30, 31);
}

TEST(Heft, LookaheadPortfolioIsNeverSlowerThanTheClassicList) {
  // By construction: HEFT keeps the shorter (simulated) of the classic list
  // schedule and the optimistic-cost-table one, then checks serial.
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {10.0, 1.0});
  p.set_link(0, 1, {50.0, 0.5});
  p.set_link(2, 3, {50.0, 0.5});
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const sg::RandomDagSpec s{.nodes = 200, .ccr = 2.0, .reference_bandwidth_gbps = 15, .seed = seed};
    const auto g = sg::make_random_dag(s);
    // Both judged by simulation (the default): the portfolio's result is the
    // minimum over {classic, OCT, serial}, the classic one over {classic,
    // serial}.
    sg::PlaceOptions classic;
    classic.search_evaluations = 0;  // the list schedules themselves
    classic.lookahead = sg::Lookahead::kOff;
    sg::PlaceOptions portfolio;
    portfolio.search_evaluations = 0;  // the list schedules themselves
    const double a = sg::simulate(g, p, sg::place(g, p, classic)).makespan_us;
    const double b = sg::simulate(g, p, sg::place(g, p, portfolio)).makespan_us;
    EXPECT_LE(b, a + 1e-6) << "seed " << seed;
  }
}

TEST(Heft, ChargesTheDelayAQueuedTransferInflictsOnItsLink) {
  // dev0 a CPU, dev1 and dev2 GPUs; 0->1 at 1 GB/s (1000 B/us), 0->2 at
  // 0.2 GB/s, no latency, ideal cost model. A(10, CPU) feeds B(100, pinned
  // dev1) 50 kB and C(10, GPU) 31 kB. B goes first (higher rank): link 0->1
  // [10,60], B [60,160]. C on dev1: its transfer queues after A->B on the
  // link, s = 60, arrives 91, C after B [160,170]. C on dev2: 31 kB at
  // 200 B/us = 155 us, C [165,175]. Queueing alone picks dev1 (170 < 175);
  // charging the delay C's transfer inflicts on A->B (min(31, 60 - 10) = 31)
  // scores dev1 201 and picks dev2.
  // The simulator (transfers share a link from their source's finish) agrees
  // with the charge: C on dev1 makes both transfers share 0->1 from t = 10,
  // A->C done at 72 (62 kB flowed), A->B at 91; C [72,82], B [91,191]: 191.
  // C on dev2: B [60,160], C [165,175]: 175.
  sg::Platform p({sg::Device{"cpu0", sg::DeviceKind::kCpu, 1.0, 0}, sg::Device{"gpu1", sg::DeviceKind::kGpu, 1.0, 0},
                  sg::Device{"gpu2", sg::DeviceKind::kGpu, 1.0, 0}},
                 {1.0, 0.0});
  p.set_link(0, 2, {0.2, 0.0});
  sg::StepGraph g;
  auto node = [&](const char* name, sg::DeviceKind kind, double us, std::optional<int> pin) {
    return add_node(g, name, kind, us, pin);
  };
  auto a = node("A", sg::DeviceKind::kCpu, 10, std::nullopt);
  auto b = node("B", sg::DeviceKind::kGpu, 100, 1);
  auto c = node("C", sg::DeviceKind::kGpu, 10, std::nullopt);
  g.connect(a, b, 50000);
  g.connect(a, c, 31000);
  auto o = opts(sg::Algorithm::kHeft);
  o.lookahead = sg::Lookahead::kOff;
  o.fallback = sg::SerialFallback::kOff;
  o.link_penalty = sg::SharedLinkPenalty::kOff;
  const auto queued = sg::place(g, p, o);
  expect_node(queued, b, 1, 60, 160);
  expect_node(queued, c, 1, 160, 170);
  o.link_penalty = sg::SharedLinkPenalty::kCharge;
  const auto charged = sg::place(g, p, o);
  expect_node(charged, b, 1, 60, 160);
  expect_node(charged, c, 2, 165, 175);
  const sg::SimulateOptions so{sg::CostModelOptions::ideal()};
  EXPECT_DOUBLE_EQ(sg::simulate(g, p, queued, so).makespan_us, 191);
  EXPECT_DOUBLE_EQ(sg::simulate(g, p, charged, so).makespan_us, 175);
}

TEST(Heft, SharedViewLetsATransferShareItsLinkInsteadOfQueueing) {
  // dev0 a CPU, dev1 and dev2 GPUs, every pair 1 GB/s (1000 B/us), no
  // latency, ideal cost model. A(10, CPU) feeds B(1, pinned dev1) 50 kB and
  // C(1, pinned dev1 or dev2) 31 kB; B goes first (equal ranks, B added
  // first). A->B alone flows [10, 60], B [60, 61].
  // Queued (kModel): A->C waits for the link: [60, 91], C [91, 92].
  // Shared (kShare), private link 0->1: A->C flows beside A->B from 10 at
  // half rate, 25 us of its 31 by 60, the last 6 alone: arrives 66, C
  // [66, 67]. The same with 0->1 and 0->2 both crossing one 1 GB/s uplink
  // (a route) and C pinned to dev2. With a 2 GB/s uplink the route's share
  // is 2/2 = 1: C's transfer flows at the pair's full rate, [10, 41]; the
  // queue still makes it wait.
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE("variant " + std::to_string(variant));
    sg::Platform p({sg::Device{"cpu0", sg::DeviceKind::kCpu, 1.0, 0}, sg::Device{"gpu1", sg::DeviceKind::kGpu, 1.0, 0},
                    sg::Device{"gpu2", sg::DeviceKind::kGpu, 1.0, 0}},
                   {1.0, 0.0});
    int c_dev = 1;
    if (variant > 0) {
      const auto up = p.add_shared_link({"up0", variant == 1 ? 1.0 : 2.0});
      p.set_route(0, 1, {up});
      p.set_route(0, 2, {up});
      c_dev = 2;
    }
    sg::StepGraph g;
    auto node = [&](const char* name, sg::DeviceKind kind, double us, std::optional<int> pin) {
      return add_node(g, name, kind, us, pin);
    };
    auto a = node("A", sg::DeviceKind::kCpu, 10, std::nullopt);
    auto b = node("B", sg::DeviceKind::kGpu, 1, 1);
    auto c = node("C", sg::DeviceKind::kGpu, 1, c_dev);
    g.connect(a, b, 50000);
    g.connect(a, c, 31000);
    auto o = opts(sg::Algorithm::kHeft);
    o.lookahead = sg::Lookahead::kOff;
    o.fallback = sg::SerialFallback::kOff;
    o.uniform_view = sg::UniformView::kOff;
    o.shared_view = sg::SharedView::kOff;
    const auto queued = sg::place(g, p, o);
    expect_node(queued, b, 1, 60, 61);
    expect_node(queued, c, c_dev, 91, 92);  // a queue holds one transfer at a time
    o.links = sg::LinkContention::kShare;
    const auto shared = sg::place(g, p, o);
    expect_node(shared, b, 1, 60, 61);
    expect_node(shared, c, c_dev, variant == 2 ? 41 : 66, variant == 2 ? 42 : 67);
  }
}

TEST(Heft, SharedLinkPenaltyBeatsQueueingAndRoundRobinOnAUniformSwitch) {
  // The benchmark's hard case (docs/placement.md): 16 equal devices (an
  // NVSwitch machine), narrow random DAGs with out-degree 5 at CCR 5. Judged
  // by the simulator, HEFT's list schedules charging the shared-link delay
  // are faster on average than those that only queue, and than round-robin.
  const auto p = sg::Platform::uniform(16, sg::DeviceKind::kGpu, {120.0, 0.6});
  double charged = 0, queued = 0, rr = 0;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const sg::RandomDagSpec s{.nodes = 200,
                              .shape = 0.5,
                              .out_degree = 5,
                              .ccr = 5.0,
                              .mean_cost_us = 500,
                              .reference_bandwidth_gbps = 120.0,
                              .seed = seed};
    const auto g = sg::make_random_dag(s);
    sg::PlaceOptions o;
    o.search_evaluations = 0;               // the list schedules themselves
    o.fallback = sg::SerialFallback::kOff;  // compare the list schedules themselves
    charged += sg::simulate(g, p, sg::place(g, p, o)).makespan_us;
    o.link_penalty = sg::SharedLinkPenalty::kOff;
    queued += sg::simulate(g, p, sg::place(g, p, o)).makespan_us;
    o.algorithm = sg::Algorithm::kRoundRobin;
    rr += sg::simulate(g, p, sg::place(g, p, o)).makespan_us;
  }
  EXPECT_LT(charged, queued);
  EXPECT_LT(charged, rr);
}

TEST(Heft, PortfolioKeepsTheUniformViewScheduleOnlyWhenItIsFaster) {
  // Note [HEFT portfolio]: judged by simulation on the real platform, HEFT
  // is never slower than heft-blind (whose lists are among its candidates),
  // and without the uniform view it never returns one of those lists.
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {10.0, 1.0});
  p.set_link(0, 1, {50.0, 0.5});
  p.set_link(2, 3, {50.0, 0.5});
  int uniform_chosen = 0;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    const sg::RandomDagSpec s{
        .nodes = 150, .ccr = seed % 2 == 0 ? 0.1 : 1.0, .reference_bandwidth_gbps = 15, .seed = seed};
    const auto g = sg::make_random_dag(s);
    sg::PlaceOptions o;
    o.search_evaluations = 0;  // the list schedules themselves
    const auto heft = sg::place(g, p, o);
    uniform_chosen +=
        heft.source == sg::ScheduleSource::kUniformList || heft.source == sg::ScheduleSource::kUniformLookahead;
    o.algorithm = sg::Algorithm::kHeftBlind;
    const auto blind = sg::place(g, p, o);
    EXPECT_LE(sg::simulate(g, p, heft).makespan_us, sg::simulate(g, p, blind).makespan_us + 1e-6) << seed;
    sg::PlaceOptions real_only;
    real_only.search_evaluations = 0;  // the list schedules themselves
    real_only.uniform_view = sg::UniformView::kOff;
    const auto r = sg::place(g, p, real_only);
    EXPECT_NE(r.source, sg::ScheduleSource::kUniformList);
    EXPECT_NE(r.source, sg::ScheduleSource::kUniformLookahead);
    EXPECT_NE(r.source, sg::ScheduleSource::kAssignment);
  }
  RecordProperty("uniform_view_chosen", uniform_chosen);
}

TEST(Heft, ReservesOneSlotOnEverySharedLinkOfARoute) {
  // Four devices, private links 1 GB/s; routes 0->2 and 1->3 both cross one
  // shared 1 GB/s link. A(10) pinned 0 -> B(1) pinned 2 and X(10) pinned
  // 1 -> Y(1) pinned 3, 10 kB each (10 us). HEFT reserves the shared link
  // for A->B [10,20] (B [20,21]); X->Y must wait for it: [20,30], Y [30,31].
  // Without the routes both transfers have their own links: Y [20,21].
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {1.0, 0.0});
  sg::StepGraph g;
  auto pinned = [&](const char* name, double us, int dev) { return add_pinned(g, name, us, dev); };
  auto a = pinned("A", 10, 0), b = pinned("B", 1, 2), x = pinned("X", 10, 1), y = pinned("Y", 1, 3);
  g.connect(a, b, 10000);
  g.connect(x, y, 10000);
  auto o = opts(sg::Algorithm::kHeft);
  o.fallback = sg::SerialFallback::kOff;
  const auto apart = sg::place(g, p, o);
  expect_node(apart, y, 3, 20, 21);
  const auto smp = p.add_shared_link({"smp", 1.0});
  p.set_route(0, 2, {smp});
  p.set_route(1, 3, {smp});
  const auto shared = sg::place(g, p, o);
  const bool ab_first = shared.nodes[b].start_us < shared.nodes[y].start_us;
  expect_node(shared, ab_first ? b : y, ab_first ? 2 : 3, 20, 21);
  expect_node(shared, ab_first ? y : b, ab_first ? 3 : 2, 30, 31);
}

TEST(Heft, NumaSubsetsKeepAStepOnOneSocketWhenTheSocketLinkIsTheBottleneck) {
  // Two sockets of two GPUs: 50 GB/s inside a socket, every cross-socket
  // pair routed over one shared 2 GB/s link per direction. Judged by the
  // simulator, the portfolio with NUMA subsets is never slower than without
  // (Note [NUMA subsets]), keeps a one-socket schedule for some graphs, and
  // heft-blind never gets one.
  std::vector<sg::Device> devs;
  for (int i = 0; i < 4; ++i) devs.push_back(sg::Device{"gpu" + std::to_string(i), sg::DeviceKind::kGpu, 1.0, i / 2});
  sg::Platform p(devs, {50.0, 1.0});
  const auto up = p.add_shared_link({"smp 0->1", 2.0});
  const auto down = p.add_shared_link({"smp 1->0", 2.0});
  for (std::size_t a = 0; a < 4; ++a)
    for (std::size_t b = 0; b < 4; ++b)
      if (a / 2 != b / 2) {
        p.set_link(a, b, {2.0, 2.0});
        p.set_route(a, b, {a < b ? up : down});
      }
  int kept = 0;
  for (std::uint64_t seed = 1; seed <= 6; ++seed) {
    const sg::RandomDagSpec s{.nodes = 120, .ccr = 1.0, .reference_bandwidth_gbps = 20, .seed = seed};
    const auto g = sg::make_random_dag(s);
    sg::PlaceOptions with;
    with.search_evaluations = 0;  // the list schedules themselves
    const auto a = sg::place(g, p, with);
    kept += a.source == sg::ScheduleSource::kNumaList || a.source == sg::ScheduleSource::kNumaLookahead;
    if (a.source == sg::ScheduleSource::kNumaList || a.source == sg::ScheduleSource::kNumaLookahead) {
      std::set<int> sockets;
      for (const auto& n : a.nodes) sockets.insert(n.device / 2);
      EXPECT_EQ(sockets.size(), 1u) << seed;
    }
    sg::PlaceOptions without;
    without.search_evaluations = 0;  // the list schedules themselves
    without.numa_subsets = sg::NumaSubsets::kOff;
    EXPECT_LE(sg::simulate(g, p, a).makespan_us, sg::simulate(g, p, sg::place(g, p, without)).makespan_us + 1e-6)
        << seed;
    with.algorithm = sg::Algorithm::kHeftBlind;
    const auto blind = sg::place(g, p, with);
    EXPECT_NE(blind.source, sg::ScheduleSource::kNumaList);
    EXPECT_NE(blind.source, sg::ScheduleSource::kNumaLookahead);
  }
  EXPECT_GT(kept, 0);
}
