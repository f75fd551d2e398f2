// stepgraph/topology/topology.h — the machine model: packages, NUMA nodes,
// the PCI tree (host bridges, switches), GPUs, NICs, NVSwitches and NVLinks.
//
// A Topology comes from the live machine (hwloc, enriched with CUDA/NVML
// where present) or from a recorded file (hwloc XML 2.x or NCCL topology
// XML, told apart by content). A recorded topology is for planning, printing
// and simulation; binding threads and placing memory always use the live
// machine (see binding.h). The cost rules that turn this model into path
// kinds, bandwidths and latencies live in cost_matrix.h; docs/topology.md
// gives every rule with its source.
//
// Ownership: Topology is a value type (plain vectors); copies are
// independent. It holds no hwloc handle.
// Thread-safety: const members are thread-safe; a Topology is immutable
// after construction.
// Capture: discover() may call the CUDA runtime (cudaGetDeviceCount,
// cudaDeviceGetPCIBusId) and is NOT safe during stream capture; load(),
// from_env_or_live() with STEPGRAPH_TOPO_FILE set, and every accessor are
// safe (no CUDA call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <stepgraph/topology/live.h>

namespace stepgraph::topology {

/// Where a Topology came from.
enum class SourceFormat { kLive, kHwlocXml, kNcclXml };

/// One processor package (socket). `index` is its position in packages().
struct Package {
  int index = 0;
  int os_index = -1;       // -1 when the source does not say
  std::string cpu_vendor;  // "GenuineIntel", "AuthenticAMD", "IBM", ... ("" if unknown)
  std::string cpu_model;   // "Intel(R) Xeon(R) Platinum 8174 CPU @ 3.10GHz", "POWER8NVL", ...
  int cpu_family = -1;     // CPUID family (x86), -1 if unknown
  int cpu_model_id = -1;   // CPUID model (x86), -1 if unknown
  std::string arch;        // "x86_64", "ppc64", "aarch64", ... ("" if unknown)
  CpuSet cpus;
  int core_count = 0;           // physical cores (0 if the source does not say)
  std::vector<int> numa_nodes;  // positions in Topology::numa_nodes()
};

/// The machine's CPU model, as the source gives it (first package, or the
/// first `<cpu>` of NCCL XML). Picks the inter-socket bandwidth.
struct CpuModel {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", ... ("" unknown)
  std::string model;   // marketing name ("" unknown)
  std::string arch;    // "x86_64", "ppc64le", ... ("" unknown)
  int family = -1;     // CPUID family, -1 unknown
  int model_id = -1;   // CPUID model, -1 unknown
};

enum class NumaKind { kCpu, kGpuMemory };

/// One NUMA node. `index` is its position in numa_nodes() (the order of the
/// source), which is what the cost matrix uses; `os_index` is the OS number.
struct NumaNode {
  int index = 0;
  int os_index = 0;
  NumaKind kind = NumaKind::kCpu;  // kGpuMemory: a GPU's memory exposed as a NUMA node (POWER9)
  std::uint64_t memory_bytes = 0;  // 0 if unknown
  CpuSet cpus;                     // empty for GPU-memory nodes
  int package = -1;                // position in packages(), -1 if unknown
};

enum class PciKind { kHostBridge, kBridge, kGpu, kNic, kNvSwitch, kOther };

/// One node of the PCI tree. Host bridges are the roots (parent == -1); a
/// PCIe switch is one kBridge node (hwloc's upstream and downstream ports of
/// one switch are merged; an NCCL `<pci class=0x0604..>` is one switch).
struct PciNode {
  int index = 0;    // position in pci_nodes()
  int parent = -1;  // position in pci_nodes(); -1 for a host bridge
  PciKind kind = PciKind::kOther;
  std::string bus_id;           // "0000:3b:00.0" lower case ("" for a host bridge with none)
  std::uint16_t vendor_id = 0;  // 0 when absent or sanitized
  std::uint16_t device_id = 0;
  std::uint32_t class_id = 0;   // 24-bit class code with prog-if (0x030200), or 16-bit (0x0302) << 8
  double link_speed_gts = 0;    // per-lane transfer rate in GT/s (0 unknown)
  int link_width = 0;           // lanes (0 unknown)
  double link_gbps = 0;         // this node's upstream link, GB/s one direction, NCCL convention
                                // (docs/topology.md "PCIe"), after clamps; 0 for a host bridge
  std::string subtype;          // hwloc subtype ("NVSwitch", ...) or ""
  std::vector<int> numa_nodes;  // NUMA positions local to this node (empty: unknown)
  CpuSet cpus;                  // the PUs local to this node (empty: unknown)
};

/// A GPU: a PCI device of class 0x0302/0x0300 from vendor 0x10de (or with no
/// real vendor), or a `<gpu>` of NCCL XML, or a CUDA device (live).
struct Gpu {
  int index = 0;              // position in gpus() (PCI order of the source)
  int pci = -1;               // position in pci_nodes(), -1 if none
  std::string name;           // "GPU0", ...
  std::string model;          // "Tesla V100-SXM3-32GB-H" ("" if unknown)
  std::string bus_id;         // as PciNode::bus_id ("" if none)
  int sm = 0;                 // compute capability × 10 (70 = Volta); 0 if unknown
  int cuda_device = -1;       // CUDA ordinal on the live machine, -1 if unknown
  int numa_node = -1;         // nearest NUMA position, -1 if unknown
  int memory_numa_node = -1;  // NUMA position of the GPU's own memory (POWER9 GPUMemory), -1 if none
  CpuSet cpus;                // nearest PUs (empty: unknown)
};

/// A network interface (one per PCI network function, or per `<net>` of NCCL XML).
struct Nic {
  int index = 0;
  int pci = -1;      // position in pci_nodes(), -1 for a socket-attached NIC
  std::string name;  // "mlx5_0", "ib0", "eth0", "NIC0", ...
  std::string bus_id;
  double speed_gbps = 0;  // line rate in Gbit/s (0 unknown)
  int numa_node = -1;
  CpuSet cpus;
};

struct NvSwitch {
  int index = 0;
  int pci = -1;  // -1 when hidden (VMs: NCCL target fffffff:ff:ff.0)
  std::string bus_id;
};

enum class LinkPeerKind { kGpu, kNvSwitch, kCpu };

/// One end of an NVLink bundle. For kCpu `index` is a package position.
struct LinkPeer {
  LinkPeerKind kind = LinkPeerKind::kGpu;
  int index = 0;
  friend bool operator==(const LinkPeer&, const LinkPeer&) = default;
};

/// `count` NVLinks between a GPU and a peer (undirected, one entry per pair).
struct NvLink {
  int gpu = 0;  // position in gpus()
  LinkPeer peer;
  int count = 0;
};

class Topology {
 public:
  Topology() = default;  // an empty model (no NUMA node): only useful as a target of assignment

