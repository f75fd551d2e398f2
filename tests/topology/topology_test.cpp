// Tests of the topology model and cost matrix over the recorded machines in
// fixtures/ (copied from ../shared/topologies; SOURCES.md there and here
// says what each machine really has). Every expectation is a fact about the
// real machine or what its file shows (SOURCES.md, docs/topology.md "What
// each file shows"), never output recorded from this code.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <stepgraph/core/error.h>
#include <stepgraph/topology/binding.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/live.h>
#include <stepgraph/topology/topology.h>

#include "topology_fixtures.h"

namespace sg = stepgraph;
using sg::topology::CostMatrix;
using sg::topology::EndpointKind;
using sg::topology::PathKind;
using sg::topology::Topology;

using namespace sg::topology::testing;  // fixture, load, gpu_pos, nic_pos, numa_pos

namespace {

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const sg::topology::Path& gpu_gpu(const CostMatrix& m, int a, int b) {
  return m.path(gpu_pos(m, a), gpu_pos(m, b));
}

// Prints what the file is known to hide (docs/topology.md table).
void known_hidden(const std::string& what) {
  std::printf("[ NOTE     ] %s\n", what.c_str());
}

}  // namespace

// ---------------------------------------------------------------------------
// hwloc XML files (open-mpi/hwloc tests/hwloc/xml, SOURCES.md)

TEST(TopologyDgx2, HasSixteenGpusTwelveNvSwitchesAndTwoNumaNodesAtDistance21) {
  const Topology t = load("nvidiaDGX2.xml");
  EXPECT_EQ(t.gpu_count(), 16u);
  EXPECT_EQ(t.nvswitch_count(), 12u);  // incl. 66:00.0 whose PCI ids are zeroed
  EXPECT_EQ(t.nic_count(), 0u);
  EXPECT_EQ(t.numa_count(), 2u);
  EXPECT_EQ(t.package_count(), 2u);
  EXPECT_EQ(t.core_count(), 4);  // trimmed by the test author to 2 cores per socket
  EXPECT_EQ(t.packages()[0].core_count, 2);
  EXPECT_DOUBLE_EQ(t.numa_distance(0, 1), 21.0);
  EXPECT_DOUBLE_EQ(t.numa_distance(0, 0), 10.0);
  for (const auto& g : t.gpus()) EXPECT_EQ(g.model, "Tesla V100-SXM3-32GB-H");
  known_hidden("DGX-2: the file trims the CPUs to 2 cores per socket and lists none of the 10 mlx5 NICs");
}

TEST(TopologyDgx2, EveryGpuPairIsNv6ThroughTheSwitchesAcrossBothBaseboards) {
  // A DGX-2 GPU has one 25 GB/s NVLink to each of the 6 switches of its
  // baseboard; nvidia-smi prints NV6 for all 16x16 pairs (NVIDIA/nccl-tests#78).
  const Topology t = load("nvidiaDGX2.xml");
  const CostMatrix m = CostMatrix::build(t);
  for (int a = 0; a < 16; ++a) {
    for (int b = 0; b < 16; ++b) {
      const auto& p = gpu_gpu(m, a, b);
      if (a == b) {
        EXPECT_EQ(p.kind, PathKind::kSelf);
        continue;
      }
      EXPECT_EQ(p.kind, PathKind::kNvLink) << a << "-" << b;
      EXPECT_EQ(p.nvlinks, 6) << a << "-" << b;
      // 6 V100 links x NCCL's 20 GB/s (SM70_NVLINK_BW), not one 25 GB/s link.
      EXPECT_DOUBLE_EQ(p.bandwidth_gbps, 120.0);
      EXPECT_EQ(p.label(), "NV6");
    }
  }
}

TEST(TopologyDgx2, MergesSwitchPortsIntoTwoLevelsOfPlxSwitches) {
  // Each DGX-2 GPU sits behind two levels of PLX switches under a
  // root port; hwloc shows every switch as an upstream bridge plus one
  // bridge per downstream port. In the model each switch is one node.
  const Topology t = load("nvidiaDGX2.xml");
  const auto& pci = t.pci_nodes();
  for (const auto& g : t.gpus()) {
    std::vector<int> chain;
    for (int n = pci[static_cast<std::size_t>(g.pci)].parent; n >= 0; n = pci[static_cast<std::size_t>(n)].parent)
      chain.push_back(n);
    ASSERT_EQ(chain.size(), 4u) << g.name;  // switch, switch, root port, host bridge
    for (int i = 0; i < 2; ++i)             // PLX (PEX9781 on one baseboard, PEX9797 on the other)
      EXPECT_EQ(pci[static_cast<std::size_t>(chain[static_cast<std::size_t>(i)])].vendor_id, 0x10b5) << g.name;
    EXPECT_EQ(pci[static_cast<std::size_t>(chain[2])].vendor_id, 0x8086);  // Intel root port
    EXPECT_EQ(pci[static_cast<std::size_t>(chain[3])].kind, sg::topology::PciKind::kHostBridge);
  }
}

