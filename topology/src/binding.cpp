// topology/src/binding.cpp — nearest cpuset / NUMA node of a device, and
// binding and allocation on the live machine (through LiveMachine).
#include <stepgraph/topology/binding.h>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

namespace stepgraph::topology {

namespace {
Locality locality_of(const Topology& topo, int numa, const CpuSet& cpus) {
  Locality l;
  l.cpus = cpus;
  l.numa_node = numa;
  if (numa >= 0) {
    const NumaNode& n = topo.numa_nodes()[static_cast<std::size_t>(numa)];
    l.numa_os_index = n.os_index;
    if (l.cpus.empty()) l.cpus = n.cpus;
  }
  return l;
}

CpuSet bind_to(const Locality& l, const char* what, int index) {
  if (l.cpus.empty()) {
    STEPGRAPH_WARN(kTopology,
                   "{} {}: hwloc gives no CPU locality on this machine (no PCI information, or a VM); the thread "
                   "stays unbound",
                   what, index);
    return {};
  }
  LiveMachine::get().bind(l.cpus, BindScope::kThread);
  return l.cpus;
}
}  // namespace

Locality gpu_locality(const Topology& topo, int gpu) {
  STEPGRAPH_CHECK(gpu >= 0 && static_cast<std::size_t>(gpu) < topo.gpu_count(), InvalidArgument,
                  "gpu_locality: GPU {} does not exist in {} ({} GPU(s)); use an index below that", gpu, topo.source(),
                  topo.gpu_count());
  const Gpu& g = topo.gpus()[static_cast<std::size_t>(gpu)];
  return locality_of(topo, g.numa_node, g.cpus);
}

Locality nic_locality(const Topology& topo, int nic) {
  STEPGRAPH_CHECK(nic >= 0 && static_cast<std::size_t>(nic) < topo.nic_count(), InvalidArgument,
                  "nic_locality: NIC {} does not exist in {} ({} NIC(s)); use an index below that", nic, topo.source(),
                  topo.nic_count());
  const Nic& n = topo.nics()[static_cast<std::size_t>(nic)];
  return locality_of(topo, n.numa_node, n.cpus);
}

CpuSet bind_thread_near_gpu(int gpu) {
  return bind_to(gpu_locality(Topology::live(), gpu), "GPU", gpu);
}

CpuSet bind_thread_near_nic(int nic) {
  return bind_to(nic_locality(Topology::live(), nic), "NIC", nic);
}

void* allocate_on_numa(std::size_t bytes, int numa_os_index) {
  return LiveMachine::get().allocate_on_node(bytes, numa_os_index);
}

void* allocate_near_gpu(std::size_t bytes, int gpu) {
  const Locality l = gpu_locality(Topology::live(), gpu);
  int node = l.numa_os_index;
  if (node < 0) {
    node = LiveMachine::get().numa_nodes().front().os_index;
    STEPGRAPH_WARN(kTopology, "GPU {}: no NUMA locality known; allocating on NUMA node {}", gpu, node);
  }
  return LiveMachine::get().allocate_on_node(bytes, node);
}

void free_host(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;  // nothing was allocated, so LiveMachine need not exist
  LiveMachine::get().free_on_node(ptr, bytes);
}

}  // namespace stepgraph::topology
