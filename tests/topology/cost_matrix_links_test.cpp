// Tests of the physical links each CostMatrix path crosses (Path::links,
// CostMatrix::links(); docs/topology.md "Physical links"). References are
// read by hand from the fixture XML (bus ids, switches, NVLink counts) and
// from the documented naming scheme, never from output of this code.
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "topology_fixtures.h"

namespace sg = stepgraph;
using sg::topology::CostMatrix;
using sg::topology::Path;
using sg::topology::PathKind;
using sg::topology::Topology;

using namespace sg::topology::testing;  // load, gpu_pos, nic_pos, numa_pos

namespace {

CostMatrix matrix(const std::string& name) {
  return CostMatrix::build(load(name));
}

// Every topology fixture (ncv4-graph.xml is an NCCL graph file, refused).
const std::vector<std::string> kFixtures = {"16amd64-4distances.xml",
                                            "24em64t-2n6c2t-pci.xml",
                                            "32em64t-2n8c2t-pci-wholeio.xml",
                                            "96em64t-4n4d3ca2co-pci.xml",
                                            "dgx1-v100-layout.xml",
                                            "g5.48xl-topo.xml",
                                            "ibmcloud-gx3d-160x1792x8h100-topo.xml",
                                            "ncv4-topo.xml",
                                            "ndv2-topo.xml",
                                            "ndv4-topo.xml",
                                            "nvidiaDGX2.xml",
                                            "nvidiagpunumanodes.kept.xml",
                                            "p4d-24xl-topo.xml",
                                            "p5.48xl-topo.xml",
                                            "power8gpudistances.xml"};

/// The names of the links path(a, b) crosses, in order.
std::vector<std::string> names(const CostMatrix& m, std::size_t a, std::size_t b) {
  std::vector<std::string> out;
  for (std::uint32_t l : m.path(a, b).links) out.push_back(m.links()[l].name);
  return out;
}

/// The other direction of a link, from the documented naming scheme:
/// "... up" <-> "... down", "... out" <-> "... in", "kind:X->Y" <-> "kind:Y->X".
std::string reverse_name(const std::string& n) {
  auto ends = [&](const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  if (ends(" up")) return n.substr(0, n.size() - 3) + " down";
  if (ends(" down")) return n.substr(0, n.size() - 5) + " up";
  if (ends(" out")) return n.substr(0, n.size() - 4) + " in";
  if (ends(" in")) return n.substr(0, n.size() - 3) + " out";
  const auto colon = n.find(':');
  const auto arrow = n.find("->");
  if (colon == std::string::npos || arrow == std::string::npos) return "?" + n;
  return n.substr(0, colon + 1) + n.substr(arrow + 2) + "->" + n.substr(colon + 1, arrow - colon - 1);
}

std::size_t count_smp(const CostMatrix& m, const Path& p) {
  return static_cast<std::size_t>(std::count_if(
      p.links.begin(), p.links.end(), [&](std::uint32_t l) { return m.links()[l].name.rfind("smp:", 0) == 0; }));
}

std::uint32_t the_smp_link(const CostMatrix& m, const Path& p) {
  for (std::uint32_t l : p.links)
    if (m.links()[l].name.rfind("smp:", 0) == 0) return l;
  ADD_FAILURE() << "no smp link";
  return 0;
}

}  // namespace

TEST(CostMatrixLinks, EveryPathIsAsNarrowAsItsNarrowestLinkOnEveryFixture) {
  for (const auto& name : kFixtures) {
    const CostMatrix m = matrix(name);
    std::set<std::string> seen;
    for (const auto& l : m.links()) {
      EXPECT_TRUE(seen.insert(l.name).second) << name << ": link listed twice: " << l.name;
      EXPECT_GT(l.bandwidth_gbps, 0.0) << name << " " << l.name;
    }
    std::vector<bool> used(m.links().size(), false);
    for (std::size_t a = 0; a < m.size(); ++a)
      for (std::size_t b = 0; b < m.size(); ++b) {
        const Path& p = m.path(a, b);
        if (a == b) {
          EXPECT_TRUE(p.links.empty()) << name << " self " << a;
          continue;
        }
        ASSERT_FALSE(p.links.empty()) << name << " " << a << "->" << b;
        double narrowest = p.links.empty() ? 0.0 : 1e300;
        for (std::uint32_t l : p.links) {
          ASSERT_LT(l, m.links().size()) << name << " " << a << "->" << b;
          narrowest = std::min(narrowest, m.links()[l].bandwidth_gbps);
          used[l] = true;
        }
        // No fixture has a GPU pair with both direct NVLinks and NVSwitches
        // (the one case where the path is wider than its narrowest link:
        // DirectNvLinksBesideTheSwitchFabricAreAParallelRoute below).
        EXPECT_DOUBLE_EQ(p.bandwidth_gbps, narrowest) << name << " " << a << "->" << b;
      }
    // links() lists only links some path crosses.
    EXPECT_EQ(std::count(used.begin(), used.end(), false), 0) << name;
  }
}

TEST(CostMatrixLinks, TheReversePathCrossesTheSameLinksInTheOtherDirection) {
  for (const auto& name : kFixtures) {
    const CostMatrix m = matrix(name);
    for (std::size_t a = 0; a < m.size(); ++a)
      for (std::size_t b = 0; b < m.size(); ++b) {
        const auto there = names(m, a, b);
        std::vector<std::string> expected;
        for (auto it = there.rbegin(); it != there.rend(); ++it) expected.push_back(reverse_name(*it));
        EXPECT_EQ(names(m, b, a), expected) << name << " " << a << "<->" << b;
        // The two directions of one physical link carry the same bandwidth.
        const auto& ab = m.path(a, b).links;
        const auto& ba = m.path(b, a).links;
        ASSERT_EQ(ab.size(), ba.size());
        for (std::size_t k = 0; k < ab.size(); ++k) {
          EXPECT_DOUBLE_EQ(m.links()[ab[k]].bandwidth_gbps, m.links()[ba[ab.size() - 1 - k]].bandwidth_gbps);
          if (a != b) {
            EXPECT_NE(ab[k], ba[ab.size() - 1 - k]) << name << ": a link and its reverse are one entry";
          }
        }
      }
  }
}

TEST(CostMatrixLinks, Dgx1CrossSocketRouteIsReadOffTheXml) {
  // dgx1-v100-layout.xml: GPU0 (0000:06:00.0) sits under the PLX switch
  // 0000:03:00.0 of socket 0; GPU5 (0000:86:00.0) under the switch
  // 0000:83:00.0 of socket 1; no NVLink between them. The NCCL XML names no
  // packages, so the inter-socket link is named by NUMA node.
  const CostMatrix m = matrix("dgx1-v100-layout.xml");
  EXPECT_EQ(names(m, gpu_pos(m, 0), gpu_pos(m, 5)),
            (std::vector<std::string>{"pcie:0000:06:00.0 up", "pcie:0000:03:00.0 up", "smp:numa0->numa1",
                                      "pcie:0000:83:00.0 down", "pcie:0000:86:00.0 down"}));
  // Broadwell (modelid 79): NCCL BDW_QPI_BW 6 GB/s; each link Gen3 x16 = 12 GB/s.
  EXPECT_DOUBLE_EQ(m.links()[the_smp_link(m, m.path(gpu_pos(m, 0), gpu_pos(m, 5)))].bandwidth_gbps, 6.0);
  for (std::uint32_t l : m.path(gpu_pos(m, 0), gpu_pos(m, 5)).links)
    if (m.links()[l].name.rfind("pcie:", 0) == 0) {
      EXPECT_DOUBLE_EQ(m.links()[l].bandwidth_gbps, 12.0);
    }
  // GPU0 -> its PIX NIC mlx5_0 (0000:05:00.0, same switch): up and down
  // below the switch; no SMP link.
  EXPECT_EQ(names(m, gpu_pos(m, 0), nic_pos(m, 0)),
            (std::vector<std::string>{"pcie:0000:06:00.0 up", "pcie:0000:05:00.0 down"}));
  // GPU0 -> its own socket's memory: up to the host bridge; to the other's: and across.
  EXPECT_EQ(names(m, gpu_pos(m, 0), numa_pos(m, 0)),
            (std::vector<std::string>{"pcie:0000:06:00.0 up", "pcie:0000:03:00.0 up"}));
  EXPECT_EQ(names(m, numa_pos(m, 1), gpu_pos(m, 0)),
            (std::vector<std::string>{"smp:numa1->numa0", "pcie:0000:03:00.0 down", "pcie:0000:06:00.0 down"}));
}

TEST(CostMatrixLinks, Dgx1GpusBehindOneSwitchShareItsUplinkAndTheSmpLink) {
  const CostMatrix m = matrix("dgx1-v100-layout.xml");
  auto has = [&](const Path& p, const std::string& link) {
    return std::any_of(p.links.begin(), p.links.end(), [&](std::uint32_t l) { return m.links()[l].name == link; });
  };
  // GPU0 (06:00.0) and GPU1 (07:00.0) sit behind the PLX switch 0000:03:00.0.
  // GPU0 -> GPU5 and GPU1 -> GPU6 have no NVLink (SYS): both go up through
  // that switch's uplink and across the same inter-socket link.
  const Path& p05 = m.path(gpu_pos(m, 0), gpu_pos(m, 5));
  const Path& p16 = m.path(gpu_pos(m, 1), gpu_pos(m, 6));
  ASSERT_EQ(p05.kind, PathKind::kSys);
  ASSERT_EQ(p16.kind, PathKind::kSys);
  EXPECT_TRUE(has(p05, "pcie:0000:03:00.0 up"));
  EXPECT_TRUE(has(p16, "pcie:0000:03:00.0 up"));
  EXPECT_EQ(the_smp_link(m, p05), the_smp_link(m, p16));
  // So do both GPUs writing into socket 1's memory.
  EXPECT_TRUE(has(m.path(gpu_pos(m, 0), numa_pos(m, 1)), "pcie:0000:03:00.0 up"));
  EXPECT_TRUE(has(m.path(gpu_pos(m, 1), numa_pos(m, 1)), "pcie:0000:03:00.0 up"));
  // GPU2 (0a:00.0) is behind the other switch of socket 0 (08:00.0).
  EXPECT_FALSE(has(m.path(gpu_pos(m, 2), gpu_pos(m, 5)), "pcie:0000:03:00.0 up"));
  EXPECT_TRUE(has(m.path(gpu_pos(m, 2), gpu_pos(m, 5)), "pcie:0000:08:00.0 up"));

  // Every SYS GPU pair from socket 0 (GPU0-3) to socket 1 (GPU4-7) crosses
  // exactly one SMP link, the same one; the other direction another one.
  std::set<std::uint32_t> forth;
  std::set<std::uint32_t> back;
  for (int a = 0; a < 4; ++a)
    for (int b = 4; b < 8; ++b) {
      const Path& p = m.path(gpu_pos(m, a), gpu_pos(m, b));
      if (p.kind == PathKind::kNvLink) {
        EXPECT_EQ(count_smp(m, p), 0u);
        continue;
      }
      ASSERT_EQ(count_smp(m, p), 1u) << a << "->" << b;
      forth.insert(the_smp_link(m, p));
      back.insert(the_smp_link(m, m.path(gpu_pos(m, b), gpu_pos(m, a))));
    }
  ASSERT_EQ(forth.size(), 1u);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_NE(*forth.begin(), *back.begin());
  // A same-switch pair crosses no SMP link (GPU0, GPU1 and mlx5_0 under 03:00.0).
  EXPECT_EQ(count_smp(m, m.path(gpu_pos(m, 0), nic_pos(m, 0))), 0u);
  EXPECT_EQ(count_smp(m, m.path(gpu_pos(m, 1), nic_pos(m, 0))), 0u);
  EXPECT_EQ(count_smp(m, m.path(gpu_pos(m, 0), gpu_pos(m, 1))), 0u);
}

TEST(CostMatrixLinks, Ndv2EveryCrossSocketGpuPairSharesOneSmpLinkPerDirection) {
  // ndv2-topo.xml: GPUs 0001..0004 under <cpu numaid=0>, 0005..0008 under
  // numaid=1, each straight under its <cpu> (no switch); no NVLink in the file.
  const CostMatrix m = matrix("ndv2-topo.xml");
  std::set<std::uint32_t> forth;
  std::set<std::uint32_t> back;
  for (int a = 0; a < 4; ++a)
    for (int b = 4; b < 8; ++b) {
      ASSERT_EQ(count_smp(m, m.path(gpu_pos(m, a), gpu_pos(m, b))), 1u);
      forth.insert(the_smp_link(m, m.path(gpu_pos(m, a), gpu_pos(m, b))));
      back.insert(the_smp_link(m, m.path(gpu_pos(m, b), gpu_pos(m, a))));
    }
  ASSERT_EQ(forth.size(), 1u);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(m.links()[*forth.begin()].name, "smp:numa0->numa1");
  EXPECT_EQ(m.links()[*back.begin()].name, "smp:numa1->numa0");
  EXPECT_DOUBLE_EQ(m.links()[*forth.begin()].bandwidth_gbps, 10.0);  // Skylake modelid 85: SKL_QPI_BW
  // Same-socket pairs meet at the host bridge: no SMP link.
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      if (a != b) {
        EXPECT_EQ(count_smp(m, m.path(gpu_pos(m, a), gpu_pos(m, b))), 0u);
        EXPECT_EQ(count_smp(m, m.path(gpu_pos(m, a + 4), gpu_pos(m, b + 4))), 0u);
      }
  EXPECT_EQ(names(m, gpu_pos(m, 0), gpu_pos(m, 1)),
            (std::vector<std::string>{"pcie:0001:00:00.0 up", "pcie:0002:00:00.0 down"}));
}

TEST(CostMatrixLinks, Dgx1NvLinkPairsCrossOnlyTheirOwnNvLink) {
  // The cube mesh as written in dgx1-v100-layout.xml (<nvlink count>).
  const std::map<std::pair<int, int>, int> mesh = {
      {{0, 1}, 1}, {{0, 2}, 1}, {{0, 3}, 2}, {{0, 4}, 2}, {{1, 2}, 2}, {{1, 3}, 1}, {{1, 5}, 2}, {{2, 3}, 2},
      {{2, 6}, 1}, {{3, 7}, 1}, {{4, 5}, 1}, {{4, 6}, 1}, {{4, 7}, 2}, {{5, 6}, 2}, {{5, 7}, 1}, {{6, 7}, 2}};
  const CostMatrix m = matrix("dgx1-v100-layout.xml");
  std::set<std::uint32_t> all;
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b) {
      if (a == b) continue;
      const auto it = mesh.find({std::min(a, b), std::max(a, b)});
      const Path& p = m.path(gpu_pos(m, a), gpu_pos(m, b));
      if (it == mesh.end()) {
        EXPECT_NE(p.kind, PathKind::kNvLink) << a << "->" << b;
        continue;
      }
      ASSERT_EQ(p.links.size(), 1u) << a << "->" << b;
      const auto& l = m.links()[p.links.front()];
      EXPECT_EQ(l.name, "nvlink:GPU" + std::to_string(a) + "->GPU" + std::to_string(b));
      EXPECT_DOUBLE_EQ(l.bandwidth_gbps, it->second * 20.0);  // count x SM70_NVLINK_BW
      EXPECT_TRUE(all.insert(p.links.front()).second) << "shared with another pair: " << l.name;
    }
  EXPECT_EQ(all.size(), 2 * mesh.size());
}