TEST(TopologyPower8, HasGpuToGpuAndGpuToCpuNvLinks) {
  // IBM S822LC "Minsky": 2 POWER8NVL, 4 P100; each P100 has 4 NVLink 1.0
  // links: 2 to its neighbour GPU, 2 to its CPU (hwloc: 40000 MB/s each = 2 x 20000).
  const Topology t = load("power8gpudistances.xml");
  EXPECT_EQ(t.gpu_count(), 4u);
  EXPECT_EQ(t.numa_count(), 2u);
  EXPECT_EQ(t.nic_count(), 0u);
  EXPECT_DOUBLE_EQ(t.numa_distance(0, 1), 40.0);
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(gpu_gpu(m, 0, 1).kind, PathKind::kNvLink);
  EXPECT_EQ(gpu_gpu(m, 0, 1).nvlinks, 2);
  EXPECT_EQ(gpu_gpu(m, 2, 3).nvlinks, 2);
  EXPECT_EQ(gpu_gpu(m, 0, 2).kind, PathKind::kSys);  // other socket: no NVLink between them
  // GPU <-> its own socket's memory over NVLink; the other socket's is not.
  for (int g = 0; g < 4; ++g) {
    const int own = t.gpus()[static_cast<std::size_t>(g)].numa_node;
    ASSERT_GE(own, 0);
    const auto& p = m.path(gpu_pos(m, g), numa_pos(m, own));
    EXPECT_EQ(p.kind, PathKind::kNvLink) << "GPU" << g;
    EXPECT_EQ(p.nvlinks, 2);
    EXPECT_DOUBLE_EQ(p.bandwidth_gbps, 2 * 18.0);  // NCCL SM60_NVLINK_BW
    EXPECT_EQ(m.path(gpu_pos(m, g), numa_pos(m, 1 - own)).kind, PathKind::kSys);
  }
  EXPECT_EQ(t.gpus()[0].numa_node, 0);
  EXPECT_EQ(t.gpus()[2].numa_node, 1);
}

TEST(TopologySl390s, HasThreeTeslaGpusOneOnSocket0TwoOnSocket1AndThreeNics) {
  const Topology t = load("24em64t-2n6c2t-pci.xml");
  EXPECT_EQ(t.gpu_count(), 3u);
  EXPECT_EQ(t.numa_count(), 2u);
  std::map<int, int> per_numa;
  for (const auto& g : t.gpus()) per_numa[g.numa_node]++;
  EXPECT_EQ(per_numa[0], 1);
  EXPECT_EQ(per_numa[1], 2);
  // ConnectX (class 0x0c06, mlx4_0/ib0) and two Intel 82576 ports (eth0, eth1).
  EXPECT_EQ(t.nic_count(), 3u);
  EXPECT_GE(t.nic_by_name("mlx4_0"), 0);
  EXPECT_DOUBLE_EQ(t.numa_distance(0, 1), 20.0);
  // The ATI ES1000 VGA (vendor 0x1002) is not a GPU.
  for (const auto& g : t.gpus()) EXPECT_NE(t.pci_nodes()[static_cast<std::size_t>(g.pci)].vendor_id, 0x1002);
}

TEST(TopologyX9drg, HasThreeNvidiaGpusNotTheRadeonAndThreeNics) {
  const Topology t = load("32em64t-2n8c2t-pci-wholeio.xml");
  EXPECT_EQ(t.gpu_count(), 3u);
  EXPECT_EQ(t.nic_count(), 3u);
  EXPECT_GE(t.nic_by_name("mlx5_0"), 0);
  EXPECT_EQ(t.numa_count(), 2u);
  for (const auto& g : t.gpus()) EXPECT_EQ(t.pci_nodes()[static_cast<std::size_t>(g.pci)].vendor_id, 0x10de);
  known_hidden("X9DRG: partly synthetic test data (cuda0 says K40m on an M2075), PCI link speeds 0");
}

TEST(TopologyX3950, HasFourNumaNodesSixteenPackagesNoGpuAndEightEthernetPorts) {
  const Topology t = load("96em64t-4n4d3ca2co-pci.xml");
  EXPECT_EQ(t.numa_count(), 4u);
  EXPECT_EQ(t.package_count(), 16u);
  EXPECT_EQ(t.gpu_count(), 0u);  // only a VGA card0 that is not NVIDIA
  EXPECT_EQ(t.nic_count(), 8u);
  for (std::size_t a = 0; a < 4; ++a)
    for (std::size_t b = 0; b < 4; ++b) EXPECT_DOUBLE_EQ(t.numa_distance(a, b), a == b ? 10.0 : 26.0);
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(m.indices(EndpointKind::kGpu).size(), 0u);
  EXPECT_EQ(m.indices(EndpointKind::kNic).size(), 8u);
}

TEST(TopologyTyanS4881, PicksTheNumaLatencyMatrixAmongFour) {
  const Topology t = load("16amd64-4distances.xml");
  EXPECT_EQ(t.numa_count(), 8u);
  EXPECT_EQ(t.package_count(), 8u);
  EXPECT_EQ(t.gpu_count(), 0u);
  EXPECT_EQ(t.nic_count(), 0u);
  ASSERT_TRUE(t.has_numa_distances());
  for (std::size_t a = 0; a < 8; ++a) EXPECT_DOUBLE_EQ(t.numa_distance(a, a), 10.0);
  EXPECT_EQ(t.cpu().vendor, "AuthenticAMD");
}

TEST(TopologyAc922, FindsSixGpusWithZeroedIdsAndTheirMemoryNumaNodes) {
  const Topology t = load("nvidiagpunumanodes.kept.xml");
  EXPECT_EQ(t.gpu_count(), 6u);  // class 0x0300 with vendor 0000 (sanitized dump)
  EXPECT_EQ(t.numa_count(), 8u);
  int gpu_memory = 0;
  for (const auto& n : t.numa_nodes()) {
    if (n.kind == sg::topology::NumaKind::kGpuMemory) {
      ++gpu_memory;
      EXPECT_GE(n.os_index, 250);
      EXPECT_EQ(n.memory_bytes, 16106127360ull);  // 15 GiB each
    }
  }
  EXPECT_EQ(gpu_memory, 6);
  std::set<int> memory_nodes;
  for (const auto& g : t.gpus())
    if (g.memory_numa_node >= 0) memory_nodes.insert(g.memory_numa_node);
  EXPECT_EQ(memory_nodes.size(), 6u);  // each GPU matched to its own GPUMemory node by PCIBusID
  auto by_os = [&](int os) {
    for (const auto& n : t.numa_nodes())
      if (n.os_index == os) return static_cast<std::size_t>(n.index);
    ADD_FAILURE() << "no NUMA node " << os;
    return std::size_t{0};
  };
  EXPECT_DOUBLE_EQ(t.numa_distance(by_os(0), by_os(8)), 40.0);    // CPU to CPU
  EXPECT_DOUBLE_EQ(t.numa_distance(by_os(0), by_os(250)), 80.0);  // to GPU memory
  EXPECT_DOUBLE_EQ(t.numa_distance(by_os(250), by_os(255)), 80.0);
  EXPECT_DOUBLE_EQ(t.numa_distance(by_os(8), by_os(8)), 10.0);
  known_hidden("AC922: the dump records the analysing host's CPU (AMD EPYC) in the Package info, not POWER9");
}

