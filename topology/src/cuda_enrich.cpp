// topology/src/cuda_enrich.cpp — what the Debian hwloc cannot see (it ships
// no CUDA or NVML plugin): CUDA devices matched by PCI bus id, or created
// from cudaDeviceGetPCIBusId where hwloc shows no PCI device at all (VMs and
// sandboxes hide PCI); NVLink peers and counts from NVML, loaded with dlopen
// so that a machine without the driver's NVML still works.
#include <dlfcn.h>

#include <cstring>
#include <fstream>
#include <map>

#include <stepgraph/core/log.h>

#include "builder.h"

#if defined(STEPGRAPH_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace stepgraph::topology {
namespace {

#if defined(STEPGRAPH_WITH_CUDA)
/// sysfs locality of a PCI device (Linux): NUMA node and local CPUs.
void sysfs_locality(const std::string& bus_id, int& numa_os, CpuSet& cpus) {
  const std::string dir = "/sys/bus/pci/devices/" + bus_id + "/";
  std::ifstream numa(dir + "numa_node");
  if (numa) numa >> numa_os;
  std::ifstream mask(dir + "local_cpus");
  std::string text;
  if (mask && std::getline(mask, text)) {
    if (auto set = parse_cpumask(text)) cpus = std::move(*set);
  }
}

void enrich_cuda(TopologyBuilder& b) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();  // clear the sticky-free error so later CUDA calls start clean
    return;
  }
  for (int dev = 0; dev < count; ++dev) {
    char buf[64] = {};
    if (cudaDeviceGetPCIBusId(buf, sizeof buf, dev) != cudaSuccess) continue;
    const std::string bus = canonical_bus_id(buf);
    cudaDeviceProp prop{};
    const bool have_prop = cudaGetDeviceProperties(&prop, dev) == cudaSuccess;
    int gi = -1;
    for (auto& g : b.gpus())
      if (g.bus_id == bus) gi = g.index;
    if (gi < 0) {
      // hwloc shows no such PCI device: create it, with a host bridge of its own.
      PciNode host;
      host.index = static_cast<int>(b.pci().size());
      host.kind = PciKind::kHostBridge;
      int numa_os = -1;
      sysfs_locality(bus, numa_os, host.cpus);
      for (const auto& n : b.numa())
        if (n.os_index == numa_os) host.numa_nodes = {n.index};
      if (host.numa_nodes.empty() && b.numa().size() == 1) host.numa_nodes = {0};
      const int host_index = host.index;
      b.pci().push_back(host);
      PciNode n;
      n.index = static_cast<int>(b.pci().size());
      n.parent = host_index;
      n.kind = PciKind::kGpu;
      n.bus_id = bus;
      n.vendor_id = 0x10de;
      n.class_id = 0x030200;
      n.numa_nodes = host.numa_nodes;
      n.cpus = host.cpus;
      b.pci().push_back(n);
      Gpu g;
      g.index = static_cast<int>(b.gpus().size());
      g.pci = n.index;
      g.bus_id = bus;
      gi = g.index;
      b.gpus().push_back(g);
      STEPGRAPH_INFO(kTopology, "CUDA device {} ({}) is not in hwloc's PCI tree; added from cudaDeviceGetPCIBusId", dev,
                     bus);
    }
    Gpu& g = b.gpus()[static_cast<std::size_t>(gi)];
    g.cuda_device = dev;
    if (have_prop) {
      g.model = prop.name;
      g.sm = prop.major * 10 + prop.minor;
    }
  }
}
#endif

// ---- NVML through dlopen: only the few entry points we need, declared
// here (nvml.h is not required at build time). nvmlPciInfo_t as the _v2
// entry points fill it (nvml.h: busIdLegacy[16], domain, bus, device,
// pciDeviceId, pciSubSystemId, busId[32]).
using NvmlReturn = int;
using NvmlDevice = void*;
struct NvmlPciInfo {
  char bus_id_legacy[16];
  unsigned int domain;
  unsigned int bus;
  unsigned int device;
  unsigned int pci_device_id;
  unsigned int pci_subsystem_id;
  char bus_id[32];
};
constexpr int kNvmlMaxLinks = 18;  // NVML_NVLINK_MAX_LINKS (Hopper)
// nvmlIntNvLinkDeviceType_t: what is at the far end of a link.
constexpr int kNvmlRemoteGpu = 0x00;
constexpr int kNvmlRemoteIbmNpu = 0x01;  // a POWER CPU
constexpr int kNvmlRemoteUnknown = -1;   // the query is absent from this driver

struct RemoteEnd {
  std::string bus_id;
  int type = kNvmlRemoteUnknown;
};