TEST(CostMatrixLinks, Dgx2AllTransfersOfOneGpuShareItsSwitchEgress) {
  // nvidiaDGX2.xml: every GPU has one 25000 MB/s NVLink to each of the six
  // NVSwitches of its baseboard (NVLinkBandwidth), no GPU<->GPU link: into
  // and out of the fabric 6 x 20 GB/s (SM70_NVLINK_BW).
  const CostMatrix m = matrix("nvidiaDGX2.xml");
  std::set<std::uint32_t> egresses;
  for (int a = 0; a < 16; ++a) {
    std::set<std::uint32_t> egress;
    for (int b = 0; b < 16; ++b) {
      if (a == b) continue;
      const Path& p = m.path(gpu_pos(m, a), gpu_pos(m, b));
      ASSERT_EQ(p.links.size(), 2u) << a << "->" << b;
      egress.insert(p.links.front());
      EXPECT_EQ(m.links()[p.links.back()].name, "nvswitch:GPU" + std::to_string(b) + " in");
      EXPECT_DOUBLE_EQ(m.links()[p.links.back()].bandwidth_gbps, 120.0);
    }
    ASSERT_EQ(egress.size(), 1u) << "GPU" << a;
    EXPECT_EQ(m.links()[*egress.begin()].name, "nvswitch:GPU" + std::to_string(a) + " out");
    EXPECT_DOUBLE_EQ(m.links()[*egress.begin()].bandwidth_gbps, 120.0);
    egresses.insert(*egress.begin());
  }
  EXPECT_EQ(egresses.size(), 16u);
  // hwloc names the packages: the inter-socket link is named by socket.
  EXPECT_EQ(names(m, numa_pos(m, 0), numa_pos(m, 1)), (std::vector<std::string>{"smp:socket0->socket1"}));
}