// ---------------------------------------------------------------------------
// NCCL topology XML (Azure, AWS, IBM Cloud; SOURCES.md)

TEST(TopologyNdv2, HasEightGpusFourPerSocketAndOneIbNic) {
  const Topology t = load("ndv2-topo.xml");
  EXPECT_EQ(t.format(), sg::topology::SourceFormat::kNcclXml);
  EXPECT_EQ(t.gpu_count(), 8u);
  EXPECT_EQ(t.nic_count(), 1u);
  EXPECT_EQ(t.numa_count(), 2u);
  for (int g = 0; g < 8; ++g) EXPECT_EQ(t.gpus()[static_cast<std::size_t>(g)].numa_node, g < 4 ? 0 : 1);
  known_hidden("NDv2: no <gpu>/<nvlink> in the file, so the V100 NVLink cube mesh does not show");
}

TEST(TopologyNdv4, PairsBehindOneSwitchArePixAndOtherNumaNodesAreSys) {
  const Topology t = load("ndv4-topo.xml");
  EXPECT_EQ(t.gpu_count(), 8u);
  EXPECT_EQ(t.nic_count(), 8u);
  EXPECT_EQ(t.numa_count(), 4u);
  EXPECT_EQ(t.package_count(), 0u);  // no socket information in the file
  const CostMatrix m = CostMatrix::build(t);
  for (int a = 0; a < 8; ++a) {
    for (int b = 0; b < 8; ++b) {
      if (a == b) continue;
      const bool same_switch = a / 2 == b / 2;  // per NUMA one switch with 2 GPUs + 2 NICs
      EXPECT_EQ(gpu_gpu(m, a, b).kind, same_switch ? PathKind::kPix : PathKind::kSys) << a << "-" << b;
      EXPECT_EQ(m.path(gpu_pos(m, a), nic_pos(m, b)).kind, same_switch ? PathKind::kPix : PathKind::kSys);
    }
  }
  // Gen4 x16 under NCCL's rule: 16 * 120 / 80 = 24 GB/s; across NUMA nodes AMD_BW 16.
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 1).bandwidth_gbps, 24.0);
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 2).bandwidth_gbps, 16.0);
  known_hidden("NDv4: an NVSwitch machine (NV12 between all A100s) whose file carries no NVLink");
}

TEST(TopologyP4d, FollowsTheTwoSwitchesPerSocketLayout) {
  const Topology t = load("p4d-24xl-topo.xml");
  EXPECT_EQ(t.gpu_count(), 8u);
  EXPECT_EQ(t.nic_count(), 4u);  // 4 EFA
  EXPECT_EQ(t.numa_count(), 2u);
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(gpu_gpu(m, 0, 1).kind, PathKind::kPix);                      // same switch
  EXPECT_EQ(m.path(gpu_pos(m, 0), nic_pos(m, 0)).kind, PathKind::kPix);  // GPU0 + NIC0 on switch 0
  EXPECT_EQ(gpu_gpu(m, 0, 2).kind, PathKind::kPhb);                      // other switch, same CPU
  EXPECT_EQ(m.path(gpu_pos(m, 0), nic_pos(m, 1)).kind, PathKind::kPhb);
  EXPECT_EQ(gpu_gpu(m, 0, 4).kind, PathKind::kSys);  // other socket
  // Gen3 x16 = 12 GB/s; Skylake inter-socket (modelid 85) SKL_QPI_BW = 10 GB/s.
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 1).bandwidth_gbps, 12.0);
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 4).bandwidth_gbps, 10.0);
  known_hidden("p4d: an NVSwitch machine (NV12 between all A100s) whose file carries no NVLink");
}

TEST(TopologyG5, ListsBareBusIdsOnly) {
  const Topology t = load("g5.48xl-topo.xml");
  EXPECT_EQ(t.numa_count(), 2u);
  EXPECT_EQ(t.gpu_count(), 0u);
  EXPECT_EQ(t.nic_count(), 0u);
  EXPECT_EQ(t.pci_nodes().size(), 2u + 9u);  // 2 host bridges (one per <cpu>) + 9 bare devices
  known_hidden("g5.48xlarge: the file lists 9 bare bus ids without class: the 8 A10G GPUs and the NIC do not show");
}

TEST(TopologyP5, ListsNoGpusAndThirtyTwoUnclassifiedDevicesUnderEightSwitches) {
  const Topology t = load("p5.48xl-topo.xml");
  EXPECT_EQ(t.gpu_count(), 0u);
  EXPECT_EQ(t.numa_count(), 2u);
  int bridges = 0;
  int leaves = 0;
  for (const auto& n : t.pci_nodes()) {
    if (n.kind == sg::topology::PciKind::kBridge) ++bridges;
    if (n.kind == sg::topology::PciKind::kOther) ++leaves;
  }
  EXPECT_EQ(bridges, 8);
  EXPECT_EQ(leaves, 32);  // the 32 EFA, without class in the file
  EXPECT_FALSE(t.notes().empty());
  known_hidden("p5.48xlarge: GPUs are not reported in the file and the 32 EFA carry no class");
}

