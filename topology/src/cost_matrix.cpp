// topology/src/cost_matrix.cpp — path kinds, bandwidths and latencies for
// every pair of GPUs, NICs and NUMA nodes. Every rule here is written out,
// with its source, in docs/topology.md ("Cost rules").
#include <stepgraph/topology/cost_matrix.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

#include <stepgraph/core/error.h>

#include "builder.h"

namespace stepgraph::topology {

namespace {

// NCCL src/graph/topo.h LOC_BW: the bandwidth of a local "path" (self).
constexpr double kLocalBandwidth = 5000.0;

// Latency estimates, µs (docs/topology.md "Latency"): NVLink and PCIe bases
// are NCCL's hwLat for the LL protocol (src/graph/tuning.cc: NVLink 0.6, PCI
// 1.0); each further PCIe level adds 0.1; an SMP crossing scales with the
// SLIT distance; host memory reads ~0.1 µs × SLIT/10.
constexpr double kNvLinkLatency = 0.6;
constexpr double kPixLatency = 1.0;
constexpr double kStepLatency = 0.1;
constexpr double kDramLatency = 0.1;

}  // namespace

std::string_view to_string(PathKind kind) {
  switch (kind) {
    case PathKind::kSelf: return "X";
    case PathKind::kNvLink: return "NV";
    case PathKind::kPix: return "PIX";
    case PathKind::kPxb: return "PXB";
    case PathKind::kPhb: return "PHB";
    case PathKind::kNode: return "NODE";
    case PathKind::kSys: return "SYS";
  }
  return "SYS";
}

std::string_view to_string(EndpointKind kind) {
  switch (kind) {
    case EndpointKind::kGpu: return "gpu";
    case EndpointKind::kNic: return "nic";
    case EndpointKind::kNuma: return "numa";
  }
  return "numa";
}

std::string Path::label() const {
  if (kind == PathKind::kNvLink) return fmt::format("NV{}", nvlinks);
  return std::string(to_string(kind));
}

/// Inter-socket bandwidth by CPU family, GB/s (NCCL topo.cc ncclTopoGetInterCpuBw, v2.30).
double inter_cpu_gbps(const CpuModel& cpu) {
  auto starts = [](const std::string& s, const char* p) { return s.rfind(p, 0) == 0; };
  if (starts(cpu.arch, "ppc") || starts(cpu.arch, "power") || starts(cpu.model, "POWER") || cpu.vendor == "IBM")
    return 32.0;  // P9_BW
  if (starts(cpu.arch, "aarch64") || starts(cpu.arch, "arm")) return 6.0;  // ARM_BW
  if (cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine") return 16.0;  // AMD_BW
  if (cpu.vendor == "CentaurHauls" || cpu.vendor == "  Shanghai  ") return 6.0;  // ZPI_BW
  if (cpu.vendor == "GenuineIntel") {
    if (cpu.model_id >= 0xCF) return 40.0;  // ERP_QPI_BW (Emerald Rapids+)
    if (cpu.model_id >= 0x8F) return 22.0;  // SRP_QPI_BW (Sapphire Rapids)
    if (cpu.model_id >= 0x55) return 10.0;  // SKL_QPI_BW (Skylake/Cascade Lake)
    return 6.0;                             // BDW_QPI_BW (Broadwell and older)
  }
  return 6.0;  // unknown: the lowest x86 figure
}

namespace {

struct Attach {
  std::vector<int> chain;   // pci nodes from the device up to (excluding) the root
  int root = -1;            // host bridge pci index; < -1 for a socket-attached device: -(numa + 2)
  std::vector<int> numa;    // NUMA positions local to the root
};

class Builder {
 public:
  explicit Builder(const Topology& t) : t_(t), inter_cpu_(inter_cpu_gbps(t.cpu())) {}

  Attach attach_pci(int pci, int numa_hint) const {
    Attach a;
    const auto& nodes = t_.pci_nodes();
    if (pci < 0) {
      // Socket-attached (NCCL <cpu><nic>): on the host bridge of its NUMA
      // node when the source has exactly one, as NCCL XML does.
      int found = -1;
      int count = 0;
      for (const auto& n : nodes)
        if (n.kind == PciKind::kHostBridge && n.numa_nodes.size() == 1 && n.numa_nodes.front() == numa_hint) {
          found = n.index;
          ++count;
        }
      a.root = count == 1 ? found : -(numa_hint + 2);
      if (numa_hint >= 0) a.numa = {numa_hint};
      return a;
    }
    int cur = pci;
    while (cur >= 0 && nodes[static_cast<std::size_t>(cur)].kind != PciKind::kHostBridge) {
      a.chain.push_back(cur);
      cur = nodes[static_cast<std::size_t>(cur)].parent;
    }
    a.root = cur >= 0 ? cur : -1;
    if (cur >= 0) a.numa = nodes[static_cast<std::size_t>(cur)].numa_nodes;
    else if (!a.chain.empty()) a.numa = nodes[static_cast<std::size_t>(a.chain.back())].numa_nodes;
    if (a.root == -1 && !a.chain.empty()) a.root = -1000000 - a.chain.back();  // a tree without host bridge
    return a;
  }

  double link(int pci) const { return t_.pci_nodes()[static_cast<std::size_t>(pci)].link_gbps; }
  bool is_bridge(int pci) const { return t_.pci_nodes()[static_cast<std::size_t>(pci)].kind == PciKind::kBridge; }

  double distance(const std::vector<int>& a, const std::vector<int>& b) const {
    if (a.empty() || b.empty()) return 20.0;
    return t_.numa_distance(static_cast<std::size_t>(a.front()), static_cast<std::size_t>(b.front()));
  }

  double sys_latency(double dist) const { return kPixLatency + 3 * kStepLatency + kStepLatency * std::max(0.0, dist - 10.0) / 10.0; }

  /// The PCIe/SMP path between two attached devices.
  Path pci_path(const Attach& a, const Attach& b) const {
    Path p;
    double bw = std::numeric_limits<double>::infinity();
    if (a.root == b.root && a.root != -1) {
      // Same tree: find the lowest common ancestor below the host bridge.
      int lca = -1;
      std::size_t ia = a.chain.size();
      std::size_t ib = b.chain.size();
      for (std::size_t i = 0; i < a.chain.size() && lca < 0; ++i) {
        auto it = std::find(b.chain.begin(), b.chain.end(), a.chain[i]);
        if (it != b.chain.end()) {
          lca = a.chain[i];
          ia = i;
          ib = static_cast<std::size_t>(it - b.chain.begin());
        }
      }
      for (std::size_t i = 0; i < ia; ++i) bw = std::min(bw, link(a.chain[i]));
      for (std::size_t i = 0; i < ib; ++i) bw = std::min(bw, link(b.chain[i]));
      if (lca < 0) {
        p.kind = PathKind::kPhb;
        p.latency_us = kPixLatency + 2 * kStepLatency;
      } else {
        int bridges = is_bridge(lca) ? 1 : 0;
        for (std::size_t i = 1; i < ia; ++i) bridges += is_bridge(a.chain[i]) ? 1 : 0;
        for (std::size_t i = 1; i < ib; ++i) bridges += is_bridge(b.chain[i]) ? 1 : 0;
        p.kind = bridges <= 1 ? PathKind::kPix : PathKind::kPxb;
        p.latency_us = kPixLatency + kStepLatency * std::max(0, bridges - 1);
      }
    } else {
      for (int n : a.chain) bw = std::min(bw, link(n));
      for (int n : b.chain) bw = std::min(bw, link(n));
      if (!a.numa.empty() && a.numa == b.numa) {
        p.kind = PathKind::kNode;
        p.latency_us = kPixLatency + 3 * kStepLatency;
      } else {
        p.kind = PathKind::kSys;
        bw = std::min(bw, inter_cpu_);
        p.latency_us = sys_latency(distance(a.numa, b.numa));
      }
    }
    p.bandwidth_gbps = std::isfinite(bw) ? bw : kLocalBandwidth;
    return p;
  }

  /// A device to a NUMA node's memory.
  Path numa_path(const Attach& a, int numa) const {
    Path p;
    double bw = std::numeric_limits<double>::infinity();
    for (int n : a.chain) bw = std::min(bw, link(n));
    const bool local = std::find(a.numa.begin(), a.numa.end(), numa) != a.numa.end();
    if (local) {
      p.kind = PathKind::kPhb;
      p.latency_us = kPixLatency + 2 * kStepLatency;
    } else {
      p.kind = PathKind::kSys;
      bw = std::min(bw, inter_cpu_);
      p.latency_us = sys_latency(a.numa.empty() ? 20.0 : t_.numa_distance(static_cast<std::size_t>(a.numa.front()),
                                                                           static_cast<std::size_t>(numa)));
    }
    p.bandwidth_gbps = std::isfinite(bw) ? bw : kLocalBandwidth;
    return p;
  }

  /// Direct NVLinks between two GPUs, plus the switch hub: a GPU's links to
  /// all NVSwitches add up, and a pair through the hub gets the smaller sum.
  int nvlinks_between(int a, int b) const {
    int direct = 0;
    int sw_a = 0;
    int sw_b = 0;
    for (const auto& l : t_.nvlinks()) {
      if (l.peer.kind == LinkPeerKind::kGpu) {
        if ((l.gpu == a && l.peer.index == b) || (l.gpu == b && l.peer.index == a)) direct += l.count;
      } else if (l.peer.kind == LinkPeerKind::kNvSwitch) {
        if (l.gpu == a) sw_a += l.count;
        if (l.gpu == b) sw_b += l.count;
      }
    }
    return direct + std::min(sw_a, sw_b);
  }

  int nvlinks_to_cpu(int gpu, int numa) const {
    const int package = t_.numa_nodes()[static_cast<std::size_t>(numa)].package;
    if (package < 0) return 0;
    int n = 0;
    for (const auto& l : t_.nvlinks())
      if (l.gpu == gpu && l.peer.kind == LinkPeerKind::kCpu && l.peer.index == package) n += l.count;
    return n;
  }

  double nvlink_bw(int gpu_a, int gpu_b, int count) const {
    int sm = t_.gpus()[static_cast<std::size_t>(gpu_a)].sm;
    if (gpu_b >= 0) {
      const int smb = t_.gpus()[static_cast<std::size_t>(gpu_b)].sm;
      if (sm == 0 || (smb != 0 && smb < sm)) sm = smb;
    }
    return count * nvlink_gbps_per_link(sm);
  }

  const Topology& t_;
  double inter_cpu_;
};

}  // namespace

CostMatrix CostMatrix::build(const Topology& topo) {
  CostMatrix m;
  Builder b(topo);
  std::vector<Attach> attach;
  for (const auto& g : topo.gpus()) {
    m.endpoints_.push_back(Endpoint{EndpointKind::kGpu, g.index, g.name, g.numa_node});
    m.affinity_.push_back(g.cpus.to_string());
    attach.push_back(b.attach_pci(g.pci, g.numa_node));
  }
  for (const auto& n : topo.nics()) {
    m.endpoints_.push_back(Endpoint{EndpointKind::kNic, n.index, n.name, n.numa_node});
    m.affinity_.push_back(n.cpus.to_string());
    attach.push_back(b.attach_pci(n.pci, n.numa_node));
  }
  for (const auto& n : topo.numa_nodes()) {
    m.endpoints_.push_back(Endpoint{EndpointKind::kNuma, n.index, fmt::format("NUMA{}", n.os_index), n.index});
    m.affinity_.push_back(n.cpus.to_string());
    attach.push_back(Attach{});
  }
  const std::size_t size = m.endpoints_.size();
  m.paths_.assign(size * size, Path{});
  for (std::size_t i = 0; i < size; ++i) {
    for (std::size_t j = i; j < size; ++j) {
      const Endpoint& a = m.endpoints_[i];
      const Endpoint& c = m.endpoints_[j];
      Path p;
      if (i == j) {
        p = Path{PathKind::kSelf, 0, kLocalBandwidth, 0.0};
      } else if (a.kind == EndpointKind::kNuma && c.kind == EndpointKind::kNuma) {
        const double d = topo.numa_distance(static_cast<std::size_t>(a.index), static_cast<std::size_t>(c.index));
        p = Path{PathKind::kSys, 0, inter_cpu_gbps(topo.cpu()), kDramLatency * d / 10.0};
      } else if (c.kind == EndpointKind::kNuma) {
        p = b.numa_path(attach[i], c.index);
        if (a.kind == EndpointKind::kGpu) {
          const int n = b.nvlinks_to_cpu(a.index, c.index);
          if (n > 0) p = Path{PathKind::kNvLink, n, b.nvlink_bw(a.index, -1, n), kNvLinkLatency};
        }
      } else {
        p = b.pci_path(attach[i], attach[j]);
        if (a.kind == EndpointKind::kGpu && c.kind == EndpointKind::kGpu) {
          const int n = b.nvlinks_between(a.index, c.index);
          if (n > 0) p = Path{PathKind::kNvLink, n, b.nvlink_bw(a.index, c.index, n), kNvLinkLatency};
        }
      }
      m.paths_[i * size + j] = p;
      m.paths_[j * size + i] = p;
    }
  }
  m.numa_count_ = topo.numa_count();
  m.numa_distance_.resize(m.numa_count_ * m.numa_count_);
  for (std::size_t a = 0; a < m.numa_count_; ++a)
    for (std::size_t c = 0; c < m.numa_count_; ++c) m.numa_distance_[a * m.numa_count_ + c] = topo.numa_distance(a, c);
  m.numa_os_.clear();
  for (const auto& n : topo.numa_nodes()) m.numa_os_.push_back(n.os_index);
  return m;
}

std::vector<std::size_t> CostMatrix::indices(EndpointKind kind) const {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < endpoints_.size(); ++i)
    if (endpoints_[i].kind == kind) out.push_back(i);
  return out;
}

std::size_t CostMatrix::position(EndpointKind kind, int index) const {
  for (std::size_t i = 0; i < endpoints_.size(); ++i)
    if (endpoints_[i].kind == kind && endpoints_[i].index == index) return i;
  throw InvalidArgument(fmt::format("the cost matrix has no {} {}; use an index below the topology's {} count",
                                    to_string(kind), index, to_string(kind)));
}

const Path& CostMatrix::path(std::size_t a, std::size_t b) const {
  STEPGRAPH_CHECK(a < size() && b < size(), InvalidArgument,
                  "CostMatrix::path({}, {}): the matrix has {} endpoints; use positions from endpoints()", a, b,
                  size());
  return paths_[a * size() + b];
}

double CostMatrix::numa_distance(std::size_t a, std::size_t b) const {
  STEPGRAPH_CHECK(a < numa_count_ && b < numa_count_, InvalidArgument,
                  "CostMatrix::numa_distance({}, {}): there are {} NUMA node(s)", a, b, numa_count_);
  return numa_distance_[a * numa_count_ + b];
}

namespace {
std::string pad(const std::string& s, std::size_t w) { return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' '); }

constexpr const char* kLegend =
    "Legend:\n\n"
    "  X    = Self\n"
    "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)\n"
    "  NODE = Connection traversing PCIe as well as the interconnect between PCIe Host Bridges within a NUMA node\n"
    "  PHB  = Connection traversing PCIe as well as a PCIe Host Bridge (typically the CPU)\n"
    "  PXB  = Connection traversing multiple PCIe bridges (without traversing the PCIe Host Bridge)\n"
    "  PIX  = Connection traversing at most a single PCIe bridge\n"
    "  NV#  = Connection traversing a bonded set of # NVLinks\n";
}  // namespace

