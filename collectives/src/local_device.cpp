// One device per local rank (Note [One device per local rank]).
#include <stepgraph/collectives/local_device.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include <stepgraph/core/error.h>
#include <stepgraph/topology/binding.h>
#include <stepgraph/topology/live.h>

namespace stepgraph::collectives {
namespace {

using topology::CpuSet;
using topology::Topology;

CpuSet intersect(const CpuSet& a, const CpuSet& b) {
  CpuSet out;
  std::set_intersection(a.pus.begin(), a.pus.end(), b.pus.begin(), b.pus.end(), std::back_inserter(out.pus));
  return out;
}

/// The CPU NUMA nodes (positions) a binding touches; every CPU NUMA node for
/// an empty (unknown) binding.
std::vector<int> numa_nodes_of(const Topology& topo, const CpuSet& binding) {
  std::vector<int> all, touched;
  for (const topology::NumaNode& n : topo.numa_nodes()) {
    if (n.kind != topology::NumaKind::kCpu) continue;
    all.push_back(n.index);
    if (!binding.empty() && !intersect(n.cpus, binding).empty()) touched.push_back(n.index);
  }
  return touched.empty() ? all : touched;
}

/// The process's binding moved to `numa_cpus`: kept where it lies inside
/// them, else the whole node; unchanged where the topology says nothing.
CpuSet rebind(const CpuSet& binding, const CpuSet& numa_cpus) {
  if (numa_cpus.empty()) return binding;
  CpuSet both = intersect(binding, numa_cpus);
  return both.empty() ? numa_cpus : both;
}

void set_numa(LocalDevice& d, const Topology& topo, int numa) {
  d.numa_node = numa;
  if (numa >= 0) d.numa_os_index = topo.numa_nodes()[static_cast<std::size_t>(numa)].os_index;
}

std::vector<LocalDevice> assign_gpus(const Topology& topo, const std::vector<CpuSet>& bindings) {
  const std::size_t ranks = bindings.size();
  STEPGRAPH_CHECK(topo.gpu_count() > 0, InvalidArgument,
                  "one device per process: {} has no GPU, and the cuda backend needs one per process; use the host "
                  "backend here",
                  topo.is_live() ? "this machine" : topo.source());
  STEPGRAPH_CHECK(ranks <= topo.gpu_count(), InvalidArgument,
                  "one device per process: this host runs {} local rank(s) but {} has {} GPU(s); start at most {} "
                  "process(es) per host (mpirun --map-by ppr:{}:node, srun --ntasks-per-node={}), or use the host "
                  "backend",
                  ranks, topo.is_live() ? "this machine" : topo.source(), topo.gpu_count(), topo.gpu_count(),
                  topo.gpu_count(), topo.gpu_count());
  std::vector<std::vector<int>> numa(ranks);
  for (std::size_t r = 0; r < ranks; ++r) numa[r] = numa_nodes_of(topo, bindings[r]);
  // Ranks with the narrowest binding choose first (Note [One device per
  // local rank]); stable: equal ones in local-rank order.
  std::vector<std::size_t> order(ranks);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return numa[a].size() < numa[b].size(); });
  std::vector<bool> taken(topo.gpu_count(), false);
  std::vector<LocalDevice> out(ranks);
  for (std::size_t r : order) {
    int best = -1;
    double best_cost = std::numeric_limits<double>::infinity();
    for (const topology::Gpu& g : topo.gpus()) {
      if (taken[static_cast<std::size_t>(g.index)]) continue;
      double cost = 0;  // a GPU of unknown locality is as near as any
      if (g.numa_node >= 0) {
        cost = std::numeric_limits<double>::infinity();
        for (int n : numa[r])
          cost = std::min(cost, topo.numa_distance(static_cast<std::size_t>(n), static_cast<std::size_t>(g.numa_node)));
      }
      if (cost < best_cost) {
        best = g.index;
        best_cost = cost;
      }
    }
    taken[static_cast<std::size_t>(best)] = true;
    const topology::Gpu& g = topo.gpus()[static_cast<std::size_t>(best)];
    LocalDevice& d = out[r];
    d.local_rank = static_cast<int>(r);
    d.gpu = best;
    d.cuda_device = g.cuda_device >= 0 ? g.cuda_device : best;
    const topology::Locality where = topology::gpu_locality(topo, best);
    set_numa(d, topo, where.numa_node);
    d.cpus = rebind(bindings[r], where.cpus);
    const bool bound = numa[r].size() < numa_nodes_of(topo, {}).size();
    d.reason =
        g.numa_node < 0 ? fmt::format("GPU {} (the topology gives no NUMA locality: local-rank order)", best)
        : bound ? fmt::format("GPU {} on NUMA node {}, the free GPU nearest this rank's binding", best, d.numa_os_index)
                : fmt::format("GPU {} on NUMA node {} (unbound rank: local-rank order)", best, d.numa_os_index);
  }
  return out;
}