TEST(TopologyIbmCloudH100, IsNv18EverywhereAndClampsTheVirtualX1Switches) {
  const Topology t = load("ibmcloud-gx3d-160x1792x8h100-topo.xml");
  EXPECT_EQ(t.gpu_count(), 8u);
  EXPECT_EQ(t.nic_count(), 8u);
  EXPECT_EQ(t.numa_count(), 2u);
  EXPECT_EQ(t.nvswitch_count(), 4u);
  const CostMatrix m = CostMatrix::build(t);
  for (int a = 0; a < 8; ++a)
    for (int b = 0; b < 8; ++b)
      if (a != b) {
        EXPECT_EQ(gpu_gpu(m, a, b).label(), "NV18");                    // 5+5+4+4 links to the 4 NVSwitches
        EXPECT_NEAR(gpu_gpu(m, a, b).bandwidth_gbps, 18 * 20.6, 1e-9);  // NCCL SM90_NVLINK_BW
      }
  // Each GPU shares its virtual switch with one NIC: PIX, and not at the
  // 0.19 GB/s of the file's "2.5 GT/s x1" switch link.
  for (int g = 0; g < 8; ++g) {
    int pix = 0;
    for (int n = 0; n < 8; ++n) {
      const auto& p = m.path(gpu_pos(m, g), nic_pos(m, n));
      if (p.kind == PathKind::kPix) {
        ++pix;
        EXPECT_GT(p.bandwidth_gbps, 10.0);
      }
    }
    EXPECT_EQ(pix, 1) << "GPU" << g;
  }
  bool clamp_noted = false;
  for (const auto& n : t.notes()) clamp_noted |= n.find("virtual switch") != std::string::npos;
  EXPECT_TRUE(clamp_noted);
}

TEST(TopologyNcv4, IgnoresTheSelfTargetedNvLinks) {
  const Topology t = load("ncv4-topo.xml");
  EXPECT_EQ(t.gpu_count(), 4u);
  EXPECT_EQ(t.nic_count(), 1u);
  EXPECT_EQ(t.numa_count(), 4u);
  EXPECT_TRUE(t.nvlinks().empty());
  const CostMatrix m = CostMatrix::build(t);
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b)
      if (a != b) {
        EXPECT_EQ(gpu_gpu(m, a, b).kind, PathKind::kSys);  // one GPU per NUMA node, no NVLink
      }
  // The socket NIC sits on NUMA 0 with GPU0.
  EXPECT_EQ(m.path(gpu_pos(m, 0), nic_pos(m, 0)).kind, PathKind::kPhb);
  EXPECT_EQ(t.nics()[0].name, "eth0");
  EXPECT_FALSE(t.nics()[0].cpus.empty());
}

TEST(TopologyNcv4, RefusesTheGraphFileWithAClearError) {
  try {
    (void)load("ncv4-graph.xml");
    FAIL() << "a graph file must not load as a topology";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("graph file"), std::string::npos);
  }
}

// ---------------------------------------------------------------------------
// DGX-1: the layout written from NVIDIA's description, checked cell by cell
// against a real `nvidia-smi topo -m`.

TEST(TopologyDgx1, DerivedMatrixEqualsNvidiaSmiCellByCell) {
  const Topology t = load("dgx1-v100-layout.xml");
  ASSERT_EQ(t.gpu_count(), 8u);
  ASSERT_EQ(t.nic_count(), 4u);
  const CostMatrix m = CostMatrix::build(t);

  std::istringstream in(read_text(fixture("dgx1-v100-nvidia-smi-topo-m.txt")));
  std::string line;
  std::getline(in, line);
  std::vector<std::string> columns;
  {
    std::istringstream hs(line);
    std::string tok;
    while (hs >> tok && tok != "CPU") columns.push_back(tok);
  }
  ASSERT_EQ(columns.size(), 12u);
  auto position_of = [&](const std::string& name) -> std::size_t {
    if (name.rfind("GPU", 0) == 0) return gpu_pos(m, std::stoi(name.substr(3)));
    const int nic = t.nic_by_name(name);
    EXPECT_GE(nic, 0) << name;
    return nic_pos(m, nic);
  };
  int cells = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string row;
    if (!(ls >> row) || (row.rfind("GPU", 0) != 0 && row.rfind("mlx5_", 0) != 0)) continue;
    const std::size_t r = position_of(row);
    for (const auto& col : columns) {
      std::string expected;
      ASSERT_TRUE(static_cast<bool>(ls >> expected)) << row;
      EXPECT_EQ(m.path(r, position_of(col)).label(), expected) << row << " x " << col;
      ++cells;
    }
    if (row.rfind("GPU", 0) == 0) {
      std::string affinity;
      ls >> affinity;
      EXPECT_EQ(t.gpus()[static_cast<std::size_t>(std::stoi(row.substr(3)))].cpus.to_string(), affinity) << row;
    }
  }
  EXPECT_EQ(cells, 12 * 12);
}

// ---------------------------------------------------------------------------
// The live machine

TEST(TopologyLive, LoadsAndMatchesLiveMachine) {
  const Topology t = Topology::discover();
  EXPECT_EQ(t.source(), "live");
  EXPECT_TRUE(t.is_live());
  EXPECT_EQ(t.numa_count(), sg::topology::LiveMachine::get().numa_nodes().size());
  EXPECT_EQ(t.pu_count(), sg::topology::LiveMachine::get().pu_count());
  EXPECT_EQ(t.core_count(), sg::topology::LiveMachine::get().core_count());
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(m.size(), t.gpu_count() + t.nic_count() + t.numa_count());
  if (t.gpu_count() == 0) {
    EXPECT_TRUE(m.indices(EndpointKind::kGpu).empty());  // a CPU-only matrix
    EXPECT_EQ(m.indices(EndpointKind::kNuma).size(), t.numa_count());
  }
}

