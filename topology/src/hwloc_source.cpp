// topology/src/hwloc_source.cpp — the model from an hwloc topology: the live
// machine or an hwloc XML 2.x file. One converter serves both, so a recorded
// file and the live machine read the same way.
//
// Note [hwloc I/O filters]: hwloc drops every PCI and OS device by default
// (HWLOC_TYPE_FILTER_KEEP_NONE for I/O, hwloc.h v2.x "Topology filters"),
// also when importing XML; the DGX-2 file then loses its NVLinkBandwidth
// matrix. We set KEEP_ALL on the I/O types before every load.
#include <hwloc.h>
#include <hwloc/distances.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <map>
#include <type_traits>
#include <unordered_map>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "builder.h"

namespace stepgraph::topology {
namespace {

/// An enum field of an hwloc object as the integer it holds. hwloc fills
/// these from XML without checking them against the enum (an XML file may
/// say upstream_type 2 where only 0 and 1 exist), and loading such a value
/// as the C++ enum type is undefined behaviour (found by fuzz_topo_hwloc);
/// compared as integers, an unknown value simply matches nothing.
template <class E>
int raw_enum(const E& field) {
  std::underlying_type_t<E> v{};
  std::memcpy(&v, &field, sizeof v);
  return static_cast<int>(v);
}

/// Owns an hwloc topology (move-only RAII, STYLE "Resources").
class HwlocTopology {
 public:
  HwlocTopology() {
    if (hwloc_topology_init(&t_) != 0) throw HwlocError("hwloc_topology_init failed: out of memory?");
    // Note [hwloc I/O filters].
    hwloc_topology_set_io_types_filter(t_, HWLOC_TYPE_FILTER_KEEP_ALL);
  }
  HwlocTopology(const HwlocTopology&) = delete;
  HwlocTopology& operator=(const HwlocTopology&) = delete;
  ~HwlocTopology() { hwloc_topology_destroy(t_); }
  [[nodiscard]] hwloc_topology_t get() const noexcept { return t_; }

 private:
  hwloc_topology_t t_ = nullptr;
};

CpuSet cpuset_of(hwloc_const_bitmap_t bm) {
  CpuSet s;
  if (bm == nullptr) return s;
  int i = -1;
  while ((i = hwloc_bitmap_next(bm, i)) != -1) s.pus.push_back(i);
  return s;
}

std::string info(hwloc_obj_t obj, const char* name) {
  const char* v = hwloc_obj_get_info_by_name(obj, name);
  return v != nullptr ? std::string(v) : std::string();
}

int info_int(hwloc_obj_t obj, const char* name) {
  const std::string v = info(obj, name);
  if (v.empty()) return -1;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    return -1;
  }
}

std::string bus_id_of(hwloc_obj_t obj) {
  const auto& p = obj->attr->pcidev;
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", p.domain, p.bus, p.dev, p.func);
}

bool is_pci_bridge(hwloc_obj_t obj) {
  return obj->type == HWLOC_OBJ_BRIDGE && raw_enum(obj->attr->bridge.upstream_type) == HWLOC_OBJ_BRIDGE_PCI;
}

enum class BridgeRole { kHost, kRootPort, kSwitchUp, kSwitchDown };

class Converter {
 public:
  Converter(TopologyBuilder& b, hwloc_topology_t topo) : b_(b), topo_(topo) {}

  void run() {
    read_cpu_side();
    walk(hwloc_get_root_obj(topo_), -1);
    read_numa_distances();
    read_nvlinks();
  }

 private:
  void read_cpu_side() {
    hwloc_obj_t root = hwloc_get_root_obj(topo_);
    b_.cpu().arch = info(root, "Architecture");
    b_.set_pu_count(hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_PU));
    b_.set_core_count(hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_CORE));

