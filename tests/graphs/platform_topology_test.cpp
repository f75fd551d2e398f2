// Platform::from_cost_matrix on the DGX-1 layout (a copy of the topology
// tests' fixture). Reference: NVIDIA's `nvidia-smi topo -m` of a DGX-1 V100
// (tests/topology/fixtures/dgx1-v100-nvidia-smi-topo-m.txt): GPU0 has NV1 to
// GPU1 and GPU2, NV2 to GPU3 and GPU4, SYS to GPU5..7.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

namespace sg = stepgraph::graphs;
namespace topo = stepgraph::topology;

namespace {
topo::CostMatrix dgx1() {
  return topo::CostMatrix::build(topo::Topology::load(STEPGRAPH_TEST_DATA_DIR "/fixtures/dgx1-v100-layout.xml"));
}
}  // namespace

TEST(PlatformFromCostMatrix, GpuSetFollowsTheNvLinkCubeMesh) {
  const auto p = sg::Platform::from_cost_matrix(dgx1());
  ASSERT_EQ(p.size(), 8u);
  for (const auto& d : p.devices()) EXPECT_EQ(d.kind, sg::DeviceKind::kGpu);
  const double nv1 = p.link(0, 1).bandwidth_gbps, nv2 = p.link(0, 3).bandwidth_gbps;
  const double sys = p.link(0, 5).bandwidth_gbps;
  EXPECT_DOUBLE_EQ(p.link(0, 2).bandwidth_gbps, nv1);
  EXPECT_DOUBLE_EQ(p.link(0, 4).bandwidth_gbps, nv2);
  EXPECT_NEAR(nv2, 2 * nv1, 1e-9);  // two links vs one
  EXPECT_GT(nv1, sys);
  EXPECT_DOUBLE_EQ(p.link(0, 6).bandwidth_gbps, sys);
  EXPECT_DOUBLE_EQ(p.link(5, 0).bandwidth_gbps, sys);  // symmetric
  // GPU0 and GPU1 share a socket; GPU0 and GPU5 do not.
  EXPECT_LT(p.numa_distance(0, 1), p.numa_distance(0, 5));
}

TEST(PlatformFromCostMatrix, MixedSetAppendsNumaNodesAsCpuDevices) {
  const auto p = sg::Platform::from_cost_matrix(dgx1(), sg::EndpointSelection::kGpusAndNuma);
  ASSERT_EQ(p.size(), 10u);
  EXPECT_EQ(p.device(8).kind, sg::DeviceKind::kCpu);
  EXPECT_EQ(p.device(9).kind, sg::DeviceKind::kCpu);
  // A GPU reaches its own socket's memory faster than the other socket's.
  EXPECT_GT(p.link(0, 8).bandwidth_gbps, p.link(0, 9).bandwidth_gbps);
  const auto numa = sg::Platform::from_cost_matrix(dgx1(), sg::EndpointSelection::kNuma);
  EXPECT_EQ(numa.size(), 2u);
}

TEST(PlatformFromCostMatrix, HeftUsesTheNvLinkPeerForAHeavyFlow) {
  // A(100) feeds B(1000) and C(1000) with 16 MiB each. On {GPU0, GPU3 (NV2),
  // GPU5 (SYS)} the second consumer goes to the NVLink peer, never across the
  // sockets: 16 MiB over NV2 costs far less than B's 1000 us wait on GPU0,
  // over SYS far more.
  const auto p = sg::Platform::from_cost_matrix(dgx1()).subset({0, 3, 5});
  sg::StepGraph g;
  auto a = g.add_kernel("A", sg::DeviceCosts::uniform(100));
  auto b = g.add_kernel("B", sg::DeviceCosts::uniform(1000));
  auto c = g.add_kernel("C", sg::DeviceCosts::uniform(1000));
  g.connect(a, b, 16 << 20);
  g.connect(a, c, 16 << 20);
  sg::CostModel m(p);
  ASSERT_LT(m.transfer_us(0, 1, 16 << 20), 1000.0);
  ASSERT_GT(m.transfer_us(0, 2, 16 << 20), 1000.0);
  const auto pl = sg::place(g, p);
  EXPECT_EQ(pl.device(a), pl.device(b));
  EXPECT_EQ(pl.device(c), 1);
}

TEST(PlatformFromCostMatrix, RoutesShareTheInterSocketLinkAndTheSwitchUplink) {
  // nvidia-smi topo -m of a DGX-1: GPU0 -> GPU5 is SYS (no NVLink), so it
  // crosses PCIe and the inter-socket link; so does GPU1 -> GPU6. GPU0 and
  // GPU1 sit behind one PLX switch (0000:03:00.0 in the layout file), so
  // both routes share its uplink and the SMP link. GPU0 -> GPU1 is NV1: its
  // own NVLink only.
  const auto p = sg::Platform::from_cost_matrix(dgx1());
  const auto& r05 = p.route(0, 5);
  const auto& r16 = p.route(1, 6);
  ASSERT_FALSE(r05.empty());
  ASSERT_FALSE(r16.empty());
  std::vector<std::string> shared;
  for (auto l : r05)
    if (std::find(r16.begin(), r16.end(), l) != r16.end()) shared.push_back(p.shared_links()[l].name);
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_TRUE(std::any_of(shared.begin(), shared.end(), [](const std::string& n) { return n.starts_with("smp:"); }));
  EXPECT_TRUE(std::any_of(shared.begin(), shared.end(),
                          [](const std::string& n) { return n.find("03:00.0") != std::string::npos; }));
  ASSERT_EQ(p.route(0, 1).size(), 1u);
  EXPECT_TRUE(p.shared_links()[p.route(0, 1)[0]].name.starts_with("nvlink:"));
  // Every route's narrowest link is the pair's bandwidth.
  for (std::size_t a = 0; a < p.size(); ++a)
    for (std::size_t b = 0; b < p.size(); ++b) {
      if (a == b) continue;
      double narrowest = 1e300;
      for (auto l : p.route(a, b)) narrowest = std::min(narrowest, p.shared_links()[l].bandwidth_gbps);
      EXPECT_DOUBLE_EQ(narrowest, p.link(a, b).bandwidth_gbps) << a << "->" << b;
    }
  // Blind to topology: no routes.
  EXPECT_TRUE(p.without_topology().route(0, 5).empty());
}
