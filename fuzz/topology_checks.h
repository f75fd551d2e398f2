// fuzz/topology_checks.h — what the topology fuzz targets check about every
// Topology a source accepted (Note [What a fuzz target asserts]).
#pragma once

#include <cmath>
#include <string>

#include <fmt/format.h>
#include <stepgraph/core/error.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "fuzz_common.h"

namespace stepgraph::fuzz {

inline bool same_number(double a, double b) {
  return a == b || (std::isnan(a) && std::isnan(b)) || std::abs(a - b) <= 1e-6 * std::max(1.0, std::abs(a));
}

/// The cost matrix and every printed form of `t` and `m` are built without
/// an error other than InvalidArgument.
inline void exercise(const topology::Topology& t, const topology::CostMatrix& m) {
  (void)t.to_json();
  (void)m.to_json();
  (void)m.to_nvidia_smi();
  (void)m.bandwidth_table();
  (void)m.latency_table();
  (void)m.numa_table();
  for (std::size_t a = 0; a < m.size(); ++a)
    for (std::size_t b = 0; b < m.size(); ++b)
      for (auto l : m.path(a, b).links)
        SG_FUZZ_ASSERT(l < m.links().size(),
                       fmt::format("path {}->{} crosses link {} of {}", a, b, l, m.links().size()));
}

/// The paths, kinds, bandwidths and NUMA distances of `a` and `b` agree.
inline void expect_same_machine(const topology::Topology& a, const topology::CostMatrix& ma,
                                const topology::Topology& b, const topology::CostMatrix& mb, const std::string& xml) {
  const auto show = [&] { return fmt::format("--- dump:\n{}", xml); };
  SG_FUZZ_ASSERT(ma.size() == mb.size(), show());
  for (std::size_t i = 0; i < ma.size(); ++i)
    for (std::size_t j = 0; j < ma.size(); ++j) {
      const auto &p = ma.path(i, j), &q = mb.path(i, j);
      SG_FUZZ_ASSERT(p.label() == q.label() && same_number(p.bandwidth_gbps, q.bandwidth_gbps),
                     fmt::format("path {}->{}: {} {} GB/s became {} {} GB/s\n{}", i, j, p.label(), p.bandwidth_gbps,
                                 q.label(), q.bandwidth_gbps, show()));
    }
  for (std::size_t x = 0; x < a.numa_count(); ++x)
    for (std::size_t y = 0; y < a.numa_count(); ++y)
      SG_FUZZ_ASSERT(same_number(a.numa_distance(x, y), b.numa_distance(x, y)),
                     fmt::format("NUMA distance {},{}: {} became {}\n{}", x, y, a.numa_distance(x, y),
                                 b.numa_distance(x, y), show()));
}

/// docs/topology.md §1: "The dump/load round trip keeps every path kind,
/// bandwidth and NUMA distance". Asserted here: the dump of any accepted
/// input loads, with the same GPU, NIC and NUMA counts and NUMA distances;
/// and a dump read back is a fixed point: dumping it again and reading that
/// gives the same paths. The first round trip's paths are not compared: an
/// input may hold what NCCL XML cannot say — a PCI device whose CPUs have
/// no NUMA node (a memoryless package, or libhwloc dropping a NUMA node with
/// a garbled nodeset): the model puts it at SYS from every NUMA node, while
/// NCCL XML places every device under a <cpu numaid>, so it reads back under
/// one (docs/reliability.md, "Dump round trip: what holds";
/// TopologyDump.ADeviceWithNoNumaNodeReadsBackAsAFixedPoint). Returns the
/// topology read back.
inline topology::Topology check_dump_round_trip(const topology::Topology& a, const topology::CostMatrix& ma) {
  const auto read = [](const std::string& xml) {
    try {
      return topology::Topology::parse(xml, "dump");
    } catch (const InvalidArgument& e) {
      fail("the dump loads", __FILE__, __LINE__, fmt::format("{}\n--- dump:\n{}", e.what(), xml));
    }
  };
  const std::string xml = a.to_nccl_xml();
  const topology::Topology b = read(xml);
  const auto mb = topology::CostMatrix::build(b);
  SG_FUZZ_ASSERT(a.gpu_count() == b.gpu_count() && a.nic_count() == b.nic_count() && a.numa_count() == b.numa_count(),
                 fmt::format("counts gpu {}/{} nic {}/{} numa {}/{}\n--- dump:\n{}", a.gpu_count(), b.gpu_count(),
                             a.nic_count(), b.nic_count(), a.numa_count(), b.numa_count(), xml));
  for (std::size_t x = 0; x < a.numa_count(); ++x)
    for (std::size_t y = 0; y < a.numa_count(); ++y)
      SG_FUZZ_ASSERT(same_number(a.numa_distance(x, y), b.numa_distance(x, y)),
                     fmt::format("NUMA distance {},{}: {} became {}\n--- dump:\n{}", x, y, a.numa_distance(x, y),
                                 b.numa_distance(x, y), xml));
  exercise(b, mb);
  const std::string xml2 = b.to_nccl_xml();
  const topology::Topology c = read(xml2);
  expect_same_machine(b, mb, c, topology::CostMatrix::build(c), xml2);
  (void)ma;
  return b;
}

}  // namespace stepgraph::fuzz