    const int npkg = hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_PACKAGE);
    for (int i = 0; i < npkg; ++i) {
      hwloc_obj_t obj = hwloc_get_obj_by_type(topo_, HWLOC_OBJ_PACKAGE, static_cast<unsigned>(i));
      Package p;
      p.index = i;
      p.os_index = obj->os_index == HWLOC_UNKNOWN_INDEX ? -1 : static_cast<int>(obj->os_index);
      p.cpu_vendor = info(obj, "CPUVendor");
      p.cpu_model = info(obj, "CPUModel");
      p.cpu_family = info_int(obj, "CPUFamilyNumber");
      p.cpu_model_id = info_int(obj, "CPUModelNumber");
      p.arch = b_.cpu().arch;
      p.cpus = cpuset_of(obj->cpuset);
      p.core_count = hwloc_get_nbobjs_inside_cpuset_by_type(topo_, obj->cpuset, HWLOC_OBJ_CORE);
      package_of_obj_[obj] = i;
      b_.packages().push_back(std::move(p));
    }
    if (!b_.packages().empty()) {
      const Package& p = b_.packages().front();
      b_.cpu().vendor = p.cpu_vendor;
      b_.cpu().model = p.cpu_model;
      b_.cpu().family = p.cpu_family;
      b_.cpu().model_id = p.cpu_model_id;
    }
    if (b_.cpu().vendor.empty()) b_.cpu().vendor = info(root, "CPUVendor");
    if (b_.cpu().model.empty()) b_.cpu().model = info(root, "CPUModel");

    const int nnuma = hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < nnuma; ++i) {
      hwloc_obj_t obj = hwloc_get_obj_by_type(topo_, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
      NumaNode n;
      n.index = i;
      n.os_index = static_cast<int>(obj->os_index);
      n.memory_bytes = obj->attr->numanode.local_memory;
      n.cpus = cpuset_of(obj->cpuset);
      if (obj->subtype != nullptr && std::strcmp(obj->subtype, "GPUMemory") == 0) {
        n.kind = NumaKind::kGpuMemory;
        n.cpus = CpuSet{};  // hwloc gives it its parent's cpuset; it has no PU of its own
        const std::string bus = info(obj, "PCIBusID");
        if (!bus.empty()) gpu_memory_bus_[canonical_bus_id(bus)] = i;
      }
      for (hwloc_obj_t a = obj->parent; a != nullptr; a = a->parent) {
        if (a->type == HWLOC_OBJ_PACKAGE) {
          n.package = package_of_obj_[a];
          b_.packages()[static_cast<std::size_t>(n.package)].numa_nodes.push_back(i);
          break;
        }
      }
      // libhwloc imports an XML with two NUMANode objects of one os_index;
      // the model (and its dump, NCCL's <cpu numaid>) names each once
      // (found by fuzz/fuzz_topo_hwloc).
      if (!numa_pos_by_os_.emplace(n.os_index, i).second)
        throw InvalidArgument(
            fmt::format("two NUMANode objects with os_index {}; each NUMA node appears once "
                        "in an hwloc export: re-export it with lstopo --of xml",
                        n.os_index));
      b_.numa().push_back(std::move(n));
    }
  }

  /// NUMA positions and PUs local to an I/O object: those of its first
  /// non-I/O ancestor (hwloc "I/O devices" locality).
  void locality(hwloc_obj_t obj, PciNode& node) {
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo_, obj);
    if (anc == nullptr) return;
    node.cpus = cpuset_of(anc->cpuset);
    if (anc->nodeset != nullptr) {
      int i = -1;
      while ((i = hwloc_bitmap_next(anc->nodeset, i)) != -1) {
        auto it = numa_pos_by_os_.find(i);
        if (it != numa_pos_by_os_.end() && b_.numa()[static_cast<std::size_t>(it->second)].kind == NumaKind::kCpu)
          node.numa_nodes.push_back(it->second);
      }
    }
  }

  static BridgeRole role_below_host(hwloc_obj_t bridge) {
    // A bridge right under a host bridge is a root port, unless hwloc shows
    // no root port and this is the upstream port of a switch: its child
    // bridges then carry the same vendor:device (switch ports do).
    for (hwloc_obj_t c = bridge->io_first_child; c != nullptr; c = c->next_sibling) {
      if (is_pci_bridge(c) && c->attr->pcidev.vendor_id == bridge->attr->pcidev.vendor_id &&
          c->attr->pcidev.device_id == bridge->attr->pcidev.device_id && bridge->attr->pcidev.vendor_id != 0)
        return BridgeRole::kSwitchUp;
    }
    return BridgeRole::kRootPort;
  }

  PciNode make_node(hwloc_obj_t obj, int parent, PciKind kind) {
    PciNode n;
    n.index = static_cast<int>(b_.pci().size());
    n.parent = parent;
    n.kind = kind;
    if (obj->type == HWLOC_OBJ_PCI_DEVICE || is_pci_bridge(obj)) {
      const auto& p = obj->attr->pcidev;
      n.bus_id = bus_id_of(obj);
      n.vendor_id = p.vendor_id;
      n.device_id = p.device_id;
      n.class_id = static_cast<std::uint32_t>(p.class_id) << 8;
      n.link_gbps = p.linkspeed > 0 ? pcie::from_hwloc_gbps(p.linkspeed) : 0.0;
    }
    if (obj->subtype != nullptr) n.subtype = obj->subtype;
    locality(obj, n);
    return n;
  }

  static bool has_osdev(hwloc_obj_t obj, hwloc_obj_osdev_type_t type) {
    for (hwloc_obj_t c = obj->io_first_child; c != nullptr; c = c->next_sibling)
      if (c->type == HWLOC_OBJ_OS_DEVICE && raw_enum(c->attr->osdev.type) == type) return true;
    return false;
  }

  void walk(hwloc_obj_t obj, int parent_node) {
    int here = parent_node;
    if (obj->type == HWLOC_OBJ_BRIDGE) {
      if (raw_enum(obj->attr->bridge.upstream_type) == HWLOC_OBJ_BRIDGE_HOST) {
        here = add(make_node(obj, -1, PciKind::kHostBridge));
        role_[obj] = BridgeRole::kHost;
      } else {
        const auto pit = obj->parent != nullptr ? role_.find(obj->parent) : role_.end();
        BridgeRole parent_role = pit == role_.end() ? BridgeRole::kHost : pit->second;
        BridgeRole r;
        switch (parent_role) {
          case BridgeRole::kHost:
            r = role_below_host(obj);
            break;
          case BridgeRole::kSwitchUp:
            r = BridgeRole::kSwitchDown;
            break;
          default:
            r = BridgeRole::kSwitchUp;
            break;
        }
        role_[obj] = r;
        if (r == BridgeRole::kSwitchDown && parent_node >= 0) {
          here = parent_node;  // a downstream port is part of its switch
        } else {
          PciNode n = make_node(obj, parent_node, PciKind::kBridge);
          // A root port's link status describes the link below it, which the
          // device (or switch) below reports too; above it is the host
          // fabric, not a PCIe link: no figure of its own.
          if (r == BridgeRole::kRootPort) n.link_gbps = 0;
          here = add(std::move(n));
        }
      }
    } else if (obj->type == HWLOC_OBJ_PCI_DEVICE) {
      here = add(make_node(obj, parent_node, PciKind::kOther));
      classify(obj, here);
    }
    for (hwloc_obj_t c = obj->first_child; c != nullptr; c = c->next_sibling) walk(c, here);
    for (hwloc_obj_t c = obj->io_first_child; c != nullptr; c = c->next_sibling) walk(c, here);
  }

  int add(PciNode n) {
    const int i = n.index;
    b_.pci().push_back(std::move(n));
    return i;
  }

  void classify(hwloc_obj_t obj, int node_index) {
    PciNode& n = b_.pci()[static_cast<std::size_t>(node_index)];
    const std::uint32_t cls16 = n.class_id >> 8;
    const bool nvidia_or_unknown = n.vendor_id == 0x10de || n.vendor_id == 0;
    node_of_obj_[obj] = node_index;
    // A GPU is any display-class device (0x03xx) of NVIDIA or no known
    // vendor: NCCL's rule (kvDictPciClass maps the prefix "0x03" to GPU),
    // which our NCCL reader follows, so that a dump reads back with the same
    // GPUs (a V100 whose class read 0x0304 was lost in the model but read
    // back as a GPU: fuzz/fuzz_topo_hwloc, docs/reliability.md).
    if ((cls16 >> 8) == 0x03 && nvidia_or_unknown) {
      n.kind = PciKind::kGpu;
      Gpu g;
      g.index = static_cast<int>(b_.gpus().size());
      g.pci = node_index;
      g.bus_id = n.bus_id;
      g.model = info(obj, "PCIDevice");
      for (hwloc_obj_t c = obj->io_first_child; c != nullptr; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE || c->name == nullptr) continue;
        const std::string name = c->name;
        const std::string model = info(c, "GPUModel");
        if (!model.empty()) g.model = model;
        if (name.rfind("cuda", 0) == 0) {
          try {
            g.cuda_device = std::stoi(name.substr(4));
          } catch (const std::exception&) {
          }
        }
        osdev_gpu_[c] = g.index;
      }
      auto mem = gpu_memory_bus_.find(n.bus_id);
      if (mem != gpu_memory_bus_.end()) g.memory_numa_node = mem->second;
      gpu_of_obj_[obj] = g.index;
      b_.gpus().push_back(std::move(g));
    } else if ((n.subtype == "NVSwitch") || (cls16 == 0x0680 && n.vendor_id == 0x10de)) {
      n.kind = PciKind::kNvSwitch;
      NvSwitch s;
      s.index = static_cast<int>(b_.nvswitches().size());
      s.pci = node_index;
      s.bus_id = n.bus_id;
      switch_of_obj_[obj] = s.index;
      b_.nvswitches().push_back(std::move(s));
    } else if ((cls16 >> 8) == 0x02 || cls16 == 0x0c06 || has_osdev(obj, HWLOC_OBJ_OSDEV_OPENFABRICS) ||
               has_osdev(obj, HWLOC_OBJ_OSDEV_NETWORK)) {
      n.kind = PciKind::kNic;
      Nic nic;
      nic.index = static_cast<int>(b_.nics().size());
      nic.pci = node_index;
      nic.bus_id = n.bus_id;
      std::string net_name;
      for (hwloc_obj_t c = obj->io_first_child; c != nullptr; c = c->next_sibling) {
        if (c->type != HWLOC_OBJ_OS_DEVICE || c->name == nullptr) continue;
        if (raw_enum(c->attr->osdev.type) == HWLOC_OBJ_OSDEV_OPENFABRICS && nic.name.empty()) nic.name = c->name;
        if (raw_enum(c->attr->osdev.type) == HWLOC_OBJ_OSDEV_NETWORK && net_name.empty()) net_name = c->name;
      }
      if (nic.name.empty()) nic.name = net_name;
      b_.nics().push_back(std::move(nic));
    }
  }

  void read_numa_distances() {
    unsigned nr = 1;
    hwloc_distances_s* d = nullptr;
    if (hwloc_distances_get_by_name(topo_, "NUMALatency", &nr, &d, 0) != 0 || nr == 0) {
      nr = 1;
      if (hwloc_distances_get_by_type(topo_, HWLOC_OBJ_NUMANODE, &nr, &d, HWLOC_DISTANCES_KIND_MEANS_LATENCY, 0) != 0 ||
          nr == 0)
        return;
    }
    const std::size_t n = b_.numa().size();
    std::vector<double> m(n * n, 0.0);
    std::vector<bool> seen(n, false);
    for (unsigned i = 0; i < d->nbobjs; ++i) {
      if (d->objs[i] == nullptr || d->objs[i]->type != HWLOC_OBJ_NUMANODE) continue;
      const auto pi = numa_pos_by_os_.find(static_cast<int>(d->objs[i]->os_index));
      if (pi == numa_pos_by_os_.end()) continue;
      seen[static_cast<std::size_t>(pi->second)] = true;
      for (unsigned j = 0; j < d->nbobjs; ++j) {
        if (d->objs[j] == nullptr || d->objs[j]->type != HWLOC_OBJ_NUMANODE) continue;
        const auto pj = numa_pos_by_os_.find(static_cast<int>(d->objs[j]->os_index));
        if (pj == numa_pos_by_os_.end()) continue;
        m[static_cast<std::size_t>(pi->second) * n + static_cast<std::size_t>(pj->second)] =
            static_cast<double>(d->values[i * d->nbobjs + j]);
      }
    }
    hwloc_distances_release(topo_, d);
    if (std::all_of(seen.begin(), seen.end(), [](bool s) { return s; })) {
      b_.numa_distance() = std::move(m);
    } else {
      b_.note("the NUMALatency matrix does not cover every NUMA node; using 10 local / 20 remote");
    }
  }

  /// Maps an object of the NVLinkBandwidth matrix to a link end.
  std::optional<LinkPeer> peer_of(hwloc_obj_t obj) {
    if (obj == nullptr) return std::nullopt;
    if (auto it = osdev_gpu_.find(obj); it != osdev_gpu_.end()) return LinkPeer{LinkPeerKind::kGpu, it->second};
    if (auto it = gpu_of_obj_.find(obj); it != gpu_of_obj_.end()) return LinkPeer{LinkPeerKind::kGpu, it->second};
    if (auto it = switch_of_obj_.find(obj); it != switch_of_obj_.end())
      return LinkPeer{LinkPeerKind::kNvSwitch, it->second};
    if (auto it = package_of_obj_.find(obj); it != package_of_obj_.end())
      return LinkPeer{LinkPeerKind::kCpu, it->second};
    if (obj->type == HWLOC_OBJ_PCI_DEVICE) {
      // A non-GPU PCI device in the NVLink matrix is an NVSwitch (NVML lists
      // nothing else there), even with zeroed IDs (nvidiaDGX2.xml 66:00.0).
      auto nit = node_of_obj_.find(obj);
      if (nit != node_of_obj_.end()) {
        PciNode& n = b_.pci()[static_cast<std::size_t>(nit->second)];
        n.kind = PciKind::kNvSwitch;
        NvSwitch s{static_cast<int>(b_.nvswitches().size()), nit->second, n.bus_id};
        switch_of_obj_[obj] = s.index;
        b_.nvswitches().push_back(s);
        return LinkPeer{LinkPeerKind::kNvSwitch, s.index};
      }
    }
    return std::nullopt;
  }

  void read_nvlinks() {
    unsigned nr = 1;
    hwloc_distances_s* d = nullptr;
    if (hwloc_distances_get_by_name(topo_, "NVLinkBandwidth", &nr, &d, 0) != 0 || nr == 0) return;
    const unsigned n = d->nbobjs;
    std::vector<std::optional<LinkPeer>> peers(n);
    for (unsigned i = 0; i < n; ++i) peers[i] = peer_of(d->objs[i]);
    for (unsigned i = 0; i < n; ++i) {
      for (unsigned j = i + 1; j < n; ++j) {
        const double mbps = static_cast<double>(std::max(d->values[i * n + j], d->values[j * n + i]));
        if (mbps <= 0 || !peers[i] || !peers[j]) continue;
        LinkPeer a = *peers[i];
        LinkPeer c = *peers[j];
        if (a.kind != LinkPeerKind::kGpu) std::swap(a, c);
        if (a.kind != LinkPeerKind::kGpu) continue;  // switch-switch / switch-CPU: the hub model covers it
        if (c == a) {
          b_.note(fmt::format("NVLinkBandwidth links GPU{} to itself; ignored", a.index));
          continue;
        }
        const Gpu& g = b_.gpus()[static_cast<std::size_t>(a.index)];
        int sm = g.sm != 0 ? g.sm : sm_from_model(g.model, b_.pci()[static_cast<std::size_t>(g.pci)].device_id);
        const double per_link = hwloc_nvlink_mbps_per_link(sm);
        int count = static_cast<int>(std::lround(mbps / per_link));
        if (count == 0) {
          b_.note(fmt::format("NVLinkBandwidth {} MB/s for GPU{} is below one link ({} MB/s); counted as 1", mbps,
                              a.index, per_link));
          count = 1;
        }
        b_.add_nvlink(a.index, c, count);
      }
    }
    hwloc_distances_release(topo_, d);
  }

  TopologyBuilder& b_;
  hwloc_topology_t topo_;
  std::unordered_map<hwloc_obj_t, BridgeRole> role_;
  std::unordered_map<hwloc_obj_t, int> package_of_obj_;
  std::unordered_map<hwloc_obj_t, int> node_of_obj_;
  std::unordered_map<hwloc_obj_t, int> gpu_of_obj_;
  std::unordered_map<hwloc_obj_t, int> osdev_gpu_;
  std::unordered_map<hwloc_obj_t, int> switch_of_obj_;
  std::map<int, int> numa_pos_by_os_;
  std::map<std::string, int> gpu_memory_bus_;
};

}  // namespace

