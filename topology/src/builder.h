// topology/src/builder.h — private: fills a Topology from each source and
// derives what every source shares (GPU/NIC locality, link bandwidths,
// sanity clamps). Not installed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <stepgraph/topology/topology.h>

namespace stepgraph::topology {

/// Per-lane PCIe rates and the NCCL conventions (docs/topology.md, "PCIe").
namespace pcie {
/// NCCL `kvDictPciGen`: per-lane code for a GT/s figure; bandwidth in GB/s
/// is width × code / 80. Unknown speeds map to Gen3 (60), as NCCL does.
double nccl_link_gbps(double gts, int width);
/// hwloc's pci_link_speed (GB/s of raw payload rate) scaled to NCCL's
/// convention: × 12 / 15.753846 (Gen3 x16).
double from_hwloc_gbps(double hwloc_gbps);
}  // namespace pcie

/// NCCL's per-NVLink bandwidth for a compute capability (× 10), GB/s.
double nvlink_gbps_per_link(int sm);
/// NCCL's inter-socket bandwidth for a CPU family, GB/s (cost_matrix.cpp).
double inter_cpu_gbps(const CpuModel& cpu);
/// hwloc NVLinkBandwidth per-link MB/s for a GPU generation (topology-nvml.c).
double hwloc_nvlink_mbps_per_link(int sm);
/// Compute capability × 10 guessed from a model name or PCI device id (0 if unknown).
int sm_from_model(std::string_view model, std::uint16_t device_id);
/// Parses "0000:3b:00.0" / "3b:00.0" / "fffffff:ff:ff.0" to lower-case canonical
/// "dddd:bb:dd.f" (domain widened to at least 4 hex digits).
std::string canonical_bus_id(std::string_view text);
/// "00000000,00ffffff" (NCCL affinity, Linux cpumask) -> CpuSet.
std::optional<CpuSet> parse_cpumask(std::string_view text);
std::string format_cpumask(const CpuSet& cpus);

class TopologyBuilder {
 public:
  explicit TopologyBuilder(std::string source, SourceFormat format) {
    t_.source_ = std::move(source);
    t_.format_ = format;
  }
  Topology& t() { return t_; }
  std::vector<Package>& packages() { return t_.packages_; }
  std::vector<NumaNode>& numa() { return t_.numa_; }
  std::vector<PciNode>& pci() { return t_.pci_; }
  std::vector<Gpu>& gpus() { return t_.gpus_; }
  std::vector<Nic>& nics() { return t_.nics_; }
  std::vector<NvSwitch>& nvswitches() { return t_.nvswitches_; }
  std::vector<NvLink>& nvlinks() { return t_.nvlinks_; }
  std::vector<double>& numa_distance() { return t_.numa_distance_; }
  CpuModel& cpu() { return t_.cpu_; }
  void set_pu_count(int n) { t_.pu_count_ = n; }
  void set_core_count(int n) { t_.core_count_ = n; }
  /// Records a note and logs it (a warning; debug for the live machine's
  /// routine gaps, such as link speeds a VM does not report).
  enum class NoteLevel { kWarn, kDebug };
  void note(std::string text, NoteLevel level = NoteLevel::kWarn);
  /// Adds `count` links between `gpu` and `peer`. For a GPU peer an earlier
  /// entry of the same pair is the same bundle (NCCL XML lists a GPU pair
  /// from both sides): max; for a switch or CPU peer the counts add.
  void add_nvlink(int gpu, LinkPeer peer, int count);
  /// Derives what all sources share: GPU/NIC locality from the PCI tree,
  /// sm and names, PCI link clamps, notes for empty models. Call once.
  Topology finish();

 private:
  Topology t_;
};

/// Sources (each in its own file).
Topology load_hwloc_xml(const std::string& text, const std::string& origin);
Topology load_nccl_xml(const std::string& text, const std::string& origin);
Topology discover_live_hwloc();
/// CUDA / NVML enrichment of a live model (no-op without CUDA or NVML).
void enrich_with_cuda(TopologyBuilder& b);

}  // namespace stepgraph::topology