TEST(TopologyLive, FromEnvReadsStepgraphTopoFile) {
  ::setenv("STEPGRAPH_TOPO_FILE", fixture("p4d-24xl-topo.xml").c_str(), 1);
  const Topology t = Topology::from_env_or_live();
  ::unsetenv("STEPGRAPH_TOPO_FILE");
  EXPECT_EQ(t.source(), fixture("p4d-24xl-topo.xml").string());
  EXPECT_EQ(t.gpu_count(), 8u);
}

// ---------------------------------------------------------------------------
// Cost matrix properties

TEST(CostMatrix, OrdersGpusThenNicsThenNumaAndIsSymmetric) {
  const Topology t = load("p4d-24xl-topo.xml");
  const CostMatrix m = CostMatrix::build(t);
  ASSERT_EQ(m.size(), 8u + 4u + 2u);
  for (std::size_t i = 0; i < m.size(); ++i) {
    const auto k = m.endpoints()[i].kind;
    EXPECT_EQ(k, i < 8 ? EndpointKind::kGpu : i < 12 ? EndpointKind::kNic : EndpointKind::kNuma);
    EXPECT_EQ(m.path(i, i).kind, PathKind::kSelf);
    for (std::size_t j = 0; j < m.size(); ++j) {
      EXPECT_EQ(m.path(i, j).kind, m.path(j, i).kind);
      EXPECT_DOUBLE_EQ(m.path(i, j).bandwidth_gbps, m.path(j, i).bandwidth_gbps);
      EXPECT_GT(m.path(i, j).bandwidth_gbps, 0.0);
      if (i != j) {
        EXPECT_GT(m.path(i, j).latency_us, 0.0);
      }
    }
  }
  EXPECT_EQ(m.indices(EndpointKind::kNic), (std::vector<std::size_t>{8, 9, 10, 11}));
  EXPECT_EQ(m.numa_count(), 2u);
  EXPECT_DOUBLE_EQ(m.numa_distance(0, 0), 10.0);
  EXPECT_THROW((void)m.path(0, 99), sg::InvalidArgument);
  EXPECT_THROW((void)m.position(EndpointKind::kGpu, 8), sg::InvalidArgument);
}

TEST(CostMatrix, AGpuRelayIsNotNvLink) {
  // DGX-1: GPU0 and GPU5 are two NVLink hops apart (via GPU1 or GPU4):
  // nvidia-smi prints SYS, and so must we.
  const CostMatrix m = CostMatrix::build(load("dgx1-v100-layout.xml"));
  EXPECT_EQ(gpu_gpu(m, 0, 5).kind, PathKind::kSys);
  EXPECT_EQ(gpu_gpu(m, 0, 3).label(), "NV2");
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 3).bandwidth_gbps, 40.0);  // 2 x SM70_NVLINK_BW
  // Broadwell (modelid 79): BDW_QPI_BW 6 GB/s across the sockets.
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 5).bandwidth_gbps, 6.0);
}

TEST(CostMatrix, PrintsTheNvidiaSmiLayoutWithLegend) {
  const CostMatrix m = CostMatrix::build(load("dgx1-v100-layout.xml"));
  const std::string s = m.to_nvidia_smi();
  EXPECT_NE(s.find("CPU Affinity"), std::string::npos);
  EXPECT_NE(s.find("NUMA Affinity"), std::string::npos);
  EXPECT_NE(s.find("NV#  = Connection traversing a bonded set of # NVLinks"), std::string::npos);
  EXPECT_NE(s.find("mlx5_3"), std::string::npos);
  EXPECT_NE(m.numa_table().find("NUMA1"), std::string::npos);
  EXPECT_NE(m.bandwidth_table().find("40.0"), std::string::npos);
}

TEST(CostMatrix, JsonFollowsTheDocumentedSchema) {
  const Topology t = load("nvidiaDGX2.xml");
  const CostMatrix m = CostMatrix::build(t);
  const auto model = nlohmann::json::parse(t.to_json());
  EXPECT_EQ(model["gpus"].size(), 16u);
  EXPECT_EQ(model["nvswitches"].size(), 12u);
  EXPECT_EQ(model["numa_distance"][0][1].get<double>(), 21.0);
  EXPECT_EQ(model["format"], "hwloc-xml");
  const auto mat = nlohmann::json::parse(m.to_json());
  EXPECT_EQ(mat["endpoints"].size(), 18u);
  EXPECT_EQ(mat["paths"][0][1]["kind"], "NV6");
  EXPECT_EQ(mat["paths"][0][1]["nvlinks"], 6);
  EXPECT_EQ(mat["paths"][0][0]["kind"], "X");
}

/// Dumps `a` as NCCL XML, loads the dump and expects the same machine:
/// counts, every path's kind and bandwidth, NUMA distances.
void expect_dump_round_trip(const Topology& a, const std::string& name) {
  const std::filesystem::path out =
      std::filesystem::temp_directory_path() / (std::string("sg_topo_dump_") + std::to_string(::getpid()) + name);
  a.dump(out);
  const Topology b = Topology::load(out);
  std::filesystem::remove(out);
  EXPECT_EQ(b.gpu_count(), a.gpu_count()) << name;
  EXPECT_EQ(b.nic_count(), a.nic_count()) << name;
  EXPECT_EQ(b.numa_count(), a.numa_count()) << name;
  const CostMatrix ma = CostMatrix::build(a);
  const CostMatrix mb = CostMatrix::build(b);
  ASSERT_EQ(ma.size(), mb.size()) << name;
  for (std::size_t i = 0; i < ma.size(); ++i)
    for (std::size_t j = 0; j < ma.size(); ++j) {
      EXPECT_EQ(ma.path(i, j).label(), mb.path(i, j).label()) << name << " " << i << "," << j;
      EXPECT_NEAR(ma.path(i, j).bandwidth_gbps, mb.path(i, j).bandwidth_gbps, 1e-6) << name;
    }
  for (std::size_t x = 0; x < a.numa_count(); ++x)
    for (std::size_t y = 0; y < a.numa_count(); ++y) EXPECT_DOUBLE_EQ(a.numa_distance(x, y), b.numa_distance(x, y));
}

