// stepgraph/collectives/local_device.h — which device each process of a job
// drives, and where on the host it runs: one device per local rank, chosen
// from the topology (the GPU nearest the process's CPU binding), and the
// process bound to that device's NUMA node.
//
// Note [One device per local rank]
// The processes of one host (local ranks 0 … L−1) share its devices. Each
// gets its own, and runs on the PUs nearest it, so that its pinned host
// memory (first-touched by the process) sits on the device's NUMA node:
//  - kGpu: L GPUs are needed (more local ranks than GPUs is InvalidArgument
//    naming both counts, raised alike on every rank). A rank whose CPU
//    binding (set by the launcher: `mpirun --bind-to numa|socket|core`,
//    `srun --cpu-bind`) covers fewer NUMA nodes is served first; each takes
//    the free GPU at the smallest NUMA distance from its binding
//    (Topology::numa_distance), ties to the lowest GPU index. Unbound ranks
//    (binding = every PU, or unknown) therefore get GPU = local rank, the
//    rule torchrun and Megatron use — and ranks bound by NUMA get the GPUs
//    of their NUMA node.
//  - kHost (the host backend, whose devices are virtual): no GPU; a rank
//    bound inside one NUMA node keeps it, an unbound rank takes CPU NUMA
//    node (local rank mod the number of CPU NUMA nodes).
// The process's new binding (`cpus`) is its old binding intersected with
// the device's NUMA node where they meet (a launcher's finer binding is
// kept), else the whole NUMA node. Where the topology gives no locality
// (no PCI information: a VM), `cpus` is the binding unchanged.
// The choice needs every local rank's binding: mpi_choose_local_device()
// (collectives/mpi.h) gathers them over MPI_COMM_TYPE_SHARED; without MPI,
// choose_local_device() assumes the other local ranks are bound as this
// one is (true for an unbound job, and for `srun --cpu-bind=none`).
// Memory follows the CPU binding through Linux's first-touch policy; no
// memory policy is set.
//
// Ownership: value types. Thread-safety: assign_local_devices and
// choose_local_device are pure (reentrant); bind_process changes the whole
// process's binding (call it once, before starting threads that should
// inherit it). Capture: unrelated to streams; not during a capture.
#pragma once

#include <string>
#include <vector>

#include <stepgraph/collectives/launch.h>
#include <stepgraph/topology/topology.h>

namespace stepgraph::collectives {

enum class DeviceKind { kGpu, kHost };

struct LocalDevice {
  int local_rank = 0;
  int gpu = -1;          // position in Topology::gpus(); -1 for kHost
  int cuda_device = -1;  // the GPU's CUDA ordinal (its position where the topology does not say); -1 for kHost
  int numa_node = -1;    // position in Topology::numa_nodes(); -1 unknown
  int numa_os_index = -1;
  topology::CpuSet cpus;  // where the process should run (empty: leave it as it is)
  std::string reason;     // one line: why this device
};

/// Every local rank's device and binding, from each local rank's current
/// CPU binding (`bindings[local_rank]`; empty = unknown = unbound), Note
/// [One device per local rank]. Deterministic: every rank computes the same
/// vector from the same inputs.
[[nodiscard]] std::vector<LocalDevice> assign_local_devices(const topology::Topology& topo,
                                                            const std::vector<topology::CpuSet>& bindings,
                                                            DeviceKind kind);

/// This process's device without MPI: `launch` from detect_launch(), the
/// other local ranks assumed bound like this one (`binding`).
[[nodiscard]] LocalDevice choose_local_device(const topology::Topology& topo, const LaunchInfo& launch,
                                              const topology::CpuSet& binding, DeviceKind kind);

/// Binds the calling process (every thread) to `device.cpus` on the live
/// machine; returns them. Does nothing (and returns an empty set) where
/// `cpus` is empty.
topology::CpuSet bind_process(const LocalDevice& device);

}  // namespace stepgraph::collectives
