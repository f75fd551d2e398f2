// topology/src/nccl_source.cpp — the model from NCCL topology XML (the
// NCCL_TOPO_FILE / NCCL_TOPO_DUMP_FILE format, NCCL src/graph/xml.cc).
//
//   <system version="1">
//     <cpu numaid affinity arch vendor familyid modelid>     one per NUMA node
//       <pci busid class vendor device link_speed link_width>  nested = switch levels
//         <gpu dev sm rank gdr><nvlink target tclass count/></gpu>
//         <nic><net name dev speed .../></nic>
//       <nic>...</nic>                                        socket-attached NIC
//
// Each <cpu> becomes a NUMA node and one host bridge: NCCL XML carries no
// host-bridge or socket information (NCCL itself links every CPU pair with
// one SYS link, topo.cc ncclTopoConnectCpus).
#include <algorithm>
#include <cmath>
#include <map>

#include <pugixml.hpp>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "builder.h"

namespace stepgraph::topology {
namespace {

constexpr int kMaxDepth = 64;  // far deeper than any real PCI tree; guards hostile input
// No GPU has more NVLinks than this (H100: 18, NVML_NVLINK_MAX_LINKS); a
// larger count is a corrupt file, and would overflow the sums of the hub rule.
constexpr int kMaxNvlinksPerGpu = 64;

std::uint32_t parse_hex(const pugi::xml_node& n, const char* attr, std::uint32_t fallback) {
  const char* v = n.attribute(attr).as_string(nullptr);
  if (v == nullptr || *v == '\0') return fallback;
  try {
    return static_cast<std::uint32_t>(std::stoul(v, nullptr, 16));
  } catch (const std::exception&) {
    return fallback;
  }
}

int parse_int(const pugi::xml_node& n, const char* attr, int fallback) {
  const char* v = n.attribute(attr).as_string(nullptr);
  if (v == nullptr || *v == '\0') return fallback;
  try {
    return std::stoi(v, nullptr, 0);
  } catch (const std::exception&) {
    return fallback;
  }
}

double leading_double(const char* v) {
  if (v == nullptr) return 0;
  try {
    return std::stod(v);
  } catch (const std::exception&) {
    return 0;
  }
}

struct PendingLink {
  int gpu;
  std::string target;
  std::uint32_t tclass;
  int count;
  int numa;  // the GPU's NUMA position (for CPU links)
};

class NcclReader {
 public:
  NcclReader(TopologyBuilder& b, std::string origin) : b_(b), origin_(std::move(origin)) {}

  void run(const pugi::xml_node& system) {
    const std::string version = system.attribute("version").as_string("");
    if (version != "1")
      throw InvalidArgument(
          fmt::format("{}: NCCL topology XML version \"{}\" is not supported (expected "
                      "<system version=\"1\">, NCCL_TOPO_XML_VERSION 1)",
                      origin_, version));
    for (pugi::xml_node cpu : system.children("cpu")) read_cpu(cpu);
    if (b_.numa().empty()) return;
    resolve_links();
    read_distances(system);
    CpuSet all;
    for (const auto& n : b_.numa()) {
      CpuSet u;
      std::set_union(all.pus.begin(), all.pus.end(), n.cpus.pus.begin(), n.cpus.pus.end(), std::back_inserter(u.pus));
      all = std::move(u);
    }
    b_.set_pu_count(static_cast<int>(all.size()));
  }