std::vector<LocalDevice> assign_host(const Topology& topo, const std::vector<CpuSet>& bindings) {
  const std::vector<int> cpu_numa = numa_nodes_of(topo, {});
  std::vector<LocalDevice> out(bindings.size());
  for (std::size_t r = 0; r < bindings.size(); ++r) {
    LocalDevice& d = out[r];
    d.local_rank = static_cast<int>(r);
    if (cpu_numa.empty()) {
      d.cpus = bindings[r];
      d.reason = "host backend (the topology lists no NUMA node)";
      continue;
    }
    const std::vector<int> mine = numa_nodes_of(topo, bindings[r]);
    const bool one_node = !bindings[r].empty() && mine.size() == 1;
    const int numa = one_node ? mine.front() : cpu_numa[r % cpu_numa.size()];
    set_numa(d, topo, numa);
    d.cpus = rebind(bindings[r], topo.numa_nodes()[static_cast<std::size_t>(numa)].cpus);
    d.reason = fmt::format("host backend on NUMA node {} ({})", d.numa_os_index,
                           one_node ? "the NUMA node of this rank's binding" : "local rank mod NUMA nodes");
  }
  return out;
}

}  // namespace

std::vector<LocalDevice> assign_local_devices(const Topology& topo, const std::vector<CpuSet>& bindings,
                                              DeviceKind kind) {
  STEPGRAPH_CHECK(!bindings.empty(), InvalidArgument, "assign_local_devices: no local rank given");
  // An empty binding, or one of every PU, is unbound.
  std::vector<CpuSet> b = bindings;
  for (CpuSet& s : b)
    if (static_cast<int>(s.size()) >= topo.pu_count() && topo.pu_count() > 0) s = {};
  std::vector<LocalDevice> out = kind == DeviceKind::kGpu ? assign_gpus(topo, b) : assign_host(topo, b);
  // Unchanged unbound ranks keep their (empty: unknown) binding as given.
  for (std::size_t r = 0; r < out.size(); ++r)
    if (out[r].cpus.empty() && !bindings[r].empty()) out[r].cpus = bindings[r];
  return out;
}

LocalDevice choose_local_device(const Topology& topo, const LaunchInfo& launch, const CpuSet& binding,
                                DeviceKind kind) {
  STEPGRAPH_CHECK(launch.local_rank >= 0 && launch.local_rank < launch.local_size, InvalidArgument,
                  "choose_local_device: local rank {} is not below the local size {}", launch.local_rank,
                  launch.local_size);
  const std::vector<CpuSet> same(static_cast<std::size_t>(launch.local_size), binding);
  return assign_local_devices(topo, same, kind)[static_cast<std::size_t>(launch.local_rank)];
}

CpuSet bind_process(const LocalDevice& device) {
  if (device.cpus.empty()) return {};
  topology::LiveMachine::get().bind(device.cpus, topology::BindScope::kProcess);
  return device.cpus;
}

}  // namespace stepgraph::collectives
