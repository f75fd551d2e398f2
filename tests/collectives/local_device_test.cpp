// One device per local rank (Note [One device per local rank]) against the
// published layouts of recorded machines: the DGX-1 (NVIDIA's white paper:
// GPUs 0-3 behind CPU 0, GPUs 4-7 behind CPU 1; tests/topology/fixtures/
// dgx1-v100-layout.xml), a two-socket Xeon with three GPUs
// (24em64t-2n6c2t-pci.xml, hwloc's test file: NUMA node 0 = even PUs 0-22
// with GPU 0 (06:00.0), node 1 = odd PUs with GPUs 1 and 2 (14:00.0,
// 11:00.0)) and an eight-node Opteron without GPUs (16amd64-4distances.xml).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <stepgraph/collectives/local_device.h>
#include <stepgraph/core/error.h>
#include <stepgraph/topology/topology.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::collectives;
using topology::CpuSet;
using topology::Topology;

Topology fixture(const std::string& name) {
  return Topology::load(std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / ".." / "topology" / "fixtures" / name);
}

CpuSet range(int from, int to, int step = 1) {
  CpuSet s;
  for (int i = from; i <= to; i += step) s.pus.push_back(i);
  return s;
}

/// The CPU NUMA node (position) whose PUs hold every PU of `cpus`; -1 if none.
int numa_holding(const Topology& topo, const CpuSet& cpus) {
  for (const auto& n : topo.numa_nodes()) {
    std::set<int> in(n.cpus.pus.begin(), n.cpus.pus.end());
    bool all = !cpus.empty();
    for (int p : cpus.pus) all = all && in.count(p) > 0;
    if (all) return n.index;
  }
  return -1;
}

TEST(LocalDevice, UnboundRanksTakeTheGpuOfTheirLocalRankAndItsNumaNode) {
  const Topology dgx = fixture("dgx1-v100-layout.xml");
  ASSERT_EQ(dgx.gpu_count(), 8u);
  const auto devs = assign_local_devices(dgx, std::vector<CpuSet>(8), DeviceKind::kGpu);
  ASSERT_EQ(devs.size(), 8u);
  for (int r = 0; r < 8; ++r) {
    const LocalDevice& d = devs[static_cast<std::size_t>(r)];
    EXPECT_EQ(d.local_rank, r);
    EXPECT_EQ(d.gpu, r);
    EXPECT_EQ(d.cuda_device, r);
    // Published: GPUs 0-3 hang off CPU 0, 4-7 off CPU 1.
    EXPECT_EQ(d.numa_os_index, r < 4 ? 0 : 1) << "rank " << r;
    EXPECT_EQ(numa_holding(dgx, d.cpus), d.numa_node) << "rank " << r << " runs on " << d.cpus.to_string();
    EXPECT_FALSE(d.reason.empty());
  }
  // Binding to every PU is the same as unbound.
  const std::vector<CpuSet> everything(8, range(0, dgx.pu_count() - 1));
  const auto same = assign_local_devices(dgx, everything, DeviceKind::kGpu);
  for (std::size_t r = 0; r < 8; ++r) EXPECT_EQ(same[r].gpu, devs[r].gpu);
}

TEST(LocalDevice, RanksBoundByNumaNodeGetTheGpusOfTheirNode) {
  const Topology dgx = fixture("dgx1-v100-layout.xml");
  // mpirun --map-by numa --bind-to numa: local ranks alternate sockets.
  const CpuSet node0 = dgx.numa_nodes()[0].cpus, node1 = dgx.numa_nodes()[1].cpus;
  std::vector<CpuSet> bindings;
  for (int r = 0; r < 8; ++r) bindings.push_back(r % 2 == 0 ? node0 : node1);
  const auto devs = assign_local_devices(dgx, bindings, DeviceKind::kGpu);
  std::set<int> gpus;
  for (int r = 0; r < 8; ++r) {
    const LocalDevice& d = devs[static_cast<std::size_t>(r)];
    gpus.insert(d.gpu);
    EXPECT_EQ(d.numa_os_index, r % 2) << "rank " << r;
    EXPECT_EQ(d.gpu < 4 ? 0 : 1, r % 2) << "rank " << r << " got GPU " << d.gpu;
    EXPECT_EQ(d.cpus, r % 2 == 0 ? node0 : node1);
  }
  EXPECT_EQ(gpus.size(), 8u) << "every rank has a GPU of its own";
  EXPECT_EQ(devs[0].gpu, 0);
  EXPECT_EQ(devs[1].gpu, 4);
  EXPECT_EQ(devs[2].gpu, 1);
  EXPECT_EQ(devs[3].gpu, 5);
}