 private:
  void read_cpu(const pugi::xml_node& cpu) {
    const char* numaid = cpu.attribute("numaid").as_string(nullptr);
    if (numaid == nullptr || *numaid == '\0')
      throw InvalidArgument(
          fmt::format("{}: <cpu> at byte {} has no numaid attribute; every <cpu> of an NCCL "
                      "topology names its NUMA node",
                      origin_, cpu.offset_debug()));
    NumaNode n;
    n.index = static_cast<int>(b_.numa().size());
    n.os_index = parse_int(cpu, "numaid", -1);
    if (n.os_index < 0)
      throw InvalidArgument(fmt::format("{}: <cpu numaid=\"{}\"> is not a NUMA node number", origin_, numaid));
    for (const auto& other : b_.numa())
      if (other.os_index == n.os_index)
        throw InvalidArgument(
            fmt::format("{}: two <cpu> elements with numaid={}; each NUMA node appears once", origin_, n.os_index));
    if (const char* aff = cpu.attribute("affinity").as_string(nullptr)) {
      auto set = parse_cpumask(aff);
      if (!set)
        b_.note(fmt::format("<cpu numaid={}> affinity \"{}\" is not a cpumask; ignored", n.os_index, aff));
      else
        n.cpus = std::move(*set);
    }
    if (cpu.attribute("memory")) n.memory_bytes = cpu.attribute("memory").as_ullong(0);
    if (cpu.attribute("gpu_memory").as_int(0) == 1) n.kind = NumaKind::kGpuMemory;
    const int package = parse_int(cpu, "package", -1);
    // Packages are numbered densely from 0; a number far beyond the <cpu>
    // elements would make this loop allocate up to it (found by fuzzing:
    // package=<2^31> asked for 2.8 GB).
    constexpr int kMaxPackage = 4096;
    if (package >= kMaxPackage)
      throw InvalidArgument(fmt::format("{}: <cpu numaid={}> package={} is beyond any machine (at most {} packages)",
                                        origin_, n.os_index, package, kMaxPackage));
    if (package >= 0) {
      while (static_cast<int>(b_.packages().size()) <= package) {
        Package p;
        p.index = static_cast<int>(b_.packages().size());
        b_.packages().push_back(p);
      }
      Package& p = b_.packages()[static_cast<std::size_t>(package)];
      p.numa_nodes.push_back(n.index);
      CpuSet u;
      std::set_union(p.cpus.pus.begin(), p.cpus.pus.end(), n.cpus.pus.begin(), n.cpus.pus.end(),
                     std::back_inserter(u.pus));
      p.cpus = std::move(u);
      n.package = package;
    }
    if (b_.numa().empty()) {
      b_.cpu().vendor = cpu.attribute("vendor").as_string("");
      b_.cpu().arch = cpu.attribute("arch").as_string("");
      b_.cpu().family = parse_int(cpu, "familyid", -1);
      b_.cpu().model_id = parse_int(cpu, "modelid", -1);
    }
    for (auto& p : b_.packages()) {
      p.cpu_vendor = b_.cpu().vendor;
      p.arch = b_.cpu().arch;
      p.cpu_family = b_.cpu().family;
      p.cpu_model_id = b_.cpu().model_id;
    }
    const int numa = n.index;
    const CpuSet cpus = n.cpus;
    b_.numa().push_back(std::move(n));

    PciNode host;
    host.index = static_cast<int>(b_.pci().size());
    host.kind = PciKind::kHostBridge;
    host.numa_nodes = {numa};
    host.cpus = cpus;
    const int host_index = host.index;
    b_.pci().push_back(std::move(host));

    // Our dumps name each top-level <pci>'s host bridge (host_bridge=, which
    // NCCL ignores): devices under two host bridges of one NUMA node are
    // NODE apart, under one PHB (Note [NCCL XML dump] in topology.cpp).
    std::map<std::string, int> bridges;
    for (pugi::xml_node child : cpu.children()) {
      if (std::string_view(child.name()) == "pci") {
        int parent = host_index;
        if (const char* hb = child.attribute("host_bridge").as_string(nullptr)) {
          auto [it, fresh] = bridges.try_emplace(hb, host_index);
          if (fresh && bridges.size() > 1) {
            PciNode other = b_.pci()[static_cast<std::size_t>(host_index)];
            other.index = static_cast<int>(b_.pci().size());
            it->second = other.index;
            b_.pci().push_back(std::move(other));
          }
          parent = it->second;
        }
        read_pci(child, parent, numa, 0);
      } else if (std::string_view(child.name()) == "nic") {
        read_nic(child, -1, numa);
      }
    }
  }

  void read_nic(const pugi::xml_node& nic, int pci_index, int numa) {
    bool any = false;
    for (pugi::xml_node net : nic.children("net")) {
      Nic n;
      n.index = static_cast<int>(b_.nics().size());
      n.pci = pci_index;
      n.name = net.attribute("name").as_string("");
      n.speed_gbps = net.attribute("speed").as_double(0) / 1000.0;  // NCCL: Mbit/s
      if (pci_index >= 0)
        n.bus_id = b_.pci()[static_cast<std::size_t>(pci_index)].bus_id;
      else
        n.numa_node = numa;
      b_.nics().push_back(std::move(n));
      any = true;
    }
    if (!any) {
      Nic n;
      n.index = static_cast<int>(b_.nics().size());
      n.pci = pci_index;
      if (pci_index >= 0)
        n.bus_id = b_.pci()[static_cast<std::size_t>(pci_index)].bus_id;
      else
        n.numa_node = numa;
      b_.nics().push_back(std::move(n));
    }
    if (pci_index >= 0) b_.pci()[static_cast<std::size_t>(pci_index)].kind = PciKind::kNic;
  }

