// Generators: structure, determinism, and the properties the benchmark
// relies on (CCR, level shape), checked by counting.
#include <gtest/gtest.h>

#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/graphs/workloads.h>

namespace sg = stepgraph::graphs;

TEST(Workloads, TransformerHasFiveNodesPerLayerPlusLossAndValidates) {
  sg::TransformerSpec s;
  s.layers = 3;
  const auto g = sg::make_transformer(s);
  EXPECT_EQ(g.node_count(), 3u * 5 + 1);
  EXPECT_NO_THROW(sg::validate(g));  // includes the race check over buffers
  // fwd1 -> fwd2 carries one activation: tokens * hidden * 2 bytes.
  const auto f1 = *g.find("fwd1"), f2 = *g.find("fwd2");
  for (const auto& e : g.edges()) {
    if (e.src == f1 && e.dst == f2) {
      EXPECT_EQ(e.bytes, 8u * 1024 * 1024 * 2);
    }
  }
  // Forward cost from FLOPs: 2·12h²·tokens + 4·seq·h·tokens at 100 TFLOP/s.
  const double tokens = 8.0 * 1024, h = 1024;
  const double flops = 2 * 12 * h * h * tokens + 4 * 1024 * h * tokens;
  EXPECT_NEAR(*g.node(f1).cost.get(sg::DeviceKind::kGpu), flops / 100e6, 1e-6);
  const auto ar = *g.find("allreduce0");
  EXPECT_EQ(g.node(ar).collective->bytes, static_cast<std::uint64_t>(12 * h * h * 2));
  // Placeable and simulable on 4 GPUs; data-parallel copy as well.
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {50.0, 2.0});
  auto pl = sg::place(g, p);
  EXPECT_GT(sg::simulate(g, p, pl).makespan_us, 0);
  auto dp = sg::replicate_data_parallel(g, 4);
  EXPECT_EQ(dp.node_count(), 4u * (3 * 4 + 1) + 3);
  EXPECT_NO_THROW(sg::validate(dp));
}

TEST(Workloads, RandomDagIsDeterministicLayeredAndHitsItsCcr) {
  const sg::RandomDagSpec s{.nodes = 1000,
                            .shape = 1.0,
                            .out_degree = 3,
                            .ccr = 5.0,
                            .mean_cost_us = 100,
                            .reference_bandwidth_gbps = 10,
                            .seed = 42};
  const auto g = sg::make_random_dag(s);
  const auto g2 = sg::make_random_dag(s);
  ASSERT_EQ(g.node_count(), 1000u);
  ASSERT_EQ(g.edge_count(), g2.edge_count());
  EXPECT_EQ(g.edges().back().bytes, g2.edges().back().bytes);
  EXPECT_NO_THROW(sg::validate(g));
  double cost = 0, comm = 0;
  for (const auto& n : g.nodes()) cost += *n.cost.get(sg::DeviceKind::kGpu);
  for (const auto& e : g.edges()) comm += static_cast<double>(e.bytes) / (10 * 1e3);
  const double ccr = (comm / g.edge_count()) / (cost / g.node_count());
  EXPECT_NEAR(ccr, 5.0, 0.5);
  // Edges only go to later levels, so node ids are a topological order.
  for (const auto& e : g.edges()) EXPECT_LT(e.src, e.dst);
  // Out-degree at most 3, about sqrt(1000) ≈ 32 levels: the critical path
  // has roughly that many nodes.
  std::vector<double> w(g.node_count(), 1.0);
  const auto cp = sg::critical_path(g, w);
  EXPECT_GE(cp.nodes.size(), 20u);
  EXPECT_LE(cp.nodes.size(), 40u);
}

TEST(Workloads, HeterogeneityDrawsPerKindCostsAroundTheMean) {
  const sg::RandomDagSpec s{.nodes = 400, .heterogeneity = 0.5};
  const auto g = sg::make_random_dag(s);
  bool differ = false;
  for (const auto& n : g.nodes()) {
    const double a = *n.cost.get(sg::DeviceKind::kGpu), b = *n.cost.get(sg::DeviceKind::kCpu);
    // both within w̄(1 ± 0.25): their ratio within 0.75/1.25 .. 1.25/0.75
    EXPECT_GE(a / b, 0.6 - 1e-9);
    EXPECT_LE(a / b, 1.0 / 0.6 + 1e-9);
    differ = differ || a != b;
  }
  EXPECT_TRUE(differ);
}

TEST(Workloads, ForkJoinHasWidthParallelNodesPerStage) {
  const auto g = sg::make_fork_join({3, 4, 10.0, 100});
  EXPECT_EQ(g.node_count(), 1u + 3 * (4 + 1));
  EXPECT_EQ(g.edge_count(), 3u * 4 * 2);
  std::vector<double> w(g.node_count(), 10.0);
  EXPECT_DOUBLE_EQ(sg::critical_path(g, w).length_us, 70.0);  // fork + 3 × (worker + join)
  // Four devices, ideal costs, free communication: each stage takes 20 us.
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {1e6, 0.0});
  sg::PlaceOptions o;
  o.cost = sg::CostModelOptions::ideal();
  auto pl = sg::place(g, p, o);
  EXPECT_NEAR(pl.estimated_makespan_us, 70.0, 1e-3);
}
