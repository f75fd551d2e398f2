// stepgraph/topology/binding.h — where to run and allocate for a GPU or a
// NIC: the nearest cpuset and NUMA node, binding the calling thread there,
// and host memory on a given NUMA node.
//
// Locality can be asked of any Topology (a recorded one too: for planning).
// Binding and allocation always act on the live machine (LiveMachine),
// whatever STEPGRAPH_TOPO_FILE says: the *_live functions read
// Topology::live().
//
// Ownership: memory from allocate_* is owned by the caller and given back
// with free_host(). Thread-safety: every function is thread-safe.
// Capture: the *_live functions may run hwloc discovery (and CUDA device
// queries) on first use: call Topology::live() once before capturing; after
// that they are safe during stream capture.
#pragma once

#include <cstddef>

#include <stepgraph/topology/live.h>
#include <stepgraph/topology/topology.h>

namespace stepgraph::topology {

/// The PUs and NUMA node nearest a device.
struct Locality {
  CpuSet cpus;         // empty when the source does not say
  int numa_node = -1;  // NUMA position in Topology::numa_nodes(), -1 unknown
  int numa_os_index = -1;
};

/// Nearest cpuset and NUMA node of GPU `gpu` / NIC `nic` of `topo`. Where the
/// source gives no locality, the whole machine and NUMA node -1.
/// InvalidArgument for an index out of range.
[[nodiscard]] Locality gpu_locality(const Topology& topo, int gpu);
[[nodiscard]] Locality nic_locality(const Topology& topo, int nic);

/// Binds the calling thread to the PUs nearest GPU `gpu` / NIC `nic` of the
/// live machine and returns them. Where hwloc gives no locality (no GPU
/// seen, VM) the thread stays unbound, a warning is logged and the result is
/// empty. InvalidArgument for an index out of range.
CpuSet bind_thread_near_gpu(int gpu);
CpuSet bind_thread_near_nic(int nic);

/// Host memory on NUMA node `numa_os_index` of the live machine (hwloc
/// membind, first-touch fallback with a warning). Free with free_host().
[[nodiscard]] void* allocate_on_numa(std::size_t bytes, int numa_os_index);
/// Host memory on the NUMA node nearest GPU `gpu` of the live machine (the
/// first NUMA node if the GPU's locality is unknown).
[[nodiscard]] void* allocate_near_gpu(std::size_t bytes, int gpu);
void free_host(void* ptr, std::size_t bytes) noexcept;

}  // namespace stepgraph::topology