  void read_pci(const pugi::xml_node& x, int parent, int numa, int depth) {
    if (depth > kMaxDepth)
      throw InvalidArgument(fmt::format("{}: <pci> nesting deeper than {} levels at byte {}; not a real PCI tree",
                                        origin_, kMaxDepth, x.offset_debug()));
    const char* busid = x.attribute("busid").as_string(nullptr);
    if (busid == nullptr || *busid == '\0')
      throw InvalidArgument(
          fmt::format("{}: <pci> at byte {} has no busid attribute; NCCL needs one on every "
                      "<pci>",
                      origin_, x.offset_debug()));
    PciNode n;
    n.index = static_cast<int>(b_.pci().size());
    n.parent = parent;
    n.bus_id = canonical_bus_id(busid);
    n.class_id = parse_hex(x, "class", 0);
    n.vendor_id = static_cast<std::uint16_t>(parse_hex(x, "vendor", 0));
    n.device_id = static_cast<std::uint16_t>(parse_hex(x, "device", 0));
    n.link_speed_gts = leading_double(x.attribute("link_speed").as_string(nullptr));
    n.link_width = parse_int(x, "link_width", 0);
    const bool has_speed = n.link_speed_gts > 0 || n.link_width > 0;
    if (x.attribute("link_gbps"))
      n.link_gbps = x.attribute("link_gbps").as_double(0);  // our own dumps
    else if (has_speed)
      n.link_gbps = pcie::nccl_link_gbps(n.link_speed_gts, n.link_width);
    if (has_speed && n.link_width == 0) ++zero_width_;
    n.numa_nodes = {numa};

    const pugi::xml_node gpu = x.child("gpu");
    const pugi::xml_node nic = x.child("nic");
    const std::uint32_t cls = n.class_id >> 16;  // 0x03 display, 0x02 network, 0x06 bridge
    const bool real_vendor = n.vendor_id != 0 && n.vendor_id != 0xffff;
    if (gpu || (cls == 0x03 && (!real_vendor || n.vendor_id == 0x10de)))
      n.kind = PciKind::kGpu;
    else if ((n.class_id >> 8) == 0x0680 || n.class_id == 0x068000)
      n.kind = PciKind::kNvSwitch;
    else if (cls == 0x02 || nic)
      n.kind = PciKind::kNic;
    else if ((n.class_id >> 8) == 0x0604 || (n.class_id >> 8) == 0x0801 || x.child("pci"))
      n.kind = PciKind::kBridge;
    else
      n.kind = PciKind::kOther;
    const int index = n.index;
    const PciKind kind = n.kind;
    const std::string bus = n.bus_id;
    b_.pci().push_back(std::move(n));

    if (kind == PciKind::kGpu) {
      Gpu g;
      g.index = static_cast<int>(b_.gpus().size());
      g.pci = index;
      g.bus_id = bus;
      if (gpu) {
        g.sm = parse_int(gpu, "sm", 0);
        g.model = gpu.attribute("model").as_string("");
        for (pugi::xml_node l : gpu.children("nvlink")) {
          const char* target = l.attribute("target").as_string(nullptr);
          if (target == nullptr)
            throw InvalidArgument(
                fmt::format("{}: <nvlink> at byte {} has no target attribute", origin_, l.offset_debug()));
          links_.push_back(
              PendingLink{g.index, target, parse_hex(l, "tclass", 0x030200), parse_int(l, "count", 1), numa});
        }
      }
      b_.gpus().push_back(std::move(g));
    } else if (kind == PciKind::kNvSwitch) {
      switch_by_bus(bus, index);
    }
    if (nic)
      read_nic(nic, index, numa);
    else if (kind == PciKind::kNic)
      read_nic(pugi::xml_node(), index, numa);
    for (pugi::xml_node child : x.children("pci")) read_pci(child, index, numa, depth + 1);
  }