std::string CostMatrix::to_nvidia_smi() const {
  std::vector<std::size_t> rows = indices(EndpointKind::kGpu);
  for (std::size_t i : indices(EndpointKind::kNic)) rows.push_back(i);
  std::size_t w = 8;
  for (std::size_t i : rows) w = std::max(w, endpoints_[i].name.size() + 2);
  std::string out = pad("", w);
  for (std::size_t i : rows) out += pad(endpoints_[i].name, w);
  out += "CPU Affinity    NUMA Affinity\n";
  for (std::size_t r : rows) {
    out += pad(endpoints_[r].name, w);
    for (std::size_t c : rows) out += pad(path(r, c).label(), w);
    const std::string aff = affinity_[r].empty() ? "N/A" : affinity_[r];
    const int numa = endpoints_[r].numa_node;
    out += pad(aff, 16);
    out += numa >= 0 && static_cast<std::size_t>(numa) < numa_os_.size()
               ? std::to_string(numa_os_[static_cast<std::size_t>(numa)])
               : std::string("N/A");
    out += "\n";
  }
  out += "\n";
  out += kLegend;
  return out;
}

namespace {
template <class F>
std::string square_table(const std::vector<Endpoint>& eps, F cell) {
  std::size_t w = 8;
  for (const auto& e : eps) w = std::max(w, e.name.size() + 2);
  std::string out = pad("", w);
  for (const auto& e : eps) out += pad(e.name, w);
  out += "\n";
  for (std::size_t r = 0; r < eps.size(); ++r) {
    out += pad(eps[r].name, w);
    for (std::size_t c = 0; c < eps.size(); ++c) out += pad(cell(r, c), w);
    out += "\n";
  }
  return out;
}
}  // namespace