Topology load_hwloc_xml(const std::string& text, const std::string& origin) {
  HwlocTopology topo;
  // hwloc wants the terminating NUL counted in the size (hwloc.h, set_xmlbuffer).
  if (hwloc_topology_set_xmlbuffer(topo.get(), text.c_str(), static_cast<int>(text.size() + 1)) != 0)
    throw InvalidArgument(
        fmt::format("{}: hwloc cannot read this XML ({}); check it is an hwloc 2.x export "
                    "(lstopo --of xml)",
                    origin, std::strerror(errno)));
  if (hwloc_topology_load(topo.get()) != 0)
    throw InvalidArgument(
        fmt::format("{}: hwloc could not import this XML ({}); check it is a complete hwloc 2.x "
                    "export (lstopo --of xml)",
                    origin, std::strerror(errno)));
  TopologyBuilder b(origin, SourceFormat::kHwlocXml);
  Converter(b, topo.get()).run();
  return b.finish();
}

Topology discover_live_hwloc() {
  HwlocTopology topo;
  if (hwloc_topology_load(topo.get()) != 0)
    throw HwlocError(
        fmt::format("hwloc could not discover this machine ({}); set STEPGRAPH_TOPO_FILE to a "
                    "recorded topology to plan without it",
                    std::strerror(errno)));
  TopologyBuilder b("live", SourceFormat::kLive);
  Converter(b, topo.get()).run();
  enrich_with_cuda(b);
  return b.finish();
}

}  // namespace stepgraph::topology
