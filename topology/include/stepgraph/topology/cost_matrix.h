// stepgraph/topology/cost_matrix.h — for every pair of GPUs, NICs and NUMA
// nodes: the path kind as `nvidia-smi topo -m` prints it, a bandwidth and a
// latency; and the NUMA distance matrix.
//
// The rules (docs/topology.md gives each with its source): a path's
// bandwidth is the narrowest link on it and its kind the worst hop; a pair's
// kind comes from its best path. NVLink is direct only: a route relayed
// through another GPU is not NV# (it falls back to PCIe/SMP). NVSwitches are
// one hub: a GPU's links to all switch planes add up. Per-link bandwidths
// follow NCCL (NVLink per GPU generation, PCIe generation × width, the
// inter-socket bandwidth by CPU family).
//
// Each path also lists the physical links it crosses, one direction each
// (PCIe uplinks up or down, the inter-socket link, direct NVLinks, a GPU's
// links into and out of the NVSwitch fabric), so that a simulator can share
// a link between the transfers that cross it at the same time. The naming
// and routing rules are in docs/topology.md ("Physical links").
//
// Ownership: CostMatrix is a value type; it keeps no reference to the
// Topology it was built from.
// Thread-safety: immutable after build(); const members are thread-safe.
// Capture: safe (no CUDA call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <stepgraph/topology/topology.h>

namespace stepgraph::topology {

/// Path kinds, best first: X, NV#, PIX, PXB, PHB, NODE, SYS.
enum class PathKind { kSelf, kNvLink, kPix, kPxb, kPhb, kNode, kSys };
/// "X", "NV", "PIX", "PXB", "PHB", "NODE", "SYS" (NV# is "NV" + Path::nvlinks).
std::string_view to_string(PathKind kind);

enum class EndpointKind { kGpu, kNic, kNuma };
std::string_view to_string(EndpointKind kind);

/// One row/column of the matrix. `index` is the position within its kind
/// (Topology::gpus(), nics(), numa_nodes()); `numa_node` is the nearest NUMA
/// position (-1 unknown; for kNuma its own position).
struct Endpoint {
  EndpointKind kind;
  int index;
  std::string name;
  int numa_node;
};

/// One direction of a physical link. Several paths may cross the same one.
/// Names (docs/topology.md "Physical links"): "pcie:<bus id> up" / "down"
/// (a PCI node's link to its parent), "smp:socket0->socket1" (or
/// "smp:numa0->numa1" where packages are unknown or the same),
/// "nvlink:GPU0->GPU1", "nvlink:GPU0->socket0" (POWER), "nvswitch:GPU3 out" /
/// "in", "attach:<endpoint> up" / "down" (a device attached to a socket
/// without a PCI node: NCCL's `<cpu><nic>`).
struct PhysicalLink {
  std::string name;
  double bandwidth_gbps = 0;  // one direction, GB/s
};

struct Path {
  PathKind kind = PathKind::kSys;
  int nvlinks = 0;            // number of NVLinks for kNvLink, else 0
  double bandwidth_gbps = 0;  // GB/s, one direction, the narrowest link of the path
  double latency_us = 0;      // one-way small-message latency estimate, µs
  /// The physical links crossed from source to destination, as indices into
  /// CostMatrix::links(); empty for kSelf. The path's bandwidth_gbps is the
  /// smallest of their bandwidths, except for a GPU pair with both direct
  /// NVLinks and the NVSwitch fabric (two parallel routes: the direct link
  /// plus the narrower of the fabric links; docs/topology.md). path(b, a)
  /// lists the same links in reverse order, each in the other direction.
  std::vector<std::uint32_t> links;
  /// "X", "NV6", "PIX", ...
  [[nodiscard]] std::string label() const;
};

class CostMatrix {
 public:
  CostMatrix() = default;  // an empty matrix
  static CostMatrix build(const Topology& topo);

  /// GPUs first, then NICs, then NUMA nodes.
  [[nodiscard]] const std::vector<Endpoint>& endpoints() const noexcept { return endpoints_; }
  [[nodiscard]] std::size_t size() const noexcept { return endpoints_.size(); }
  /// Positions in endpoints() of every endpoint of `kind`, in order.
  [[nodiscard]] std::vector<std::size_t> indices(EndpointKind kind) const;
  /// Position in endpoints() of the `index`-th endpoint of `kind`;
  /// InvalidArgument if there is none.
  [[nodiscard]] std::size_t position(EndpointKind kind, int index) const;
  /// Kind, NVLink count, bandwidth and latency are symmetric; `links` runs
  /// from a to b. path(a, a).kind == kSelf. InvalidArgument when out of range.
  [[nodiscard]] const Path& path(std::size_t a, std::size_t b) const;
  /// Every physical link (one entry per direction) that some path crosses;
  /// deduplicated, in the order paths first cross them.
  [[nodiscard]] const std::vector<PhysicalLink>& links() const noexcept { return links_; }

  [[nodiscard]] std::size_t numa_count() const noexcept { return numa_count_; }
  /// hwloc NUMALatency (10 on the diagonal), by NUMA position.
  [[nodiscard]] double numa_distance(std::size_t numa_a, std::size_t numa_b) const;

  /// The `nvidia-smi topo -m` style table: GPU and NIC rows/columns, CPU
  /// Affinity and NUMA Affinity columns, then the legend.
  [[nodiscard]] std::string to_nvidia_smi() const;
  /// Bandwidth (GB/s) for every pair of endpoints, as a table.
  [[nodiscard]] std::string bandwidth_table() const;
  /// Latency (µs) for every pair of endpoints, as a table.
  [[nodiscard]] std::string latency_table() const;
  /// The NUMA distance matrix, as a table.
  [[nodiscard]] std::string numa_table() const;
  /// Endpoints, paths and NUMA distances as JSON (schema in docs/topology.md).
  [[nodiscard]] std::string to_json() const;

 private:
  std::vector<Endpoint> endpoints_;
  std::vector<std::string> affinity_;  // per endpoint: CPU affinity text ("" unknown)
  std::vector<Path> paths_;            // size()², row-major
  std::vector<PhysicalLink> links_;    // indexed by Path::links
  std::size_t numa_count_ = 0;
  std::vector<double> numa_distance_;  // numa_count_², row-major
  std::vector<int> numa_os_;           // OS index per NUMA position
};

}  // namespace stepgraph::topology