std::string CostMatrix::bandwidth_table() const {
  return square_table(endpoints_, [&](std::size_t r, std::size_t c) {
    return r == c ? std::string("-") : fmt::format("{:.1f}", path(r, c).bandwidth_gbps);
  });
}

std::string CostMatrix::latency_table() const {
  return square_table(endpoints_, [&](std::size_t r, std::size_t c) {
    return r == c ? std::string("-") : fmt::format("{:.2f}", path(r, c).latency_us);
  });
}

std::string CostMatrix::numa_table() const {
  std::vector<Endpoint> eps;
  for (std::size_t i : indices(EndpointKind::kNuma)) eps.push_back(endpoints_[i]);
  return square_table(eps, [&](std::size_t r, std::size_t c) { return fmt::format("{:g}", numa_distance(r, c)); });
}

std::string CostMatrix::to_json() const {
  using nlohmann::json;
  json j;
  j["endpoints"] = json::array();
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    const auto& e = endpoints_[i];
    j["endpoints"].push_back({{"kind", to_string(e.kind)},
                              {"index", e.index},
                              {"name", e.name},
                              {"numa_node", e.numa_node},
                              {"cpu_affinity", affinity_[i]}});
  }
  json paths = json::array();
  for (std::size_t r = 0; r < size(); ++r) {
    json row = json::array();
    for (std::size_t c = 0; c < size(); ++c) {
      const Path& p = path(r, c);
      row.push_back({{"kind", p.label()}, {"nvlinks", p.nvlinks}, {"bandwidth_gbps", p.bandwidth_gbps},
                     {"latency_us", p.latency_us}});
    }
    paths.push_back(row);
  }
  j["paths"] = paths;
  json dist = json::array();
  for (std::size_t a = 0; a < numa_count_; ++a) {
    json row = json::array();
    for (std::size_t c = 0; c < numa_count_; ++c) row.push_back(numa_distance(a, c));
    dist.push_back(row);
  }
  j["numa_distance"] = dist;
  // Names come from files: replace invalid UTF-8 rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace stepgraph::topology
