// Platform::from_cost_matrix — the only place graphs/ reads the topology
// module's types.
#include <algorithm>
#include <cmath>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/topology/cost_matrix.h>

namespace stepgraph::graphs {

Platform Platform::from_cost_matrix(const topology::CostMatrix& m, EndpointSelection selection) {
  using topology::EndpointKind;
  std::vector<std::size_t> pick;
  if (selection != EndpointSelection::kNuma) pick = m.indices(EndpointKind::kGpu);
  if (selection != EndpointSelection::kGpus) {
    auto numa = m.indices(EndpointKind::kNuma);
    pick.insert(pick.end(), numa.begin(), numa.end());
  }
  STEPGRAPH_CHECK(!pick.empty(), InvalidArgument,
                  "the topology has no {} to place on; choose another endpoint selection (e.g. NUMA nodes for "
                  "the host backend) or another topology file",
                  selection == EndpointSelection::kNuma ? "NUMA nodes" : "GPUs");
  std::vector<Device> devices;
  for (auto i : pick) {
    const auto& e = m.endpoints()[i];
    Device d;
    d.name = e.name.empty() ? std::string(topology::to_string(e.kind)) + std::to_string(e.index) : e.name;
    d.kind = e.kind == EndpointKind::kGpu ? DeviceKind::kGpu : DeviceKind::kCpu;
    d.numa_node = e.numa_node;
    devices.push_back(std::move(d));
  }
  Platform p(std::move(devices));
  const std::size_t n = pick.size();
  for (std::size_t a = 0; a < n; ++a)
    for (std::size_t b = a + 1; b < n; ++b) {
      const auto& path = m.path(pick[a], pick[b]);
      // Note [Recorded topologies]: a VM file can report a zero bandwidth;
      // clamp to 1 GB/s rather than divide by zero (the topology module
      // documents its own sanity clamps).
      p.set_link(a, b, Link{std::max(path.bandwidth_gbps, 1.0), std::max(path.latency_us, 0.0)});
      const int na = p.device(a).numa_node, nb = p.device(b).numa_node;
      double dist = 20.0;
      if (na >= 0 && nb >= 0 && static_cast<std::size_t>(na) < m.numa_count() &&
          static_cast<std::size_t>(nb) < m.numa_count())
        dist = m.numa_distance(static_cast<std::size_t>(na), static_cast<std::size_t>(nb));
      p.set_numa_distance(a, b, dist);
    }
  // Note [Routes]: each ordered pair crosses the physical links of its path;
  // only links some selected pair crosses become shared links.
  std::vector<std::int64_t> shared_of(m.links().size(), -1);
  for (std::size_t a = 0; a < n; ++a)
    for (std::size_t b = 0; b < n; ++b) {
      if (a == b) continue;
      const auto& path = m.path(pick[a], pick[b]);
      if (path.links.empty()) continue;
      std::vector<std::uint32_t> route;
      route.reserve(path.links.size());
      for (auto l : path.links) {
        if (shared_of[l] < 0) {
          const auto& phys = m.links()[l];
          shared_of[l] = p.add_shared_link(SharedLink{phys.name, std::max(phys.bandwidth_gbps, 1.0)});
        }
        route.push_back(static_cast<std::uint32_t>(shared_of[l]));
      }
      p.set_route(a, b, std::move(route));
    }
  return p;
}

}  // namespace stepgraph::graphs