/// Owns the dlopen handle and the NVML session (RAII; not copyable).
class Nvml {
 public:
  Nvml() {
    handle_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) return;
    init_ = sym<NvmlReturn (*)()>("nvmlInit_v2");
    shutdown_ = sym<NvmlReturn (*)()>("nvmlShutdown");
    by_bus_ = sym<NvmlReturn (*)(const char*, NvmlDevice*)>("nvmlDeviceGetHandleByPciBusId_v2");
    link_state_ = sym<NvmlReturn (*)(NvmlDevice, unsigned, int*)>("nvmlDeviceGetNvLinkState");
    remote_pci_ = sym<NvmlReturn (*)(NvmlDevice, unsigned, NvmlPciInfo*)>("nvmlDeviceGetNvLinkRemotePciInfo_v2");
    remote_type_ = sym<NvmlReturn (*)(NvmlDevice, unsigned, int*)>("nvmlDeviceGetNvLinkRemoteDeviceType");  // optional
    if (init_ == nullptr || by_bus_ == nullptr || link_state_ == nullptr || remote_pci_ == nullptr) return;
    ok_ = init_() == 0;
  }
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;
  ~Nvml() {
    if (ok_ && shutdown_ != nullptr) shutdown_();
    if (handle_ != nullptr) dlclose(handle_);
  }
  [[nodiscard]] bool ok() const noexcept { return ok_; }

  /// The far ends of the active NVLinks of the GPU at `bus`, one per link.
  std::vector<RemoteEnd> links(const std::string& bus) const {
    std::vector<RemoteEnd> out;
    NvmlDevice dev = nullptr;
    if (by_bus_(bus.c_str(), &dev) != 0) return out;
    for (unsigned l = 0; l < kNvmlMaxLinks; ++l) {
      int active = 0;
      if (link_state_(dev, l, &active) != 0 || active == 0) continue;
      NvmlPciInfo info{};
      if (remote_pci_(dev, l, &info) != 0) continue;
      info.bus_id[sizeof info.bus_id - 1] = '\0';
      RemoteEnd end{canonical_bus_id(info.bus_id), kNvmlRemoteUnknown};
      int type = 0;
      if (remote_type_ != nullptr && remote_type_(dev, l, &type) == 0) end.type = type;
      out.push_back(std::move(end));
    }
    return out;
  }

 private:
  template <class F>
  F sym(const char* name) {
    return reinterpret_cast<F>(dlsym(handle_, name));
  }
  void* handle_ = nullptr;
  bool ok_ = false;
  NvmlReturn (*init_)() = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  NvmlReturn (*by_bus_)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*link_state_)(NvmlDevice, unsigned, int*) = nullptr;
  NvmlReturn (*remote_pci_)(NvmlDevice, unsigned, NvmlPciInfo*) = nullptr;
  NvmlReturn (*remote_type_)(NvmlDevice, unsigned, int*) = nullptr;
};

void enrich_nvml(TopologyBuilder& b) {
  if (b.gpus().empty() || !b.nvlinks().empty()) return;  // nothing to ask, or hwloc's NVML plugin answered
  Nvml nvml;
  if (!nvml.ok()) {
    STEPGRAPH_DEBUG(kTopology, "NVML not available (libnvidia-ml.so.1); no NVLink information");
    return;
  }
  std::map<std::string, int> switch_by_bus;
  for (std::size_t gi = 0; gi < b.gpus().size(); ++gi) {
    const std::string bus = b.gpus()[gi].bus_id;
    if (bus.empty()) continue;
    std::map<std::string, int> per_peer;
    std::map<std::string, int> type_of;
    for (const auto& end : nvml.links(bus)) {
      per_peer[end.bus_id]++;
      type_of[end.bus_id] = end.type;
    }
    for (const auto& [remote, count] : per_peer) {
      int peer_gpu = -1;
      for (const auto& g : b.gpus())
        if (g.bus_id == remote) peer_gpu = g.index;
      if (type_of[remote] == kNvmlRemoteIbmNpu) {
        // NVLink to a POWER CPU: the package of the GPU's NUMA node.
        const Gpu& g = b.gpus()[gi];
        int package = -1;
        if (g.pci >= 0) {
          const auto& numa = b.pci()[static_cast<std::size_t>(g.pci)].numa_nodes;
          if (numa.size() == 1) package = b.numa()[static_cast<std::size_t>(numa.front())].package;
        }
        if (package >= 0)
          b.add_nvlink(static_cast<int>(gi), LinkPeer{LinkPeerKind::kCpu, package}, count);
        else
          b.note(fmt::format("GPU{}: {} NVLink(s) to a CPU whose package is unknown; ignored", gi, count));
        continue;
      }
      if (type_of[remote] == kNvmlRemoteGpu && peer_gpu < 0) {
        b.note(fmt::format("GPU{}: NVML reports an NVLink to GPU {} which is not in the model; ignored", gi, remote));
        continue;
      }
      if (peer_gpu == static_cast<int>(gi)) {
        b.note(fmt::format("NVML reports GPU{} NVLinked to itself; ignored", gi));
      } else if (peer_gpu >= 0) {
        b.add_nvlink(static_cast<int>(gi), LinkPeer{LinkPeerKind::kGpu, peer_gpu}, count);
      } else {
        // Not a GPU: an NVSwitch (NVML_NVLINK_DEVICE_TYPE_SWITCH, or an older
        // driver without the remote-type query).
        auto it = switch_by_bus.find(remote);
        if (it == switch_by_bus.end()) {
          NvSwitch s{static_cast<int>(b.nvswitches().size()), -1, remote};
          for (const auto& n : b.pci())
            if (n.bus_id == remote) s.pci = n.index;
          b.nvswitches().push_back(s);
          it = switch_by_bus.emplace(remote, s.index).first;
        }
        b.add_nvlink(static_cast<int>(gi), LinkPeer{LinkPeerKind::kNvSwitch, it->second}, count);
      }
    }
  }
}

}  // namespace

void enrich_with_cuda(TopologyBuilder& b) {
#if defined(STEPGRAPH_WITH_CUDA)
  enrich_cuda(b);
#endif
  enrich_nvml(b);
}

}  // namespace stepgraph::topology
