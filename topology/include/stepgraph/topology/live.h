// stepgraph/topology/live.h — the live machine, as hwloc sees it: NUMA nodes
// and their cores, binding the calling thread, host memory on a NUMA node.
//
// This is the first slice of the topology module, the part the host backend
// needs. Binding threads and placing memory always use the live machine,
// even when a recorded topology (STEPGRAPH_TOPO_FILE) is used for planning.
//
// Ownership: LiveMachine owns its hwloc topology (one per process, loaded on
// first use). Memory from allocate_on_node() is owned by the caller and given
// back with free_on_node().
// Thread-safety: every member is thread-safe (hwloc's binding and allocation
// calls are; the discovered data is immutable after load).
// Capture: makes no CUDA call; safe during stream capture.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace stepgraph::topology {

/// A set of processing units (hwloc PUs), by OS index. A value type.
struct CpuSet {
  std::vector<int> pus;  // sorted, unique OS indices

  [[nodiscard]] bool empty() const noexcept { return pus.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return pus.size(); }
  /// "0-3,8-11", as nvidia-smi prints CPU affinity.
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const CpuSet&, const CpuSet&) = default;
};

struct NumaNodeInfo {
  int os_index = 0;                // the OS's NUMA node number
  std::uint64_t memory_bytes = 0;  // local memory hwloc reports (0 if unknown)
  CpuSet cpus;                     // the PUs local to this node
};

enum class BindScope { kThread, kProcess };

class LiveMachine {
 public:
  /// The process-wide live topology, discovered on first call. Throws
  /// HwlocError if hwloc cannot load this machine's topology.
  static const LiveMachine& get();

  LiveMachine(const LiveMachine&) = delete;
  LiveMachine& operator=(const LiveMachine&) = delete;
  ~LiveMachine();

  [[nodiscard]] const std::vector<NumaNodeInfo>& numa_nodes() const noexcept { return numa_; }
  [[nodiscard]] int pu_count() const noexcept { return pu_count_; }
  [[nodiscard]] int core_count() const noexcept { return core_count_; }
  [[nodiscard]] int package_count() const noexcept { return package_count_; }
  /// The cpus of NUMA node `os_index`; InvalidArgument if there is none.
  [[nodiscard]] const NumaNodeInfo& numa_node(int os_index) const;

  /// Binds the calling thread (or the process) to `cpus`. Throws
  /// InvalidArgument for an empty set, HwlocError if the OS refuses.
  void bind(const CpuSet& cpus, BindScope scope = BindScope::kThread) const;
  /// The calling thread's current binding.
  [[nodiscard]] CpuSet current_binding() const;

  /// Allocates `bytes` of host memory bound to NUMA node `os_index`
  /// (hwloc_alloc_membind, falling back to a first-touch allocation with a
  /// warning where the OS cannot bind). Zero bytes is InvalidArgument.
  [[nodiscard]] void* allocate_on_node(std::size_t bytes, int os_index) const;
  void free_on_node(void* ptr, std::size_t bytes) const noexcept;
  /// The NUMA node that holds the page at `ptr`, or -1 if unknown.
  [[nodiscard]] int numa_node_of(const void* ptr) const;

 private:
  LiveMachine();
  struct Impl;
  Impl* impl_;
  std::vector<NumaNodeInfo> numa_;
  int pu_count_ = 0;
  int core_count_ = 0;
  int package_count_ = 0;
};

}  // namespace stepgraph::topology