  int switch_by_bus(const std::string& bus, int pci_index) {
    auto it = switch_by_bus_.find(bus);
    if (it != switch_by_bus_.end()) {
      if (pci_index >= 0) b_.nvswitches()[static_cast<std::size_t>(it->second)].pci = pci_index;
      return it->second;
    }
    NvSwitch s{static_cast<int>(b_.nvswitches().size()), pci_index, bus.rfind("fffffff", 0) == 0 ? std::string() : bus};
    b_.nvswitches().push_back(s);
    switch_by_bus_[bus] = s.index;
    return s.index;
  }

  void resolve_links() {
    for (const auto& l : links_) {
      if (l.count <= 0 || l.count > kMaxNvlinksPerGpu) {
        b_.note(fmt::format("GPU{}: <nvlink target={}> with count {} (a GPU has 1 to {} links); ignored", l.gpu,
                            l.target, l.count, kMaxNvlinksPerGpu));
        continue;
      }
      if (l.tclass == 0x068000) {
        // NVSwitch; a VM hides it as fffffff:ff:ff.0 (NCCL xml.cc), still one switch.
        b_.add_nvlink(l.gpu, LinkPeer{LinkPeerKind::kNvSwitch, switch_by_bus(canonical_bus_id(l.target), -1)}, l.count);
      } else if (l.tclass == 0x068001) {
        // NVLink to the CPU (POWER9): the package of the GPU's NUMA node, or the node itself.
        const NumaNode& n = b_.numa()[static_cast<std::size_t>(l.numa)];
        if (n.package < 0) {
          Package p;
          p.index = static_cast<int>(b_.packages().size());
          p.cpus = n.cpus;
          p.numa_nodes = {n.index};
          b_.numa()[static_cast<std::size_t>(l.numa)].package = p.index;
          b_.packages().push_back(p);
        }
        b_.add_nvlink(l.gpu, LinkPeer{LinkPeerKind::kCpu, b_.numa()[static_cast<std::size_t>(l.numa)].package},
                      l.count);
      } else {
        const std::string target = canonical_bus_id(l.target);
        int peer = -1;
        for (const auto& g : b_.gpus())
          if (g.bus_id == target) peer = g.index;
        if (peer < 0) {
          b_.note(fmt::format("GPU{}: <nvlink> to {} which is no GPU of this file; ignored", l.gpu, l.target));
        } else if (peer == l.gpu) {
          b_.note(fmt::format("GPU{}: <nvlink> to itself (count {}), as some VMs publish; ignored", l.gpu, l.count));
        } else {
          b_.add_nvlink(l.gpu, LinkPeer{LinkPeerKind::kGpu, peer}, l.count);
        }
      }
    }
    if (zero_width_ > 0)
      b_.note(fmt::format("{} PCI link(s) with link_width=0; taken as x16, as NCCL does", zero_width_));
  }

  // Our dumps carry each NUMA node's SLIT row as <cpu distances="10 21">.
  void read_distances(const pugi::xml_node& system) {
    const std::size_t n = b_.numa().size();
    std::vector<double> m;
    for (pugi::xml_node cpu : system.children("cpu")) {
      const char* d = cpu.attribute("distances").as_string(nullptr);
      if (d == nullptr) return;
      std::string_view sv(d);
      std::size_t count = 0;
      std::size_t pos = 0;
      while (pos < sv.size()) {
        while (pos < sv.size() && sv[pos] == ' ') ++pos;
        if (pos >= sv.size()) break;
        std::size_t end = sv.find(' ', pos);
        if (end == std::string_view::npos) end = sv.size();
        m.push_back(leading_double(std::string(sv.substr(pos, end - pos)).c_str()));
        ++count;
        pos = end;
      }
      if (count != n) {
        b_.note("<cpu distances> rows do not match the NUMA nodes; ignored");
        return;
      }
    }
    b_.numa_distance() = std::move(m);
  }

  TopologyBuilder& b_;
  std::string origin_;
  std::vector<PendingLink> links_;
  std::map<std::string, int> switch_by_bus_;
  int zero_width_ = 0;
};

}  // namespace

Topology load_nccl_xml(const std::string& text, const std::string& origin) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(text.data(), text.size());
  if (!r) throw InvalidArgument(fmt::format("{}: malformed XML at byte {}: {}", origin, r.offset, r.description()));
  TopologyBuilder b(origin, SourceFormat::kNcclXml);
  NcclReader(b, origin).run(doc.document_element());
  return b.finish();
}

}  // namespace stepgraph::topology
