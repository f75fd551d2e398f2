// topology/src/topology.cpp — what every source shares: the link constants,
// format detection, the finishing pass of the builder, and the model's
// JSON and NCCL-XML writers.
#include <stepgraph/topology/topology.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>
#include <pugixml.hpp>

#include <stepgraph/core/env.h>
#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "builder.h"

namespace stepgraph::topology {

namespace {
const env::Param<std::string> kTopoFile{
    "STEPGRAPH_TOPO_FILE", "",
    "plan, print and simulate on this recorded topology (hwloc XML 2.x or NCCL topology XML) instead of the "
    "live machine; binding and NUMA allocation still use the live machine"};

// NCCL v2.30 src/graph/topo.h, per NVLink (GB/s, one direction).
constexpr double kSm60NvlinkBw = 18.0;
constexpr double kSm70NvlinkBw = 20.0;
constexpr double kSm80NvlinkBw = 20.0;
constexpr double kSm86NvlinkBw = 12.0;
constexpr double kSm90NvlinkBw = 20.6;
constexpr double kSm100NvlinkBw = 40.1;
// NCCL's reference PCIe figure for an unknown link: Gen3 x16.
constexpr double kDefaultPcieGbps = 12.0;
// hwloc's pci_link_speed for Gen3 x16 (128b/130b): 16 × 8 GT/s × 128/130 / 8.
constexpr double kHwlocGen3x16 = 15.753846;
}  // namespace

// ---------------------------------------------------------------------------
// Constants and small parsers (builder.h)

double pcie::nccl_link_gbps(double gts, int width) {
  // NCCL topo.cc kvDictPciGen: 2.5 GT/s -> 15, 5 -> 30, 8 -> 60, 16 -> 120,
  // 32 -> 240, 64 -> 480; unknown -> 60. bw = width * code / 80.
  double code = 60;
  if (gts > 0) {
    if (gts < 3.5)
      code = 15;
    else if (gts < 6.5)
      code = 30;
    else if (gts < 12)
      code = 60;
    else if (gts < 24)
      code = 120;
    else if (gts < 48)
      code = 240;
    else
      code = 480;
  }
  const int w = width > 0 ? width : 16;
  return w * code / 80.0;
}

double pcie::from_hwloc_gbps(double hwloc_gbps) {
  return hwloc_gbps * kDefaultPcieGbps / kHwlocGen3x16;
}

double nvlink_gbps_per_link(int sm) {
  // NCCL topo.h ncclTopoNVLinkBw.
  if (sm >= 100) return kSm100NvlinkBw;
  if (sm >= 90) return kSm90NvlinkBw;
  if (sm == 86) return kSm86NvlinkBw;
  if (sm >= 80) return kSm80NvlinkBw;
  if (sm >= 70) return kSm70NvlinkBw;
  if (sm >= 60) return kSm60NvlinkBw;
  return kSm70NvlinkBw;  // unknown: the most common generation in the recorded files
}

double hwloc_nvlink_mbps_per_link(int sm) {
  // hwloc v2.x hwloc/topology-nvml.c: NVLink 1 (P100) 20000 MB/s, 2.x-4.0 25000, 5.0 (B100) 50000.
  if (sm >= 100) return 50000.0;
  if (sm >= 70 || sm == 0) return 25000.0;
  return 20000.0;
}

int sm_from_model(std::string_view model, std::uint16_t device_id) {
  std::string m(model);
  for (auto& c : m) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  auto has = [&](const char* s) { return m.find(s) != std::string::npos; };
  if (has("B200") || has("B100") || has("GB200")) return 100;
  if (has("H100") || has("H200") || has("H800") || has("H20") || has("GH200")) return 90;
  if (has("A100") || has("A800") || has("A30")) return 80;
  if (has("A10") || has("A40") || has("RTX 30") || has("A16") || has("A2 ")) return 86;
  if (has("V100") || has("TITAN V")) return 70;
  if (has("P100")) return 60;
  if (has("K40") || has("K80") || has("M2070") || has("M2075") || has("M2090")) return 35;
  // PCI device ids of the datacenter parts seen in the recorded files.
  switch (device_id) {
    case 0x15f7:
    case 0x15f8:
    case 0x15f9:
      return 60;  // P100
    case 0x1db1:
    case 0x1db4:
    case 0x1db5:
    case 0x1db6:
    case 0x1db8:
    case 0x1df6:
      return 70;  // V100
    case 0x20b0:
    case 0x20b1:
    case 0x20b2:
    case 0x20b3:
    case 0x20b5:
    case 0x20f1:
      return 80;  // A100
    case 0x2236:
    case 0x2237:
      return 86;  // A10 / A10G
    case 0x2321:
    case 0x2322:
    case 0x2324:
    case 0x2330:
    case 0x2331:
    case 0x2335:
      return 90;  // H100/H200
    default:
      return 0;
  }
}

std::string canonical_bus_id(std::string_view text) {
  std::string s;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c)))
      s += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // [domain:]bus:dev.fn, hex; reformatted as dddd:bb:dd.f (NVML writes 8-digit domains).
  unsigned long domain = 0;
  unsigned long bus = 0;
  unsigned long dev = 0;
  unsigned long fn = 0;
  const auto colons = std::count(s.begin(), s.end(), ':');
  try {
    std::size_t pos = 0;
    if (colons == 2) {
      const auto c = s.find(':');
      domain = std::stoul(s.substr(0, c), nullptr, 16);
      pos = c + 1;
    } else if (colons != 1) {
      return s;
    }
    const auto c2 = s.find(':', pos);
    bus = std::stoul(s.substr(pos, c2 - pos), nullptr, 16);
    const auto dot = s.find('.', c2);
    dev = std::stoul(s.substr(c2 + 1, dot == std::string::npos ? std::string::npos : dot - c2 - 1), nullptr, 16);
    if (dot != std::string::npos) fn = std::stoul(s.substr(dot + 1), nullptr, 16);
  } catch (const std::exception&) {
    return s;  // not a bus id: kept as written, so it matches only itself
  }
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, dev, fn);
}