  /// The live machine through hwloc (I/O filters set to keep PCI and OS
  /// devices), enriched with CUDA devices (matched by PCI bus id, created
  /// from cudaDeviceGetPCIBusId where hwloc shows no PCI) and NVML NVLinks
  /// (dlopen'ed; absent NVML is not an error). Throws HwlocError.
  static Topology discover();
  /// The process-wide live topology, discovered once (thread-safe).
  static const Topology& live();
  /// A recorded file: hwloc XML 2.x (`<topology version="2.0">`) or NCCL
  /// topology XML (`<system version="1">`), detected by content. Throws
  /// InvalidArgument for a missing file, a directory, an unknown format or
  /// version (hwloc 3.0 XML), malformed XML or missing attributes.
  static Topology load(const std::filesystem::path& file);
  /// The same, from text in memory (`origin` names it in messages and source()).
  static Topology parse(const std::string& text, const std::string& origin);
  /// STEPGRAPH_TOPO_FILE if set, else discover().
  static Topology from_env_or_live();

  [[nodiscard]] std::size_t gpu_count() const noexcept { return gpus_.size(); }
  [[nodiscard]] std::size_t nic_count() const noexcept { return nics_.size(); }
  [[nodiscard]] std::size_t numa_count() const noexcept { return numa_.size(); }
  [[nodiscard]] std::size_t package_count() const noexcept { return packages_.size(); }
  [[nodiscard]] std::size_t nvswitch_count() const noexcept { return nvswitches_.size(); }

