// topology/src/cost_matrix.cpp — path kinds, bandwidths and latencies for
// every pair of GPUs, NICs and NUMA nodes. Every rule here is written out,
// with its source, in docs/topology.md ("Cost rules").
#include <stepgraph/topology/cost_matrix.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>

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
    case PathKind::kSelf:
      return "X";
    case PathKind::kNvLink:
      return "NV";
    case PathKind::kPix:
      return "PIX";
    case PathKind::kPxb:
      return "PXB";
    case PathKind::kPhb:
      return "PHB";
    case PathKind::kNode:
      return "NODE";
    case PathKind::kSys:
      return "SYS";
  }
  return "SYS";
}

std::string_view to_string(EndpointKind kind) {
  switch (kind) {
    case EndpointKind::kGpu:
      return "gpu";
    case EndpointKind::kNic:
      return "nic";
    case EndpointKind::kNuma:
      return "numa";
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
    return 32.0;                                                                  // P9_BW
  if (starts(cpu.arch, "aarch64") || starts(cpu.arch, "arm")) return 6.0;         // ARM_BW
  if (cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine") return 16.0;  // AMD_BW
  if (cpu.vendor == "CentaurHauls" || cpu.vendor == "  Shanghai  ") return 6.0;   // ZPI_BW
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
  std::vector<int> chain;        // pci nodes from the device up to (excluding) the root
  int root = -1;                 // host bridge pci index; < -1 for a socket-attached device: -(numa + 2)
  std::vector<int> numa;         // NUMA positions local to the root
  bool socket_attached = false;  // no PCI node (NCCL <cpu><nic>): reached through an "attach:" link
};

/// Where two devices' chains meet in one PCI tree: the lowest common
/// ancestor below the host bridge (-1: they meet at the host bridge) and how
/// many links of each chain lie below it.
struct Meet {
  int lca = -1;
  std::size_t ia = 0;
  std::size_t ib = 0;
};

Meet meet(const Attach& a, const Attach& b) {
  Meet m{-1, a.chain.size(), b.chain.size()};
  for (std::size_t i = 0; i < a.chain.size() && m.lca < 0; ++i) {
    auto it = std::find(b.chain.begin(), b.chain.end(), a.chain[i]);
    if (it != b.chain.end()) {
      m.lca = a.chain[i];
      m.ia = i;
      m.ib = static_cast<std::size_t>(it - b.chain.begin());
    }
  }
  return m;
}

// Physical links (docs/topology.md "Physical links"). A key names one
// direction of one link; the table hands out indices in first-use order.
enum class LinkKind { kPcie, kAttach, kSmp, kNvLinkGpu, kNvLinkCpu, kNvSwitch };
enum class Dir { kUp, kDown };  // PCIe/attach: up = toward the root; NVSwitch: up = out of the GPU into the fabric

struct LinkKey {
  LinkKind kind;
  int x;  // kPcie: pci node; kAttach: endpoint position; kSmp: side code; kNvLink*/kNvSwitch: GPU
  int y;  // kSmp: side code; kNvLinkGpu: peer GPU; kNvLinkCpu: package; else 0
  Dir dir;
};

class LinkTable {
 public:
  template <class NameFn>
  std::uint32_t intern(const LinkKey& k, double gbps, NameFn&& name) {
    const std::array<int, 4> key{static_cast<int>(k.kind), k.x, k.y, static_cast<int>(k.dir)};
    auto [it, inserted] = index_.try_emplace(key, static_cast<std::uint32_t>(links_.size()));
    if (inserted) links_.push_back(PhysicalLink{name(), gbps});
    return it->second;
  }
  std::vector<PhysicalLink> take() { return std::move(links_); }

 private:
  std::map<std::array<int, 4>, std::uint32_t> index_;
  std::vector<PhysicalLink> links_;
};

class Builder {
 public:
  explicit Builder(const Topology& t) : t_(t), inter_cpu_(inter_cpu_gbps(t.cpu())) {}

  Attach attach_pci(int pci, int numa_hint) const {
    Attach a;
    const auto& nodes = t_.pci_nodes();
    if (pci < 0) {
      a.socket_attached = true;
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
    if (cur >= 0)
      a.numa = nodes[static_cast<std::size_t>(cur)].numa_nodes;
    else if (!a.chain.empty())
      a.numa = nodes[static_cast<std::size_t>(a.chain.back())].numa_nodes;
    if (a.root == -1 && !a.chain.empty()) a.root = -1000000 - a.chain.back();  // a tree without host bridge
    return a;
  }

  double link(int pci) const { return t_.pci_nodes()[static_cast<std::size_t>(pci)].link_gbps; }
  bool is_bridge(int pci) const { return t_.pci_nodes()[static_cast<std::size_t>(pci)].kind == PciKind::kBridge; }

  double distance(const std::vector<int>& a, const std::vector<int>& b) const {
    if (a.empty() || b.empty()) return 20.0;
    return t_.numa_distance(static_cast<std::size_t>(a.front()), static_cast<std::size_t>(b.front()));
  }

  double sys_latency(double dist) const {
    return kPixLatency + 3 * kStepLatency + kStepLatency * std::max(0.0, dist - 10.0) / 10.0;
  }

  /// The PCIe/SMP path between two attached devices.
  Path pci_path(const Attach& a, const Attach& b) const {
    Path p;
    double bw = std::numeric_limits<double>::infinity();
    if (a.root == b.root && a.root != -1) {
      // Same tree: find the lowest common ancestor below the host bridge.
      const auto [lca, ia, ib] = meet(a, b);
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
      p.latency_us = sys_latency(
          a.numa.empty() ? 20.0
                         : t_.numa_distance(static_cast<std::size_t>(a.numa.front()), static_cast<std::size_t>(numa)));
    }
    p.bandwidth_gbps = std::isfinite(bw) ? bw : kLocalBandwidth;
    return p;
  }

  struct NvCounts {
    int direct = 0;  // GPU<->GPU links of the pair
    int sw_a = 0;    // a's links to all NVSwitches
    int sw_b = 0;
    [[nodiscard]] int hub() const { return std::min(sw_a, sw_b); }
  };
  NvCounts nv_counts(int a, int b) const {
    NvCounts n;
    for (const auto& l : t_.nvlinks()) {
      if (l.peer.kind == LinkPeerKind::kGpu) {
        if ((l.gpu == a && l.peer.index == b) || (l.gpu == b && l.peer.index == a)) n.direct += l.count;
      } else if (l.peer.kind == LinkPeerKind::kNvSwitch) {
        if (l.gpu == a) n.sw_a += l.count;
        if (l.gpu == b) n.sw_b += l.count;
      }
    }
    return n;
  }

  /// Direct NVLinks between two GPUs, plus the switch hub: a GPU's links to
  /// all NVSwitches add up, and a pair through the hub gets the smaller sum.
  int nvlinks_between(int a, int b) const {
    const NvCounts n = nv_counts(a, b);
    return n.direct + n.hub();
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

/// The physical links of every ordered pair (docs/topology.md "Physical
/// links"), following the same routes as Builder's bandwidth rules: each
/// route crosses exactly the links whose bandwidths those rules take the
/// minimum of.
class Router {
 public:
  Router(const Builder& b, const std::vector<Endpoint>& eps, const std::vector<Attach>& attach)
      : b_(b), t_(b.t_), eps_(eps), attach_(attach) {
    std::map<std::string, int> bus_uses;
    for (const auto& n : t_.pci_nodes()) ++bus_uses[n.bus_id];
    for (const auto& n : t_.pci_nodes())
      pci_names_.push_back(!n.bus_id.empty() && bus_uses[n.bus_id] == 1 ? n.bus_id : fmt::format("pci{}", n.index));
    std::map<std::string, int> name_uses;
    for (const auto& e : eps_) ++name_uses[e.name];
    for (std::size_t i = 0; i < eps_.size(); ++i)
      endpoint_names_.push_back(name_uses[eps_[i].name] == 1 ? eps_[i].name : fmt::format("{}#{}", eps_[i].name, i));
    // NVLink counts once (Builder::nv_counts rescans the list per pair).
    const std::size_t g = t_.gpu_count();
    switch_links_.assign(g, 0);
    direct_links_.assign(g * g, 0);
    for (const auto& l : t_.nvlinks()) {
      const auto a = static_cast<std::size_t>(l.gpu);
      if (l.peer.kind == LinkPeerKind::kNvSwitch) switch_links_[a] += l.count;
      if (l.peer.kind == LinkPeerKind::kGpu) {
        const auto b = static_cast<std::size_t>(l.peer.index);
        direct_links_[a * g + b] += l.count;
        if (a != b) direct_links_[b * g + a] += l.count;
      }
    }
  }

  /// The links from endpoint i to endpoint j (i != j), whose unordered pair has path `p`.
  std::vector<std::uint32_t> route(std::size_t i, std::size_t j, const Path& p) {
    out_.clear();
    const Endpoint& a = eps_[i];
    const Endpoint& c = eps_[j];
    if (a.kind == EndpointKind::kNuma && c.kind == EndpointKind::kNuma) {
      smp({a.index}, {c.index});
    } else if (c.kind == EndpointKind::kNuma) {  // device -> memory
      if (p.kind == PathKind::kNvLink) {
        nvlink_cpu(a.index, c.index, Dir::kUp, p.nvlinks);
      } else {
        up(i, attach_[i].chain.size());
        if (p.kind == PathKind::kSys) smp(attach_[i].numa, {c.index});
      }
    } else if (a.kind == EndpointKind::kNuma) {  // memory -> device
      if (p.kind == PathKind::kNvLink) {
        nvlink_cpu(c.index, a.index, Dir::kDown, p.nvlinks);
      } else {
        if (p.kind == PathKind::kSys) smp({a.index}, attach_[j].numa);
        down(j, attach_[j].chain.size());
      }
    } else if (p.kind == PathKind::kNvLink) {  // GPU -> GPU
      nvlink_gpu(a.index, c.index);
    } else {
      const Attach& x = attach_[i];
      const Attach& y = attach_[j];
      if (x.root == y.root && x.root != -1) {
        const Meet m = meet(x, y);
        up(i, m.ia);
        down(j, m.ib);
      } else {
        up(i, x.chain.size());
        if (p.kind == PathKind::kSys) smp(x.numa, y.numa);
        down(j, y.chain.size());
      }
    }
    return out_;
  }

  std::vector<PhysicalLink> take() { return table_.take(); }

 private:
  static const char* arrow(Dir d) { return d == Dir::kUp ? "up" : "down"; }

  /// Up the first `n` links of endpoint e's chain (or its socket attachment).
  void up(std::size_t e, std::size_t n) {
    const Attach& a = attach_[e];
    if (a.socket_attached) {
      attach_link(e, Dir::kUp);
      return;
    }
    for (std::size_t k = 0; k < n; ++k) pcie(a.chain[k], Dir::kUp);
  }
  /// Down the first `n` links of endpoint e's chain, top first.
  void down(std::size_t e, std::size_t n) {
    const Attach& a = attach_[e];
    if (a.socket_attached) {
      attach_link(e, Dir::kDown);
      return;
    }
    for (std::size_t k = n; k-- > 0;) pcie(a.chain[k], Dir::kDown);
  }
  void pcie(int node, Dir d) {
    const LinkKey k{LinkKind::kPcie, node, 0, d};
    out_.push_back(table_.intern(k, b_.link(node), [&] {
      return fmt::format("pcie:{} {}", pci_names_[static_cast<std::size_t>(node)], arrow(d));
    }));
  }
  // NCCL connects a <nic> directly under <cpu> with a LOC_BW link (topo.cc).
  void attach_link(std::size_t e, Dir d) {
    const LinkKey k{LinkKind::kAttach, static_cast<int>(e), 0, d};
    out_.push_back(
        table_.intern(k, kLocalBandwidth, [&] { return fmt::format("attach:{} {}", endpoint_names_[e], arrow(d)); }));
  }

  /// The SMP crossing from NUMA nodes `from` to NUMA nodes `to` (the local
  /// NUMA nodes of each end): between their packages when both are known and
  /// differ, else between the NUMA nodes themselves.
  void smp(const std::vector<int>& from, const std::vector<int>& to) {
    int x = from.empty() ? -1 : from.front();
    int y = to.empty() ? -1 : to.front();
    for (int n : to)
      if (n != x) {
        y = n;
        break;
      }
    if (x == y && x >= 0)
      for (int n : from)
        if (n != y) {
          x = n;
          break;
        }
    const int px = x >= 0 ? t_.numa_nodes()[static_cast<std::size_t>(x)].package : -1;
    const int py = y >= 0 ? t_.numa_nodes()[static_cast<std::size_t>(y)].package : -1;
    const bool sockets = px >= 0 && py >= 0 && px != py;
    const int big = static_cast<int>(t_.numa_count() + t_.package_count()) + 1;
    auto code = [&](int numa, int pkg) { return numa < 0 ? -1 : sockets ? pkg : big + numa; };
    auto side = [&](int numa, int pkg) {
      if (numa < 0) return std::string("unknown");
      if (sockets) return fmt::format("socket{}", pkg);
      return fmt::format("numa{}", t_.numa_nodes()[static_cast<std::size_t>(numa)].os_index);
    };
    const LinkKey k{LinkKind::kSmp, code(x, px), code(y, py), Dir::kUp};
    out_.push_back(
        table_.intern(k, b_.inter_cpu_, [&] { return fmt::format("smp:{}->{}", side(x, px), side(y, py)); }));
  }

  /// GPU <-> its package over NVLink (POWER): up = GPU to CPU.
  void nvlink_cpu(int gpu, int numa, Dir d, int count) {
    const int pkg = t_.numa_nodes()[static_cast<std::size_t>(numa)].package;
    const LinkKey k{LinkKind::kNvLinkCpu, gpu, pkg, d};
    const std::string& g = t_.gpus()[static_cast<std::size_t>(gpu)].name;
    out_.push_back(table_.intern(k, b_.nvlink_bw(gpu, -1, count), [&] {
      return d == Dir::kUp ? fmt::format("nvlink:{}->socket{}", g, pkg) : fmt::format("nvlink:socket{}->{}", pkg, g);
    }));
  }

  /// GPU a -> GPU b: a's egress into the NVSwitch fabric, the direct NVLinks,
  /// b's ingress. A pair with both has two parallel routes; the direct link
  /// is listed between the fabric links so that the reverse path is the
  /// reversed list.
  void nvlink_gpu(int a, int b) {
    const auto ua = static_cast<std::size_t>(a);
    const auto ub = static_cast<std::size_t>(b);
    const Builder::NvCounts n{direct_links_[ua * t_.gpu_count() + ub], switch_links_[ua], switch_links_[ub]};
    if (n.hub() > 0) nvswitch(a, Dir::kUp, n.sw_a);
    if (n.direct > 0) {
      const LinkKey k{LinkKind::kNvLinkGpu, a, b, Dir::kUp};
      out_.push_back(table_.intern(k, b_.nvlink_bw(a, b, n.direct), [&] {
        return fmt::format("nvlink:{}->{}", t_.gpus()[static_cast<std::size_t>(a)].name,
                           t_.gpus()[static_cast<std::size_t>(b)].name);
      }));
    }
    if (n.hub() > 0) nvswitch(b, Dir::kDown, n.sw_b);
  }
  void nvswitch(int gpu, Dir d, int count) {
    const LinkKey k{LinkKind::kNvSwitch, gpu, 0, d};
    out_.push_back(table_.intern(k, b_.nvlink_bw(gpu, -1, count), [&] {
      return fmt::format("nvswitch:{} {}", t_.gpus()[static_cast<std::size_t>(gpu)].name, d == Dir::kUp ? "out" : "in");
    }));
  }

  const Builder& b_;
  const Topology& t_;
  const std::vector<Endpoint>& eps_;
  const std::vector<Attach>& attach_;
  std::vector<std::string> pci_names_;
  std::vector<std::string> endpoint_names_;
  std::vector<int> switch_links_;  // per GPU: its links to all NVSwitches
  std::vector<int> direct_links_;  // gpu_count()², symmetric: direct GPU<->GPU links
  LinkTable table_;
  std::vector<std::uint32_t> out_;
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
  Router router(b, m.endpoints_, attach);
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
      // Kind, bandwidth and latency are the pair's; the links run per direction.
      m.paths_[i * size + j] = p;
      m.paths_[j * size + i] = p;
      if (i != j) {
        m.paths_[i * size + j].links = router.route(i, j, p);
        m.paths_[j * size + i].links = router.route(j, i, p);
      }
    }
  }
  m.links_ = router.take();
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
std::string pad(const std::string& s, std::size_t w) {
  return s.size() >= w ? s + " " : s + std::string(w - s.size(), ' ');
}

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
      row.push_back({{"kind", p.label()},
                     {"nvlinks", p.nvlinks},
                     {"bandwidth_gbps", p.bandwidth_gbps},
                     {"latency_us", p.latency_us},
                     {"links", p.links}});
    }
    paths.push_back(row);
  }
  j["paths"] = paths;
  json links = json::array();
  for (const auto& l : links_) links.push_back({{"name", l.name}, {"bandwidth_gbps", l.bandwidth_gbps}});
  j["links"] = links;
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