TEST(CostMatrixLinks, Power8GpuToItsSocketCrossesItsCpuNvLink) {
  // power8gpudistances.xml: each P100 has 40000 MB/s (2 NVLink 1.0 links) to
  // its own Package: 2 x SM60_NVLINK_BW (18) each way.
  const CostMatrix m = matrix("power8gpudistances.xml");
  EXPECT_EQ(names(m, gpu_pos(m, 0), numa_pos(m, 0)), (std::vector<std::string>{"nvlink:GPU0->socket0"}));
  EXPECT_EQ(names(m, numa_pos(m, 0), gpu_pos(m, 0)), (std::vector<std::string>{"nvlink:socket0->GPU0"}));
  EXPECT_EQ(names(m, gpu_pos(m, 3), numa_pos(m, 1)), (std::vector<std::string>{"nvlink:GPU3->socket1"}));
  EXPECT_DOUBLE_EQ(m.links()[m.path(gpu_pos(m, 0), numa_pos(m, 0)).links.front()].bandwidth_gbps, 36.0);
  EXPECT_EQ(names(m, gpu_pos(m, 0), gpu_pos(m, 1)), (std::vector<std::string>{"nvlink:GPU0->GPU1"}));
  // GPU0 to the other socket's memory: PCIe (0002:01:00.0 under root port
  // 0002:00:00.0), then the X-bus.
  EXPECT_EQ(names(m, gpu_pos(m, 0), numa_pos(m, 1)),
            (std::vector<std::string>{"pcie:0002:01:00.0 up", "pcie:0002:00:00.0 up", "smp:socket0->socket1"}));
}