  /// "live" or the file path.
  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] SourceFormat format() const noexcept { return format_; }
  [[nodiscard]] bool is_live() const noexcept { return format_ == SourceFormat::kLive; }

  [[nodiscard]] const std::vector<Package>& packages() const noexcept { return packages_; }
  [[nodiscard]] const std::vector<NumaNode>& numa_nodes() const noexcept { return numa_; }
  [[nodiscard]] const std::vector<PciNode>& pci_nodes() const noexcept { return pci_; }
  [[nodiscard]] const std::vector<Gpu>& gpus() const noexcept { return gpus_; }
  [[nodiscard]] const std::vector<Nic>& nics() const noexcept { return nics_; }
  [[nodiscard]] const std::vector<NvSwitch>& nvswitches() const noexcept { return nvswitches_; }
  [[nodiscard]] const std::vector<NvLink>& nvlinks() const noexcept { return nvlinks_; }
  [[nodiscard]] int pu_count() const noexcept { return pu_count_; }
  /// Physical cores (0 where the source does not say: NCCL XML).
  [[nodiscard]] int core_count() const noexcept { return core_count_; }
  [[nodiscard]] const CpuModel& cpu() const noexcept { return cpu_; }
  /// Position of the GPU / NIC with this PCI bus id, -1 if none.
  [[nodiscard]] int gpu_by_bus_id(const std::string& bus_id) const;
  [[nodiscard]] int nic_by_name(const std::string& name) const;

  /// NUMA distance (hwloc NUMALatency / ACPI SLIT, 10 on the diagonal) by
  /// NUMA position. Where the source has none: 10 local, 20 remote (Linux
  /// LOCAL_DISTANCE / REMOTE_DISTANCE).
  [[nodiscard]] double numa_distance(std::size_t a, std::size_t b) const;
  /// True when the source gave a NUMA distance matrix.
  [[nodiscard]] bool has_numa_distances() const noexcept { return !numa_distance_.empty(); }

  /// Notes on what the source is known to hide or got wrong (clamped values,
  /// ignored links, a file without GPUs, ...). Also logged as warnings.
  [[nodiscard]] const std::vector<std::string>& notes() const noexcept { return notes_; }

  /// The whole model as JSON (schema in docs/topology.md, "model").
  [[nodiscard]] std::string to_json() const;
  /// The model as NCCL topology XML (`<system version="1">`), loadable by
  /// Topology::load and by NCCL as NCCL_TOPO_FILE. Extra attributes NCCL
  /// ignores keep NUMA distances, memory sizes and packages.
  [[nodiscard]] std::string to_nccl_xml() const;
  /// Writes to_nccl_xml() to `file`; throws InvalidArgument if it cannot.
  void dump(const std::filesystem::path& file) const;

 private:
  friend class TopologyBuilder;  // topology/src: fills the model from each source

  std::string source_ = "empty";
  SourceFormat format_ = SourceFormat::kLive;
  std::vector<Package> packages_;
  std::vector<NumaNode> numa_;
  std::vector<PciNode> pci_;
  std::vector<Gpu> gpus_;
  std::vector<Nic> nics_;
  std::vector<NvSwitch> nvswitches_;
  std::vector<NvLink> nvlinks_;
  std::vector<double> numa_distance_;  // numa_count()², row-major; empty if the source has none
  std::vector<std::string> notes_;
  CpuModel cpu_;
  int pu_count_ = 0;
  int core_count_ = 0;
};

}  // namespace stepgraph::topology