std::optional<CpuSet> parse_cpumask(std::string_view text) {
  // Linux cpumask: 32-bit hex words, most significant first, comma-separated.
  std::vector<std::string> words;
  std::string cur;
  for (char c : text) {
    if (c == ',') {
      words.push_back(cur);
      cur.clear();
    } else if (!std::isspace(static_cast<unsigned char>(c))) {
      cur += c;
    }
  }
  words.push_back(cur);
  CpuSet set;
  int base = 0;
  for (auto it = words.rbegin(); it != words.rend(); ++it, base += 32) {
    std::string w = *it;
    if (w.rfind("0x", 0) == 0 || w.rfind("0X", 0) == 0) w = w.substr(2);
    if (w.empty()) continue;
    if (w.size() > 8 ||
        !std::all_of(w.begin(), w.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); }))
      return std::nullopt;
    const unsigned long v = std::stoul(w, nullptr, 16);
    for (int bit = 0; bit < 32; ++bit)
      if ((v >> bit) & 1UL) set.pus.push_back(base + bit);
  }
  std::sort(set.pus.begin(), set.pus.end());
  return set;
}

std::string format_cpumask(const CpuSet& cpus) {
  if (cpus.empty()) return "00000000";
  const int words = cpus.pus.back() / 32 + 1;
  std::vector<unsigned long> w(static_cast<std::size_t>(words), 0);
  for (int pu : cpus.pus) w[static_cast<std::size_t>(pu / 32)] |= 1UL << (pu % 32);
  std::string out;
  for (int i = words - 1; i >= 0; --i) {
    if (!out.empty()) out += ',';
    out += fmt::format("{:08x}", w[static_cast<std::size_t>(i)]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// TopologyBuilder

void TopologyBuilder::note(std::string text, NoteLevel level) {
  if (level == NoteLevel::kWarn)
    STEPGRAPH_WARN(kTopology, "{}: {}", t_.source_, text);
  else
    STEPGRAPH_DEBUG(kTopology, "{}: {}", t_.source_, text);
  t_.notes_.push_back(std::move(text));
}

void TopologyBuilder::add_nvlink(int gpu, LinkPeer peer, int count) {
  for (auto& l : t_.nvlinks_) {
    const bool same = (l.gpu == gpu && l.peer == peer) || (peer.kind == LinkPeerKind::kGpu && l.gpu == peer.index &&
                                                           l.peer.kind == LinkPeerKind::kGpu && l.peer.index == gpu);
    if (same) {
      // A GPU pair appears from both sides in NCCL XML: the same bundle.
      // Several entries for one GPU and one switch are separate links: add.
      l.count = peer.kind == LinkPeerKind::kGpu ? std::max(l.count, count) : l.count + count;
      return;
    }
  }
  t_.nvlinks_.push_back(NvLink{gpu, peer, count});
}

namespace {
CpuSet unite(const CpuSet& a, const CpuSet& b) {
  CpuSet out;
  std::set_union(a.pus.begin(), a.pus.end(), b.pus.begin(), b.pus.end(), std::back_inserter(out.pus));
  return out;
}
}  // namespace

Topology TopologyBuilder::finish() {
  auto& pci = t_.pci_;
  // Two GPUs with one PCI bus id: NVLinks name their peer by bus id (NCCL's
  // <nvlink target>), so no reader can tell which of the two a link reaches,
  // and the dump read back with other links (fuzz/fuzz_topo_nccl,
  // docs/reliability.md).
  for (std::size_t i = 0; i < t_.gpus_.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (!t_.gpus_[i].bus_id.empty() && t_.gpus_[i].bus_id == t_.gpus_[j].bus_id)
        throw InvalidArgument(
            fmt::format("GPU{} and GPU{} have the same PCI bus id {}; each device appears once in "
                        "a topology: re-export the file (nvidia-smi, NCCL_TOPO_DUMP_FILE, lstopo)",
                        j, i, t_.gpus_[i].bus_id));
  // Locality: a node without its own inherits its parent's (parents come first).
  for (auto& n : pci) {
    if (n.parent >= 0) {
      const PciNode& p = pci[static_cast<std::size_t>(n.parent)];
      if (n.numa_nodes.empty()) n.numa_nodes = p.numa_nodes;
      if (n.cpus.empty()) n.cpus = p.cpus;
    }
  }
  // Link sanity (docs/topology.md "Clamps"): a device with no link figure
  // gets NCCL's default (Gen3 x16); a bridge with none, or one narrower than
  // a device below it, takes the widest link below it: a switch never
  // carries less than one of its own ports (VMs report x1 2.5 GT/s virtual
  // switches above x16 GPUs).
  std::vector<double> widest_below(pci.size(), 0.0);
  int unknown_link_devices = 0;
  for (std::size_t i = pci.size(); i-- > 0;) {
    auto& n = pci[i];
    if (n.kind == PciKind::kHostBridge) continue;
    if (n.kind != PciKind::kBridge && n.link_gbps <= 0) {
      if (n.kind == PciKind::kGpu || n.kind == PciKind::kNic || n.kind == PciKind::kNvSwitch) ++unknown_link_devices;
      n.link_gbps = kDefaultPcieGbps;
    }
    if (n.kind == PciKind::kBridge) {
      const double below = widest_below[i];
      if (n.link_gbps <= 0) {
        n.link_gbps = below > 0 ? below : kDefaultPcieGbps;
      } else if (below > 0 && n.link_gbps < below) {
        const std::string rate = n.link_speed_gts > 0 || n.link_width > 0
                                     ? fmt::format(" ({:g} GT/s x{})", n.link_speed_gts, n.link_width)
                                     : std::string();
        note(
            fmt::format("PCI switch {} reports {:.2f} GB/s{} above a {:.2f} GB/s device: a switch never carries "
                        "less than one of its ports (a virtual switch of a VM); using {:.2f} GB/s",
                        n.bus_id.empty() ? std::string("?") : n.bus_id, n.link_gbps, rate, below, below));
        n.link_gbps = below;
      }
    }
    if (n.parent >= 0) {
      auto& w = widest_below[static_cast<std::size_t>(n.parent)];
      w = std::max(w, n.link_gbps);
    }
  }
  if (unknown_link_devices > 0)
    note(fmt::format("{} GPU/NIC/NVSwitch PCI link(s) without speed or width; assuming PCIe Gen3 x16 "
                     "({} GB/s, NCCL's default)",
                     unknown_link_devices, kDefaultPcieGbps),
         t_.format_ == SourceFormat::kLive ? NoteLevel::kDebug : NoteLevel::kWarn);

  auto nearest = [&](int pci_index, int& numa, CpuSet& cpus) {
    if (pci_index >= 0) {
      const PciNode& n = pci[static_cast<std::size_t>(pci_index)];
      if (n.numa_nodes.size() == 1) numa = n.numa_nodes.front();
      if (cpus.empty()) cpus = n.cpus;
    }
    // A socket-attached device (NCCL <cpu><nic>) takes its NUMA node's PUs.
    if (cpus.empty() && numa >= 0 && static_cast<std::size_t>(numa) < t_.numa_.size())
      cpus = t_.numa_[static_cast<std::size_t>(numa)].cpus;
  };
  for (auto& g : t_.gpus_) {
    g.name = fmt::format("GPU{}", g.index);
    nearest(g.pci, g.numa_node, g.cpus);
    if (g.sm == 0) g.sm = sm_from_model(g.model, g.pci >= 0 ? pci[static_cast<std::size_t>(g.pci)].device_id : 0);
  }
  for (auto& n : t_.nics_) {
    if (n.name.empty()) n.name = fmt::format("NIC{}", n.index);
    nearest(n.pci, n.numa_node, n.cpus);
  }
  if (t_.pu_count_ == 0) {
    CpuSet all;
    for (const auto& n : t_.numa_) all = unite(all, n.cpus);
    t_.pu_count_ = static_cast<int>(all.size());
  }
  if (!t_.numa_distance_.empty() && t_.numa_distance_.size() != t_.numa_.size() * t_.numa_.size()) {
    note("the NUMA distance matrix does not match the NUMA nodes; using 10 local / 20 remote");
    t_.numa_distance_.clear();
  }
  if (t_.numa_.empty()) note("no NUMA node in the source; the cost matrix will be empty");
  if (t_.gpus_.empty() && t_.format_ != SourceFormat::kLive)
    note("no GPU in this file: the cost matrix covers NICs and NUMA nodes only");
  return std::move(t_);
}

// ---------------------------------------------------------------------------
// Topology

namespace {
std::string read_file(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::exists(file, ec))
    throw InvalidArgument(
        fmt::format("topology file {} does not exist; give an hwloc XML (lstopo --of xml) or "
                    "NCCL topology XML (NCCL_TOPO_DUMP_FILE) file",
                    file.string()));
  if (std::filesystem::is_directory(file, ec))
    throw InvalidArgument(fmt::format("topology file {} is a directory; give the XML file inside it", file.string()));
  if (!std::filesystem::is_regular_file(file, ec))
    throw InvalidArgument(
        fmt::format("topology file {} is not a regular file (a device or a pipe?); give an XML file", file.string()));
  // The largest real topology files are a few MB (hwloc XML of big NUMA machines).
  constexpr std::uintmax_t kMaxBytes = 256u << 20;
  if (std::filesystem::file_size(file, ec) > kMaxBytes)
    throw InvalidArgument(fmt::format("topology file {} is larger than 256 MiB; not a topology", file.string()));
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InvalidArgument(fmt::format("cannot open topology file {}; check its permissions", file.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

Topology Topology::load(const std::filesystem::path& file) {
  return parse(read_file(file), file.string());
}

namespace {
// libhwloc 2.9's XML import dereferences a null complete set when an object
// has a cpuset without a complete_cpuset (or a nodeset without a
// complete_nodeset): refuse such a file before hwloc sees it. hwloc's own
// export always writes both (found by fuzz/fuzz_topo_hwloc).
void check_hwloc_sets(pugi::xml_node root, const std::string& origin) {
  struct Walker : pugi::xml_tree_walker {
    pugi::xml_node bad;
    const char* missing = nullptr;
    bool for_each(pugi::xml_node& n) override {
      if (std::string_view(n.name()) != "object") return true;
      for (const auto& [set, complete] : {std::pair{"cpuset", "complete_cpuset"}, {"nodeset", "complete_nodeset"}})
        if (!n.attribute(set) != !n.attribute(complete)) {
          bad = n;
          missing = n.attribute(set) ? complete : set;
          return false;
        }
      return true;
    }
  } w;
  root.traverse(w);
  if (w.bad)
    throw InvalidArgument(
        fmt::format("{}: hwloc <object type=\"{}\"> at byte {} has no {} attribute; hwloc writes "
                    "both sets of every object: re-export it with lstopo --of xml",
                    origin, w.bad.attribute("type").as_string(""), w.bad.offset_debug(), w.missing));
}
}  // namespace

Topology Topology::parse(const std::string& text, const std::string& origin) {
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(text.data(), text.size(), pugi::parse_default);
  if (!r)
    throw InvalidArgument(fmt::format("{}: malformed XML at byte {}: {}; the file is truncated or not XML", origin,
                                      r.offset, r.description()));
  const pugi::xml_node root = doc.document_element();
  const std::string name = root.name();
  if (name == "topology") {
    const std::string version = root.attribute("version").as_string("");
    if (version.empty() || version[0] != '2')
      throw InvalidArgument(
          fmt::format("{}: hwloc XML version \"{}\" is not supported (stepgraph reads hwloc 2.x XML); "
                      "re-export it with hwloc 2.x: lstopo --of xml",
                      origin, version));
    check_hwloc_sets(root, origin);
    return load_hwloc_xml(text, origin);
  }
  if (name == "system") return load_nccl_xml(text, origin);
  if (name == "graphs")
    throw InvalidArgument(
        fmt::format("{}: this is an NCCL graph file (NCCL_GRAPH_FILE), not a topology; give the "
                    "NCCL_TOPO_FILE / NCCL_TOPO_DUMP_FILE of that machine instead",
                    origin));
  throw InvalidArgument(
      fmt::format("{}: unknown topology format (root element <{}>); expected hwloc XML "
                  "<topology version=\"2.0\"> or NCCL XML <system version=\"1\">",
                  origin, name));
}

Topology Topology::discover() {
  return discover_live_hwloc();
}

const Topology& Topology::live() {
  static const Topology t = discover();
  return t;
}

Topology Topology::from_env_or_live() {
  const std::string file = kTopoFile.get();
  if (!file.empty()) {
    STEPGRAPH_INFO(kTopology, "STEPGRAPH_TOPO_FILE={}: planning on the recorded topology", file);
    return load(file);
  }
  return discover();
}

double Topology::numa_distance(std::size_t a, std::size_t b) const {
  STEPGRAPH_CHECK(a < numa_.size() && b < numa_.size(), InvalidArgument,
                  "numa_distance({}, {}): this topology has {} NUMA node(s); use positions below that", a, b,
                  numa_.size());
  if (!numa_distance_.empty()) return numa_distance_[a * numa_.size() + b];
  return a == b ? 10.0 : 20.0;
}

int Topology::gpu_by_bus_id(const std::string& bus_id) const {
  const std::string want = canonical_bus_id(bus_id);
  for (const auto& g : gpus_)
    if (!g.bus_id.empty() && g.bus_id == want) return g.index;
  return -1;
}

int Topology::nic_by_name(const std::string& name) const {
  for (const auto& n : nics_)
    if (n.name == name) return n.index;
  return -1;
}

namespace {
std::string_view kind_name(PciKind k) {
  switch (k) {
    case PciKind::kHostBridge:
      return "host_bridge";
    case PciKind::kBridge:
      return "bridge";
    case PciKind::kGpu:
      return "gpu";
    case PciKind::kNic:
      return "nic";
    case PciKind::kNvSwitch:
      return "nvswitch";
    case PciKind::kOther:
      return "other";
  }
  return "other";
}
std::string_view peer_kind_name(LinkPeerKind k) {
  switch (k) {
    case LinkPeerKind::kGpu:
      return "gpu";
    case LinkPeerKind::kNvSwitch:
      return "nvswitch";
    case LinkPeerKind::kCpu:
      return "cpu";
  }
  return "gpu";
}
std::string_view format_name(SourceFormat f) {
  switch (f) {
    case SourceFormat::kLive:
      return "live";
    case SourceFormat::kHwlocXml:
      return "hwloc-xml";
    case SourceFormat::kNcclXml:
      return "nccl-xml";
  }
  return "live";
}
}  // namespace

std::string Topology::to_json() const {
  using nlohmann::json;
  json j;
  j["source"] = source_;
  j["format"] = format_name(format_);
  j["pu_count"] = pu_count_;
  j["core_count"] = core_count_;
  j["cpu"] = {{"vendor", cpu_.vendor},
              {"model", cpu_.model},
              {"arch", cpu_.arch},
              {"family", cpu_.family},
              {"model_id", cpu_.model_id}};
  j["packages"] = json::array();
  for (const auto& p : packages_)
    j["packages"].push_back({{"index", p.index},
                             {"os_index", p.os_index},
                             {"cpu_model", p.cpu_model},
                             {"cpus", p.cpus.to_string()},
                             {"core_count", p.core_count},
                             {"numa_nodes", p.numa_nodes}});
  j["numa_nodes"] = json::array();
  for (const auto& n : numa_)
    j["numa_nodes"].push_back({{"index", n.index},
                               {"os_index", n.os_index},
                               {"kind", n.kind == NumaKind::kCpu ? "cpu" : "gpu_memory"},
                               {"memory_bytes", n.memory_bytes},
                               {"cpus", n.cpus.to_string()},
                               {"package", n.package}});
  j["pci"] = json::array();
  for (const auto& n : pci_)
    j["pci"].push_back({{"index", n.index},
                        {"parent", n.parent},
                        {"kind", kind_name(n.kind)},
                        {"bus_id", n.bus_id},
                        {"vendor_id", fmt::format("0x{:04x}", n.vendor_id)},
                        {"device_id", fmt::format("0x{:04x}", n.device_id)},
                        {"class_id", fmt::format("0x{:06x}", n.class_id)},
                        {"link_gbps", n.link_gbps},
                        {"numa_nodes", n.numa_nodes}});
  j["gpus"] = json::array();
  for (const auto& g : gpus_)
    j["gpus"].push_back({{"index", g.index},
                         {"name", g.name},
                         {"model", g.model},
                         {"bus_id", g.bus_id},
                         {"pci", g.pci},
                         {"sm", g.sm},
                         {"cuda_device", g.cuda_device},
                         {"numa_node", g.numa_node},
                         {"memory_numa_node", g.memory_numa_node},
                         {"cpus", g.cpus.to_string()}});
  j["nics"] = json::array();
  for (const auto& n : nics_)
    j["nics"].push_back({{"index", n.index},
                         {"name", n.name},
                         {"bus_id", n.bus_id},
                         {"pci", n.pci},
                         {"speed_gbps", n.speed_gbps},
                         {"numa_node", n.numa_node},
                         {"cpus", n.cpus.to_string()}});
  j["nvswitches"] = json::array();
  for (const auto& s : nvswitches_)
    j["nvswitches"].push_back({{"index", s.index}, {"bus_id", s.bus_id}, {"pci", s.pci}});
  j["nvlinks"] = json::array();
  for (const auto& l : nvlinks_)
    j["nvlinks"].push_back(
        {{"gpu", l.gpu}, {"peer_kind", peer_kind_name(l.peer.kind)}, {"peer", l.peer.index}, {"count", l.count}});
  json dist = json::array();
  for (std::size_t a = 0; a < numa_.size(); ++a) {
    json row = json::array();
    for (std::size_t b = 0; b < numa_.size(); ++b) row.push_back(numa_distance(a, b));
    dist.push_back(row);
  }
  j["numa_distance"] = dist;
  j["numa_distance_from_source"] = has_numa_distances();
  j["notes"] = notes_;
  // Names come from files: replace invalid UTF-8 rather than throw.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {
/// The (GT/s, width) pair NCCL turns into `gbps` (kvDictPciGen, width × code / 80),
/// the widest x16-or-narrower match; else the generation whose x16 is nearest.
std::pair<double, int> nccl_speed_for(double gbps) {
  static constexpr double kGts[] = {2.5, 5, 8, 16, 32, 64};
  for (int width : {16, 8, 4, 2, 1, 32})
    for (double g : kGts)
      if (std::abs(pcie::nccl_link_gbps(g, width) - gbps) < 1e-6) return {g, width};
  double best = 8;
  for (double g : kGts)
    if (std::abs(pcie::nccl_link_gbps(g, 16) - gbps) < std::abs(pcie::nccl_link_gbps(best, 16) - gbps)) best = g;
  return {best, 16};
}
}  // namespace

std::string Topology::to_nccl_xml() const {
  // Note [NCCL XML dump]: NCCL (xml.cc) keeps attributes it does not know,
  // so ours (memory, distances, package, model, link_gbps, host_bridge) ride
  // along harmlessly. NCCL XML has one host bridge per <cpu>; host_bridge on
  // a top-level <pci> keeps which of its NUMA node's host bridges it is under
  // (NODE vs PHB), and link_gbps is written exactly (the shortest text that
  // reads back as the same double), so that the round trip keeps every path.
  pugi::xml_document doc;
  pugi::xml_node sys = doc.append_child("system");
  sys.append_attribute("version") = "1";
  std::vector<pugi::xml_node> cpu_nodes;
  for (const auto& n : numa_) {
    pugi::xml_node c = sys.append_child("cpu");
    c.append_attribute("numaid") = n.os_index;
    c.append_attribute("affinity") = format_cpumask(n.cpus).c_str();
    if (!cpu_.arch.empty()) c.append_attribute("arch") = cpu_.arch.c_str();
    if (!cpu_.vendor.empty()) c.append_attribute("vendor") = cpu_.vendor.c_str();
    if (cpu_.family >= 0) c.append_attribute("familyid") = cpu_.family;
    if (cpu_.model_id >= 0) c.append_attribute("modelid") = cpu_.model_id;
    if (n.package >= 0) c.append_attribute("package") = n.package;
    if (n.memory_bytes > 0) c.append_attribute("memory") = std::to_string(n.memory_bytes).c_str();
    if (n.kind == NumaKind::kGpuMemory) c.append_attribute("gpu_memory") = 1;
    std::string dist;
    for (std::size_t b = 0; b < numa_.size(); ++b)
      dist += (b ? " " : "") + fmt::format("{}", numa_distance(static_cast<std::size_t>(n.index), b));
    c.append_attribute("distances") = dist.c_str();
    cpu_nodes.push_back(c);
  }
  // The PCI tree under the <cpu> of each host bridge's first NUMA node.
  std::vector<pugi::xml_node> xml_of(pci_.size());
  auto cpu_for = [&](const PciNode& n) -> pugi::xml_node {
    if (cpu_nodes.empty()) return sys;
    const int numa = n.numa_nodes.empty() ? 0 : n.numa_nodes.front();
    return cpu_nodes[static_cast<std::size_t>(numa)];
  };
  std::vector<int> gpu_of_pci(pci_.size(), -1);
  for (const auto& g : gpus_)
    if (g.pci >= 0) gpu_of_pci[static_cast<std::size_t>(g.pci)] = g.index;
  std::vector<std::vector<int>> nics_of_pci(pci_.size());
  for (const auto& n : nics_)
    if (n.pci >= 0) nics_of_pci[static_cast<std::size_t>(n.pci)].push_back(n.index);
  auto add_nets = [&](pugi::xml_node parent, const std::vector<int>& nic_indices) {
    pugi::xml_node nic = parent.append_child("nic");
    for (int i : nic_indices) {
      const Nic& n = nics_[static_cast<std::size_t>(i)];
      pugi::xml_node net = nic.append_child("net");
      net.append_attribute("name") = n.name.c_str();
      net.append_attribute("dev") = i;
      if (n.speed_gbps > 0) net.append_attribute("speed") = static_cast<long long>(n.speed_gbps * 1000);
    }
  };
  for (const auto& n : pci_) {
    if (n.kind == PciKind::kHostBridge) {
      xml_of[static_cast<std::size_t>(n.index)] = cpu_for(n);
      continue;
    }
    pugi::xml_node parent = n.parent >= 0 ? xml_of[static_cast<std::size_t>(n.parent)] : cpu_for(n);
    pugi::xml_node x = parent.append_child("pci");
    // NCCL needs a busid on every <pci>; a bridge whose upstream side is not
    // PCI (hwloc bridge_type "2-1") has none: a stand-in from the node's
    // position, in domain ffff, which no real machine numbers (found by
    // fuzz/fuzz_topo_hwloc on its regression input: the dump did not load).
    const std::string bus = !n.bus_id.empty() ? n.bus_id
                                              : fmt::format("ffff:{:02x}:{:02x}.{:x}", 0xff ^ ((n.index >> 8) & 0xff),
                                                            (n.index >> 3) & 0x1f, n.index & 7);
    x.append_attribute("busid") = bus.c_str();
    if (n.parent >= 0 && pci_[static_cast<std::size_t>(n.parent)].kind == PciKind::kHostBridge)
      x.append_attribute("host_bridge") = n.parent;
    std::uint32_t cls = n.class_id;
    if (n.kind == PciKind::kBridge) cls = 0x060400;
    if (n.kind == PciKind::kNvSwitch) cls = 0x068000;
    if (n.kind == PciKind::kGpu && cls == 0) cls = 0x030200;
    if (n.kind == PciKind::kNic && cls == 0) cls = 0x020000;
    x.append_attribute("class") = fmt::format("0x{:06x}", cls).c_str();
    x.append_attribute("vendor") = fmt::format("0x{:04x}", n.vendor_id).c_str();
    x.append_attribute("device") = fmt::format("0x{:04x}", n.device_id).c_str();
    // A standard PCIe generation and width that give back link_gbps under
    // NCCL's rule (NCCL reads these); link_gbps itself for our loader.
    const auto [gts, width] = nccl_speed_for(n.link_gbps);
    x.append_attribute("link_speed") = fmt::format("{:g} GT/s PCIe", gts).c_str();
    x.append_attribute("link_width") = width;
    x.append_attribute("link_gbps") = fmt::format("{}", n.link_gbps).c_str();
    xml_of[static_cast<std::size_t>(n.index)] = x;
    const int gi = gpu_of_pci[static_cast<std::size_t>(n.index)];
    if (gi >= 0) {
      const Gpu& g = gpus_[static_cast<std::size_t>(gi)];
      pugi::xml_node gx = x.append_child("gpu");
      gx.append_attribute("dev") = g.index;
      gx.append_attribute("sm") = g.sm;
      gx.append_attribute("rank") = g.index;
      if (!g.model.empty()) gx.append_attribute("model") = g.model.c_str();
      for (const auto& l : nvlinks_) {
        int other = -1;
        if (l.gpu == gi)
          other = 0;
        else if (l.peer.kind == LinkPeerKind::kGpu && l.peer.index == gi)
          other = 1;
        if (other < 0) continue;
        pugi::xml_node lx = gx.append_child("nvlink");
        std::string target;
        std::string tclass;
        if (other == 1) {
          target = gpus_[static_cast<std::size_t>(l.gpu)].bus_id;
          tclass = "0x030200";
        } else if (l.peer.kind == LinkPeerKind::kGpu) {
          target = gpus_[static_cast<std::size_t>(l.peer.index)].bus_id;
          tclass = "0x030200";
        } else if (l.peer.kind == LinkPeerKind::kNvSwitch) {
          target = nvswitches_[static_cast<std::size_t>(l.peer.index)].bus_id;
          if (target.empty()) target = "fffffff:ff:ff.0";
          tclass = "0x068000";
        } else {
          target = fmt::format("cpu:{}", l.peer.index);
          tclass = "0x068001";
        }
        lx.append_attribute("target") = target.c_str();
        lx.append_attribute("count") = l.count;
        lx.append_attribute("tclass") = tclass.c_str();
      }
    }
    if (!nics_of_pci[static_cast<std::size_t>(n.index)].empty())
      add_nets(x, nics_of_pci[static_cast<std::size_t>(n.index)]);
  }
  for (const auto& n : nics_) {
    if (n.pci >= 0 || cpu_nodes.empty()) continue;
    add_nets(cpu_nodes[static_cast<std::size_t>(std::max(n.numa_node, 0))], {n.index});
  }
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_default | pugi::format_no_declaration);
  return out.str();
}

void Topology::dump(const std::filesystem::path& file) const {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out)
    throw InvalidArgument(
        fmt::format("cannot write the topology to {}; check the directory exists and is writable", file.string()));
  out << to_nccl_xml();
  if (!out) throw InvalidArgument(fmt::format("writing the topology to {} failed; check the disk", file.string()));
}

}  // namespace stepgraph::topology