TEST(CostMatrixLinks, ASocketAttachedNicCrossesItsAttachment) {
  // ncv4-topo.xml: <nic><net name="eth0"> straight under <cpu numaid=0>.
  // NCCL links it to its CPU at LOC_BW (5000).
  const CostMatrix m = matrix("ncv4-topo.xml");
  EXPECT_EQ(names(m, nic_pos(m, 0), numa_pos(m, 0)), (std::vector<std::string>{"attach:eth0 up"}));
  EXPECT_DOUBLE_EQ(m.path(nic_pos(m, 0), numa_pos(m, 0)).bandwidth_gbps, 5000.0);
  EXPECT_EQ(names(m, numa_pos(m, 0), nic_pos(m, 0)), (std::vector<std::string>{"attach:eth0 down"}));
  // ncv4 names no packages: the four NUMA nodes are linked pairwise.
  EXPECT_EQ(names(m, nic_pos(m, 0), numa_pos(m, 2)), (std::vector<std::string>{"attach:eth0 up", "smp:numa0->numa2"}));
}

TEST(CostMatrixLinks, DirectNvLinksBesideTheSwitchFabricAreAParallelRoute) {
  // Two V100s with 2 direct NVLinks and 4 links each into the (hidden)
  // NVSwitch fabric: NV6 (direct + hub), 6 x 20 GB/s. The path crosses its
  // egress, the direct link and the peer's ingress; its bandwidth is the
  // direct link plus the narrower fabric link, not the narrowest of the three
  // (docs/topology.md "Physical links").
  const Topology t = Topology::parse(R"(<system version="1"><cpu numaid="0" affinity="0000000f">
      <pci busid="0000:01:00.0" class="0x030200" link_speed="8 GT/s" link_width="16"><gpu dev="0" sm="70">
        <nvlink target="0000:02:00.0" count="2" tclass="0x030200"/>
        <nvlink target="fffffff:ff:ff.0" count="4" tclass="0x068000"/></gpu></pci>
      <pci busid="0000:02:00.0" class="0x030200" link_speed="8 GT/s" link_width="16"><gpu dev="1" sm="70">
        <nvlink target="0000:01:00.0" count="2" tclass="0x030200"/>
        <nvlink target="fffffff:ff:ff.0" count="4" tclass="0x068000"/></gpu></pci>
    </cpu></system>)",
                                     "direct-and-switch");
  const CostMatrix m = CostMatrix::build(t);
  const Path& p = m.path(gpu_pos(m, 0), gpu_pos(m, 1));
  EXPECT_EQ(p.label(), "NV6");
  EXPECT_DOUBLE_EQ(p.bandwidth_gbps, 120.0);
  EXPECT_EQ(names(m, gpu_pos(m, 0), gpu_pos(m, 1)),
            (std::vector<std::string>{"nvswitch:GPU0 out", "nvlink:GPU0->GPU1", "nvswitch:GPU1 in"}));
  ASSERT_EQ(p.links.size(), 3u);
  EXPECT_DOUBLE_EQ(m.links()[p.links[0]].bandwidth_gbps, 80.0);
  EXPECT_DOUBLE_EQ(m.links()[p.links[1]].bandwidth_gbps, 40.0);
  EXPECT_DOUBLE_EQ(m.links()[p.links[2]].bandwidth_gbps, 80.0);
  EXPECT_DOUBLE_EQ(p.bandwidth_gbps,
                   m.links()[p.links[1]].bandwidth_gbps +
                       std::min(m.links()[p.links[0]].bandwidth_gbps, m.links()[p.links[2]].bandwidth_gbps));
}

TEST(CostMatrixLinks, JsonListsTheLinksAndEachPathsLinks) {
  const CostMatrix m = matrix("dgx1-v100-layout.xml");
  const auto j = nlohmann::json::parse(m.to_json());
  ASSERT_EQ(j["links"].size(), m.links().size());
  for (std::size_t l = 0; l < m.links().size(); ++l) {
    EXPECT_EQ(j["links"][l]["name"], m.links()[l].name);
    EXPECT_DOUBLE_EQ(j["links"][l]["bandwidth_gbps"].get<double>(), m.links()[l].bandwidth_gbps);
  }
  for (std::size_t a = 0; a < m.size(); ++a)
    for (std::size_t b = 0; b < m.size(); ++b)
      EXPECT_EQ(j["paths"][a][b]["links"].get<std::vector<std::uint32_t>>(), m.path(a, b).links);
  // GPU0 -> GPU1: NV1, one link; its name through the JSON alone.
  const auto idx = j["paths"][gpu_pos(m, 0)][gpu_pos(m, 1)]["links"][0].get<std::size_t>();
  EXPECT_EQ(j["links"][idx]["name"], "nvlink:GPU0->GPU1");
}