TEST(TopologyDump, RoundTripsThroughNcclXml) {
  // nvidiagpunumanodes: GPUs under two host bridges of one NUMA node (NODE,
  // not PHB); 24em64t: a link of 3.046875029754639 GB/s (written exactly).
  // Both found by fuzz/fuzz_topo_hwloc.
  for (const char* name :
       {"nvidiaDGX2.xml", "power8gpudistances.xml", "p4d-24xl-topo.xml", "ibmcloud-gx3d-160x1792x8h100-topo.xml",
        "dgx1-v100-layout.xml", "ncv4-topo.xml", "nvidiagpunumanodes.kept.xml", "24em64t-2n6c2t-pci.xml"}) {
    expect_dump_round_trip(load(name), name);
  }
}

// Inputs whose first dump round trip changed a path or a count (fuzz
// findings, docs/reliability.md): each now round-trips in full.
// A V100 whose PCI class reads 0x0304 (fuzz/fuzz_topo_hwloc in CI) was no
// GPU of the model but read back as one (15 GPUs from 14): a GPU is now any
// NVIDIA display-class device, NCCL's rule.
TEST(TopologyDump, AGpuOfAnyDisplayClassRoundTripsInFull) {
  const auto file =
      std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "hwloc-round-trip-ci-finding.xml";
  const Topology a = Topology::load(file);
  EXPECT_EQ(a.gpu_count(), 15u) << "16 V100s, one of which lost its class and vendor";
  expect_dump_round_trip(a, "hwloc-round-trip-ci-finding.xml");
}

// A NUMA node whose nodeset is garbled: libhwloc drops it, so package 1
// and the GPUs under it have no NUMA node. The model says so (SYS to the
// one NUMA node left); NCCL XML places every device under a <cpu numaid>,
// so the dump cannot (it reads back under NUMA 0). What holds, and what
// fuzz/topology_checks.h asserts: the dump loads with the same counts and
// distances, and a dump read back is a fixed point.
TEST(TopologyDump, ADeviceWithNoNumaNodeReadsBackAsAFixedPoint) {
  const auto file =
      std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "hwloc-device-without-numa.xml";
  const Topology a = Topology::load(file);
  ASSERT_EQ(a.numa_count(), 1u);
  const CostMatrix ma = CostMatrix::build(a);
  int without_numa = 0;
  for (std::size_t g = 0; g < a.gpu_count(); ++g) {
    if (a.gpus()[g].numa_node >= 0) continue;
    ++without_numa;
    EXPECT_EQ(ma.path(gpu_pos(ma, static_cast<int>(g)), numa_pos(ma, 0)).label(), "SYS") << "GPU" << g;
  }
  EXPECT_EQ(without_numa, 8) << "the GPUs of package 1";
  const std::filesystem::path out =
      std::filesystem::temp_directory_path() / ("sg_topo_dump_" + std::to_string(::getpid()) + "_nonuma.xml");
  a.dump(out);
  const Topology b = Topology::load(out);
  std::filesystem::remove(out);
  EXPECT_EQ(b.gpu_count(), a.gpu_count());
  EXPECT_EQ(b.nic_count(), a.nic_count());
  EXPECT_EQ(b.numa_count(), a.numa_count());
  EXPECT_DOUBLE_EQ(b.numa_distance(0, 0), a.numa_distance(0, 0));
  expect_dump_round_trip(b, "hwloc-device-without-numa.xml dumped");
}

// Two <pci> elements with one GPU bus id (8a:00.0): NVLinks name their peer
// by bus id, so which GPU a link reached depended on the order of lookup,
// and the dump read back NV1 as NV2. Refused with both GPUs and the bus id.
TEST(TopologyBadInput, TwoGpusWithOneBusIdAreRefused) {
  const auto file =
      std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "nccl-two-gpus-one-bus-id.xml";
  try {
    (void)Topology::load(file);
    ADD_FAILURE() << "loaded";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("same PCI bus id 0000:8a:00.0"), std::string::npos) << e.what();
  }
}

TEST(TopologyBadInput, HwlocObjectWithACpusetButNoCompleteCpusetIsRefused) {
  // libhwloc 2.9 dereferences a null pointer importing this (an L2Cache
  // whose complete_cpuset was renamed); found by fuzz/fuzz_topo_hwloc.
  const auto file =
      std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "hwloc-cpuset-without-complete-cpuset.xml";
  try {
    (void)Topology::load(file);
    ADD_FAILURE() << "loaded";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("L2Cache"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no complete_cpuset"), std::string::npos) << e.what();
  }
}

TEST(TopologyBadInput, AnNcclPackageIndexBeyondAnyMachineIsRefused) {
  // package=2147483000 made the reader allocate packages up to it (2.8 GB);
  // found by fuzz/fuzz_topo_dump in a CI run.
  const auto file = std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "nccl-huge-package-index.xml";
  try {
    (void)Topology::load(file);
    ADD_FAILURE() << "loaded";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("package=2147483000"), std::string::npos) << e.what();
  }
}

