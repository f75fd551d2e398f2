// Cost model against hand-computed values.
#include <gtest/gtest.h>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/cost_model.h>

namespace sg = stepgraph::graphs;

TEST(CostModel, NodeCostIsEstimateOverSpeedWithLaunchFloor) {
  sg::Platform p({{"g0", sg::DeviceKind::kGpu, 2.0, 0}, {"c0", sg::DeviceKind::kCpu, 1.0, 0}});
  sg::CostModel m(p);  // floors: gpu 2 us, cpu 5 us
  sg::StepGraph g;
  auto big = g.add_kernel("big", sg::DeviceCosts::gpu_cpu(100, 400));
  auto tiny = g.add_kernel("tiny", sg::DeviceCosts::gpu_cpu(1, 1));
  sg::DeviceCosts gpu_only;
  gpu_only.set(sg::DeviceKind::kGpu, 10);
  auto g_only = g.add_kernel("gpu_only", gpu_only);
  EXPECT_DOUBLE_EQ(m.node_us(g.node(big), 0), 50.0);  // 100 / speed 2
  EXPECT_DOUBLE_EQ(m.node_us(g.node(big), 1), 400.0);
  EXPECT_DOUBLE_EQ(m.node_us(g.node(tiny), 0), 2.0);  // floor
  EXPECT_DOUBLE_EQ(m.node_us(g.node(tiny), 1), 5.0);  // floor
  EXPECT_FALSE(m.can_run(g.node(g_only), 1));
  EXPECT_TRUE(std::isinf(m.node_us(g.node(g_only), 1)));
}

TEST(CostModel, TransferIsSyncPlusLatencyPlusBytesOverBandwidth) {
  auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10.0, 2.0});
  p.set_link(0, 2, {50.0, 1.0});
  sg::CostModel m(p);  // sync 5 us
  // 1e6 bytes at 10 GB/s = 100 us; + 2 latency + 5 sync.
  EXPECT_DOUBLE_EQ(m.transfer_us(0, 1, 1'000'000), 107.0);
  EXPECT_DOUBLE_EQ(m.transfer_us(2, 0, 1'000'000), 26.0);  // 20 + 1 + 5
  EXPECT_DOUBLE_EQ(m.transfer_us(1, 1, 1'000'000), 0.0);
  EXPECT_DOUBLE_EQ(m.transfer_us(0, 1, 0), 5.0);  // synchronisation only
}

TEST(CostModel, AllReduceIsAlphaBetaRingAtNarrowestLink) {
  // 4 devices; all links 20 GB/s except 0-1 at 10 GB/s. The widest ring
  // avoids 0-1 (e.g. 0-2-1-3-0): bottleneck 20 GB/s.
  auto p = sg::Platform::uniform(4, sg::DeviceKind::kGpu, {20.0, 1.0});
  p.set_link(0, 1, {10.0, 1.0});
  sg::CostModel m(p);
  EXPECT_DOUBLE_EQ(m.ring_bandwidth_gbps(), 20.0);
  // base 6.8 + 2(p-1)(lat 1 + step 0.6) + 2(p-1)/p * 8e6 B / 2e4 B/us
  const double expect = 6.8 + 6 * 1.6 + 1.5 * 400.0;
  EXPECT_NEAR(m.collective_us({sg::CollectiveOp::kAllReduce, 8'000'000}), expect, 1e-9);
  // AllGather: base + (p-1) alpha + (p-1)/p bytes/B
  EXPECT_NEAR(m.collective_us({sg::CollectiveOp::kAllGather, 8'000'000}), 6.8 + 3 * 1.6 + 0.75 * 400.0, 1e-9);
  // A full mesh where every ring must cross a 5 GB/s link.
  auto q = sg::Platform::uniform(2, sg::DeviceKind::kGpu, {5.0, 0.0});
  sg::CostModel mq(q, sg::CostModelOptions::ideal());
  EXPECT_NEAR(mq.collective_us({sg::CollectiveOp::kAllReduce, 10'000}), 2.0 * 1 / 2 * 10'000 / 5e3, 1e-12);
}

TEST(CostModel, EmptyDeviceSetIsRejected) {
  sg::Platform empty;
  EXPECT_THROW(sg::CostModel m(empty), stepgraph::InvalidArgument);
}

TEST(Platform, WithoutTopologyKeepsMeanPerByteTime) {
  auto p = sg::Platform::uniform(3, sg::DeviceKind::kGpu, {10.0, 1.0});
  p.set_link(0, 1, {40.0, 3.0});
  auto blind = p.without_topology();
  // per-byte: pairs (0,1),(1,0) at 1/40, four at 1/10 -> mean = (2/40 + 4/10)/6 = 0.075 -> 13.33 GB/s
  EXPECT_NEAR(blind.link(0, 2).bandwidth_gbps, 1.0 / 0.075, 1e-9);
  EXPECT_NEAR(blind.link(1, 0).bandwidth_gbps, 1.0 / 0.075, 1e-9);
  EXPECT_NEAR(blind.link(2, 1).latency_us, (2 * 3.0 + 4 * 1.0) / 6.0, 1e-12);
  auto sub = p.subset({1, 0});
  EXPECT_DOUBLE_EQ(sub.link(0, 1).bandwidth_gbps, 40.0);
  EXPECT_THROW(p.set_link(0, 0, {1, 1}), stepgraph::InvalidArgument);
  EXPECT_THROW(p.set_link(0, 1, {-1, 1}), stepgraph::InvalidArgument);
}