TEST(LocalDevice, BoundRanksChooseBeforeUnboundOnesAndKeepAFinerBinding) {
  const Topology dgx = fixture("dgx1-v100-layout.xml");
  const CpuSet node1 = dgx.numa_nodes()[1].cpus;
  const CpuSet one_core{{node1.pus.front()}};
  // Rank 0 unbound; ranks 1-4 bound inside NUMA node 1 (rank 1 to one PU).
  std::vector<CpuSet> bindings{{}, one_core, node1, node1, node1};
  const auto devs = assign_local_devices(dgx, bindings, DeviceKind::kGpu);
  std::set<int> node1_gpus;
  for (int r = 1; r <= 4; ++r) node1_gpus.insert(devs[static_cast<std::size_t>(r)].gpu);
  EXPECT_EQ(node1_gpus, (std::set<int>{4, 5, 6, 7})) << "the bound ranks take the four GPUs of their node";
  EXPECT_EQ(devs[0].gpu, 0) << "the unbound rank takes the lowest free GPU";
  EXPECT_EQ(devs[1].cpus, one_core) << "a launcher's finer binding inside the node is kept";
  // A binding on the wrong node moves to the GPU's node: with all four
  // node-1 GPUs taken, a fifth rank bound to node 1 gets a node-0 GPU and
  // node 0's PUs.
  bindings.push_back(node1);
  const auto more = assign_local_devices(dgx, bindings, DeviceKind::kGpu);
  const LocalDevice& fifth = more.back();
  EXPECT_LT(fifth.gpu, 4);
  EXPECT_EQ(fifth.cpus, dgx.numa_nodes()[0].cpus);
}

TEST(LocalDevice, AnUnevenMachineGivesEachBoundRankAGpuOfItsNode) {
  const Topology xeon = fixture("24em64t-2n6c2t-pci.xml");
  ASSERT_EQ(xeon.gpu_count(), 3u);
  const CpuSet even = range(0, 22, 2), odd = range(1, 23, 2);
  // Local-rank order would give GPUs 0, 1, 2; nearest-first gives each rank
  // a GPU behind its own socket.
  const auto devs = assign_local_devices(xeon, {odd, even, odd}, DeviceKind::kGpu);
  EXPECT_EQ(xeon.gpus()[static_cast<std::size_t>(devs[0].gpu)].bus_id, "0000:14:00.0");
  EXPECT_EQ(xeon.gpus()[static_cast<std::size_t>(devs[1].gpu)].bus_id, "0000:06:00.0");
  EXPECT_EQ(xeon.gpus()[static_cast<std::size_t>(devs[2].gpu)].bus_id, "0000:11:00.0");
  EXPECT_EQ(devs[0].cpus, odd);
  EXPECT_EQ(devs[1].cpus, even);
}

TEST(LocalDevice, MoreLocalRanksThanGpusIsAnErrorNamingBothCounts) {
  const Topology dgx = fixture("dgx1-v100-layout.xml");
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { (void)assign_local_devices(dgx, std::vector<CpuSet>(9), DeviceKind::kGpu); },
      {"9 local rank(s)", "8 GPU(s)"});
  const Topology no_gpu = fixture("16amd64-4distances.xml");
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { (void)assign_local_devices(no_gpu, std::vector<CpuSet>(1), DeviceKind::kGpu); }, {"has no GPU"});
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)assign_local_devices(dgx, {}, DeviceKind::kGpu); },
                                             {"no local rank"});
  LaunchInfo bad;
  bad.local_rank = 2;
  bad.local_size = 2;
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)choose_local_device(dgx, bad, {}, DeviceKind::kGpu); },
                                             {"not below the local size"});
}

TEST(LocalDevice, HostRanksSpreadOverNumaNodesOrKeepTheirs) {
  const Topology xeon = fixture("24em64t-2n6c2t-pci.xml");
  ASSERT_EQ(xeon.numa_count(), 2u);
  const CpuSet even = range(0, 22, 2), odd = range(1, 23, 2);
  ASSERT_EQ(xeon.numa_nodes()[0].cpus, even);
  ASSERT_EQ(xeon.numa_nodes()[1].cpus, odd);
  const auto unbound = assign_local_devices(xeon, std::vector<CpuSet>(3), DeviceKind::kHost);
  EXPECT_EQ(unbound[0].numa_os_index, 0);
  EXPECT_EQ(unbound[1].numa_os_index, 1);
  EXPECT_EQ(unbound[2].numa_os_index, 0);
  EXPECT_EQ(unbound[1].cpus, odd);
  for (const LocalDevice& d : unbound) EXPECT_EQ(d.gpu, -1);
  // Ranks bound inside one node keep it (and their own PUs).
  const CpuSet three{{3}};
  const auto bound = assign_local_devices(xeon, {three, odd}, DeviceKind::kHost);
  EXPECT_EQ(bound[0].numa_os_index, 1);
  EXPECT_EQ(bound[0].cpus, three);
  EXPECT_EQ(bound[1].numa_os_index, 1);
  EXPECT_EQ(bound[1].cpus, odd);
}

TEST(LocalDevice, WithoutMpiTheOtherRanksAreAssumedBoundAlike) {
  const Topology dgx = fixture("dgx1-v100-layout.xml");
  for (int r = 0; r < 8; ++r) {
    LaunchInfo li;
    li.local_rank = r;
    li.local_size = 8;
    EXPECT_EQ(choose_local_device(dgx, li, {}, DeviceKind::kGpu).gpu, r);
    // Every rank bound to node 1: node 1's four GPUs first, then node 0's.
    const LocalDevice d = choose_local_device(dgx, li, dgx.numa_nodes()[1].cpus, DeviceKind::kGpu);
    EXPECT_EQ(d.gpu, r < 4 ? 4 + r : r - 4) << "rank " << r;
  }
}

}  // namespace