TEST(TopologyBadInput, AnHwlocBridgeTypeBeyondTheEnumIsNoUndefinedBehaviour) {
  // bridge_type="2-1": hwloc stores upstream type 2, which its enum does not
  // have; reading it as the enum was undefined behaviour (UBSan, found by
  // fuzz/fuzz_topo_hwloc). Such a bridge is neither host nor PCI: it loads,
  // with no bus id. The dump gives it one (NCCL needs a busid on every
  // <pci>): the dump did not load, for the first input here and for the
  // second, found by a 10-minute fuzz_topo_hwloc run (a switch port of a
  // DGX-2 with bridge_type="2-1"). Dumped, each is the same machine again.
  for (const char* name : {"hwloc-bridge-upstream-type-2.xml", "hwloc-bridge-type-2-in-a-switch.xml"}) {
    SCOPED_TRACE(name);
    const Topology t = Topology::load(std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / name);
    EXPECT_GT(t.pu_count(), 0);
    const std::filesystem::path out =
        std::filesystem::temp_directory_path() / ("sg_topo_dump_" + std::to_string(::getpid()) + "_bridge2.xml");
    t.dump(out);
    const Topology b = Topology::load(out);
    std::filesystem::remove(out);
    EXPECT_EQ(b.gpu_count(), t.gpu_count());
    EXPECT_EQ(b.nic_count(), t.nic_count());
    EXPECT_EQ(b.numa_count(), t.numa_count());
    expect_dump_round_trip(b, std::string(name) + " dumped");
  }
}

TEST(TopologyBadInput, HwlocNumaNodesSharingAnOsIndexAreRefused) {
  // libhwloc imports it; our dump then wrote two <cpu numaid=1> that our own
  // reader refuses. Found by fuzz/fuzz_topo_hwloc.
  const auto file =
      std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "hwloc-two-numa-nodes-one-os-index.xml";
  try {
    (void)Topology::load(file);
    ADD_FAILURE() << "loaded";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("two NUMANode objects with os_index"), std::string::npos) << e.what();
  }
}

TEST(CostMatrix, CountsSwitchesForPixAndPxb) {
  // Two levels of switches under one CPU: devices under one lower switch are
  // PIX, under two lower switches of one upper switch PXB, under two root
  // complexes' worth of <pci> of one <cpu> PHB (the nvidia-smi legend).
  const Topology t = Topology::parse(R"(<system version="1">
    <cpu numaid="0" affinity="0000000f">
      <pci busid="0000:01:00.0" class="0x060400" link_speed="16 GT/s" link_width="16">
        <pci busid="0000:02:00.0" class="0x060400" link_speed="16 GT/s" link_width="16">
          <pci busid="0000:03:00.0" class="0x030200" vendor="0x10de" link_speed="16 GT/s" link_width="16"/>
          <pci busid="0000:04:00.0" class="0x020700" link_speed="16 GT/s" link_width="8"/>
        </pci>
        <pci busid="0000:05:00.0" class="0x060400" link_speed="16 GT/s" link_width="16">
          <pci busid="0000:06:00.0" class="0x030200" vendor="0x10de" link_speed="16 GT/s" link_width="16"/>
        </pci>
      </pci>
      <pci busid="0000:07:00.0" class="0x030200" vendor="0x10de" link_speed="8 GT/s" link_width="16"/>
    </cpu></system>)",
                                     "two-level");
  ASSERT_EQ(t.gpu_count(), 3u);
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(m.path(gpu_pos(m, 0), nic_pos(m, 0)).kind, PathKind::kPix);
  EXPECT_DOUBLE_EQ(m.path(gpu_pos(m, 0), nic_pos(m, 0)).bandwidth_gbps, 12.0);  // the NIC's Gen4 x8
  EXPECT_EQ(gpu_gpu(m, 0, 1).kind, PathKind::kPxb);
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 1).bandwidth_gbps, 24.0);  // Gen4 x16 all the way
  EXPECT_EQ(gpu_gpu(m, 0, 2).kind, PathKind::kPhb);
  EXPECT_DOUBLE_EQ(gpu_gpu(m, 0, 2).bandwidth_gbps, 12.0);  // GPU2's Gen3 x16
  EXPECT_EQ(m.path(gpu_pos(m, 2), numa_pos(m, 0)).kind, PathKind::kPhb);
}

TEST(TopologyBadInput, ImplausibleNvLinkCountsAreIgnoredWithANote) {
  const Topology t = Topology::parse(R"(<system version="1"><cpu numaid="0">
      <pci busid="0000:01:00.0" class="0x030200"><gpu dev="0"><nvlink target="0000:02:00.0" count="2147483647" tclass="0x030200"/></gpu></pci>
      <pci busid="0000:02:00.0" class="0x030200"><gpu dev="1"><nvlink target="0000:01:00.0" count="-3" tclass="0x030200"/></gpu></pci>
    </cpu></system>)",
                                     "bad counts");
  EXPECT_EQ(t.gpu_count(), 2u);
  EXPECT_TRUE(t.nvlinks().empty());
  EXPECT_GE(t.notes().size(), 2u);
}

TEST(TopologyDump, WritesLinkSpeedsNcclReadsBackTheSame) {
  // NCCL ignores our link_gbps attribute: link_speed and link_width alone
  // must give the same PCIe bandwidths under NCCL's rule.
  for (const char* name : {"p4d-24xl-topo.xml", "ibmcloud-gx3d-160x1792x8h100-topo.xml", "ndv4-topo.xml"}) {
    const Topology a = load(name);
    std::string xml = a.to_nccl_xml();
    for (std::size_t pos; (pos = xml.find(" link_gbps=\"")) != std::string::npos;)
      xml.erase(pos, xml.find('"', pos + 12) + 1 - pos);
    const Topology b = Topology::parse(xml, "without link_gbps");
    ASSERT_EQ(a.pci_nodes().size(), b.pci_nodes().size()) << name;
    for (std::size_t i = 0; i < a.pci_nodes().size(); ++i)
      EXPECT_DOUBLE_EQ(a.pci_nodes()[i].link_gbps, b.pci_nodes()[i].link_gbps) << name << " node " << i;
  }
}

