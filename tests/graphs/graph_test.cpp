// IR, builder and validation passes, checked against hand-worked graphs.
#include <gtest/gtest.h>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/graph.h>

namespace sg = stepgraph::graphs;
using stepgraph::InvalidArgument;

namespace {
// A(10) -> B(20), A -> C(30), B -> D(5), C -> D.
sg::StepGraph diamond() {
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(10));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(20));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(30));
  auto d = g.add_kernel("D", sg::DeviceCosts::uniform(5));
  g.connect(a, b, 100);
  g.connect(a, c, 200);
  g.connect(b, d, 300);
  g.connect(c, d, 400);
  return g;
}

template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(StepGraph, BuilderAssignsDenseIdsAndKeepsEdges) {
  auto g = diamond();
  ASSERT_EQ(g.node_count(), 4u);
  ASSERT_EQ(g.edge_count(), 4u);
  EXPECT_EQ(g.node(2).name, "C");
  EXPECT_EQ(g.edges()[3].bytes, 400u);
  EXPECT_EQ(g.find("D"), sg::NodeId{3});
  EXPECT_FALSE(g.find("nope").has_value());
  EXPECT_NO_THROW(sg::validate(g));
}

TEST(StepGraph, ConnectDerivesBytesFromWriteReadOverlap) {
  sg::StepGraph g;
  auto buf = g.add_buffer("x", 1000);
  auto other = g.add_buffer("y", 1000);
  // Writer writes [100, 600) of x and all of y; reader reads [400, 900) of x
  // and nothing of y: 200 bytes flow.
  auto w = g.add_kernel("w", sg::DeviceCosts::uniform(1),
                        {{buf, 100, 500, sg::AccessMode::kWrite}, {other, 0, 1000, sg::AccessMode::kWrite}});
  auto r = g.add_kernel("r", sg::DeviceCosts::uniform(1), {{buf, 400, 500, sg::AccessMode::kReadWrite}});
  g.connect(w, r);
  EXPECT_EQ(g.edges().at(0).bytes, 200u);
}

TEST(StepGraph, RejectsAccessOutsideItsBuffer) {
  sg::StepGraph g;
  auto buf = g.add_buffer("x", 100);
  auto msg = error_of([&] { g.add_kernel("k", {}, {{buf, 50, 60, sg::AccessMode::kRead}}); });
  EXPECT_NE(msg.find("'k'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("buffer 'x'"), std::string::npos) << msg;
}

TEST(StepGraph, RejectsNegativeAndNanCosts) {
  EXPECT_THROW(sg::DeviceCosts::uniform(-1), InvalidArgument);
  EXPECT_THROW(sg::DeviceCosts::uniform(std::nan("")), InvalidArgument);
  EXPECT_THROW(sg::DeviceCosts().set(sg::DeviceKind::kGpu, INFINITY), InvalidArgument);
}

TEST(StepGraph, CollectiveNeedsItsSpecAndOnlyCollectivesHaveOne) {
  sg::StepGraph g;
  sg::NodeSpec s;
  s.name = "ar";
  s.kind = sg::NodeKind::kCollective;
  auto msg = error_of([&] { g.add_node(s); });
  EXPECT_NE(msg.find("'ar'"), std::string::npos) << msg;
  s.kind = sg::NodeKind::kKernel;
  s.collective = sg::CollectiveSpec{};
  EXPECT_THROW(g.add_node(s), InvalidArgument);
}

TEST(Validate, ReportsCycleWithTheNodesOnIt) {
  sg::StepGraph g;
  auto a = g.add_kernel("alpha", {});
  auto b = g.add_kernel("beta", {});
  auto c = g.add_kernel("gamma", {});
  g.add_kernel("outside", {});
  g.connect(a, b, 0);
  g.connect(b, c, 0);
  g.connect(c, a, 0);
  auto msg = error_of([&] { sg::validate(g); });
  EXPECT_NE(msg.find("cycle"), std::string::npos) << msg;
  for (const char* n : {"alpha", "beta", "gamma"}) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  EXPECT_EQ(msg.find("outside"), std::string::npos) << msg;
  EXPECT_EQ(sg::find_cycle(g).size(), 3u);
  EXPECT_THROW((void)sg::topological_order(g), InvalidArgument);
}

TEST(Validate, ReportsDanglingEdge) {
  sg::StepGraph g;
  g.add_kernel("a", {});
  g.add_edge_unchecked({0, 7, 0});
  auto msg = error_of([&] { sg::validate(g); });
  EXPECT_NE(msg.find("dangling"), std::string::npos) << msg;
  EXPECT_NE(msg.find("7"), std::string::npos) << msg;
  EXPECT_THROW(g.connect(0, 9), InvalidArgument);
}

TEST(Validate, ReportsUnorderedWriteConflictNamingBothNodes) {
  sg::StepGraph g;
  auto buf = g.add_buffer("grad", 1024);
  g.add_kernel("writer", {}, {{buf, 0, 512, sg::AccessMode::kWrite}});
  g.add_kernel("reader", {}, {{buf, 256, 512, sg::AccessMode::kRead}});
  auto msg = error_of([&] { sg::validate(g); });
  EXPECT_NE(msg.find("writer"), std::string::npos) << msg;
  EXPECT_NE(msg.find("reader"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[256, 512)"), std::string::npos) << msg;
  EXPECT_NO_THROW(sg::validate(g, {sg::RaceCheck::kSkip}));
}

TEST(Validate, AcceptsConflictOrderedByAPathAndDisjointOrReadOnlyAccesses) {
  sg::StepGraph g;
  auto buf = g.add_buffer("x", 1024);
  auto w = g.add_kernel("w", {}, {{buf, 0, 512, sg::AccessMode::kWrite}});
  auto mid = g.add_kernel("mid", {});
  auto r = g.add_kernel("r", {}, {{buf, 0, 512, sg::AccessMode::kRead}});
  g.add_kernel("disjoint_writer", {}, {{buf, 512, 512, sg::AccessMode::kWrite}});
  g.add_kernel("another_reader", {}, {{buf, 600, 10, sg::AccessMode::kRead}});
  g.connect(w, mid, 0);
  g.connect(mid, r, 0);
  // another_reader overlaps disjoint_writer: add the order.
  g.connect(3, 4, 0);
  EXPECT_NO_THROW(sg::validate(g));
}

TEST(Passes, TopologicalOrderBreaksTiesByNodeId) {
  sg::StepGraph g;
  for (const char* n : {"a", "b", "c", "d"}) g.add_kernel(n, {});
  g.connect(3, 0, 0);
  g.connect(1, 0, 0);
  // Sources 1, 2, 3 in id order, then 0.
  EXPECT_EQ(sg::topological_order(g), (std::vector<sg::NodeId>{1, 2, 3, 0}));
}

TEST(Passes, CriticalPathOfDiamondFollowsTheHeavierBranch) {
  auto g = diamond();
  auto cp = sg::critical_path(g, {10, 20, 30, 5});
  EXPECT_DOUBLE_EQ(cp.length_us, 45.0);  // A + C + D
  EXPECT_EQ(cp.nodes, (std::vector<sg::NodeId>{0, 2, 3}));
  EXPECT_THROW((void)sg::critical_path(g, {1, 2}), InvalidArgument);
}