// ---------------------------------------------------------------------------
// Binding helpers

TEST(Binding, LocalityOfARecordedGpuIsItsSocket) {
  const Topology t = load("p4d-24xl-topo.xml");
  const auto l = sg::topology::gpu_locality(t, 5);
  EXPECT_EQ(l.numa_node, 1);
  EXPECT_EQ(l.numa_os_index, 1);
  EXPECT_EQ(l.cpus.to_string(), "24-47,72-95");
  EXPECT_EQ(sg::topology::nic_locality(t, 0).cpus.to_string(), "0-23,48-71");
  EXPECT_THROW((void)sg::topology::gpu_locality(t, 8), sg::InvalidArgument);
  EXPECT_THROW((void)sg::topology::nic_locality(t, -1), sg::InvalidArgument);
}

TEST(Binding, AllocatesOnALiveNumaNode) {
  const int node = sg::topology::LiveMachine::get().numa_nodes().front().os_index;
  void* p = sg::topology::allocate_on_numa(1 << 16, node);
  ASSERT_NE(p, nullptr);
  static_cast<char*>(p)[0] = 1;
  sg::topology::free_host(p, 1 << 16);
  EXPECT_THROW((void)sg::topology::allocate_on_numa(0, node), sg::InvalidArgument);
  if (Topology::live().gpu_count() == 0) {
    EXPECT_THROW((void)sg::topology::bind_thread_near_gpu(0), sg::InvalidArgument);
  }
}

TEST(Binding, BindsTheCallingThreadNearALiveNic) {
  const Topology& live = Topology::live();
  if (live.nic_count() == 0) GTEST_SKIP() << "this machine shows no NIC to hwloc";
  const auto& machine = sg::topology::LiveMachine::get();
  const sg::topology::CpuSet before = machine.current_binding();
  const sg::topology::CpuSet bound = sg::topology::bind_thread_near_nic(0);
  if (!bound.empty()) {
    EXPECT_EQ(machine.current_binding(), bound);
    EXPECT_EQ(bound, sg::topology::nic_locality(live, 0).cpus);
  }
  machine.bind(before, sg::topology::BindScope::kThread);
}

// ---------------------------------------------------------------------------
// Bad input: a clear error or a CPU-only result, never a crash.

TEST(TopologyBadInput, MissingFileAndDirectoryAreClearErrors) {
  EXPECT_THROW((void)Topology::load(fixture("no-such-file.xml")), sg::InvalidArgument);
  EXPECT_THROW((void)Topology::load(std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fixtures"), sg::InvalidArgument);
  if (std::filesystem::exists("/dev/zero")) {
    EXPECT_THROW((void)Topology::load("/dev/zero"), sg::InvalidArgument);  // would never end
  }
}

TEST(TopologyBadInput, MalformedAndTruncatedXmlAreClearErrors) {
  EXPECT_THROW((void)Topology::parse("", "empty"), sg::InvalidArgument);
  EXPECT_THROW((void)Topology::parse("<system version=\"1\"><cpu numaid=\"0\">", "unclosed"), sg::InvalidArgument);
  const std::string dgx2 = read_text(fixture("nvidiaDGX2.xml"));
  for (std::size_t cut : {std::size_t{10}, dgx2.size() / 3, dgx2.size() / 2, dgx2.size() - 20})
    EXPECT_THROW((void)Topology::parse(dgx2.substr(0, cut), "truncated"), sg::InvalidArgument) << cut;
  const std::string p4d = read_text(fixture("p4d-24xl-topo.xml"));
  EXPECT_THROW((void)Topology::parse(p4d.substr(0, p4d.size() / 2), "truncated"), sg::InvalidArgument);
}

TEST(TopologyBadInput, UnknownFormatsAndVersionsAreClearErrors) {
  EXPECT_THROW((void)Topology::parse("<foo/>", "foo"), sg::InvalidArgument);
  EXPECT_THROW((void)Topology::parse("<system version=\"2\"></system>", "v2"), sg::InvalidArgument);
  std::string v3 = read_text(fixture("power8gpudistances.xml"));
  v3.replace(v3.find("version=\"2.0\""), 13, "version=\"3.0\"");
  try {
    (void)Topology::parse(v3, "hwloc3");
    FAIL() << "hwloc 3.0 XML must be refused";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("3.0"), std::string::npos);
  }
}

TEST(TopologyBadInput, MissingAttributesAreClearErrors) {
  EXPECT_THROW((void)Topology::parse("<system version=\"1\"><cpu/></system>", "no numaid"), sg::InvalidArgument);
  EXPECT_THROW((void)Topology::parse("<system version=\"1\"><cpu numaid=\"0\"><pci class=\"0x030200\"/></cpu></system>",
                                     "no busid"),
               sg::InvalidArgument);
  EXPECT_THROW((void)Topology::parse("<system version=\"1\"><cpu numaid=\"0\"/><cpu numaid=\"0\"/></system>", "dup"),
               sg::InvalidArgument);
}

TEST(TopologyBadInput, AFileWithoutGpusGivesACpuOnlyMatrix) {
  const Topology t = Topology::parse(
      "<system version=\"1\"><cpu numaid=\"0\" affinity=\"0000000f\"/><cpu numaid=\"1\" "
      "affinity=\"000000f0\"/></system>",
      "cpu-only");
  EXPECT_EQ(t.gpu_count(), 0u);
  const CostMatrix m = CostMatrix::build(t);
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.path(0, 1).kind, PathKind::kSys);
  EXPECT_EQ(t.pu_count(), 8);
  const Topology empty = Topology::parse("<system version=\"1\"></system>", "empty system");
  EXPECT_EQ(CostMatrix::build(empty).size(), 0u);
  EXPECT_FALSE(empty.notes().empty());
}
