// `stepgraph topo`: the topology of this machine (or of a recorded file) as
// `nvidia-smi topo -m` prints it, then the bandwidth, latency and NUMA
// distance matrices; `--json` for the whole model and matrices; `--links`
// for the physical links and the route of every ordered pair; `--dump F`
// writes the model as NCCL topology XML (loadable by --file and by NCCL).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "command.h"

namespace {

struct TopoOptions {
  std::string file;
  std::string dump;
  bool json = false;
  bool links = false;
};

// `--links`: every physical link (one direction each) with the number of
// ordered pairs crossing it, then each ordered pair's route.
void print_links(const stepgraph::topology::CostMatrix& m) {
  const auto& links = m.links();
  std::vector<int> crossings(links.size(), 0);
  for (std::size_t a = 0; a < m.size(); ++a)
    for (std::size_t b = 0; b < m.size(); ++b)
      for (std::uint32_t l : m.path(a, b).links) ++crossings[l];
  std::size_t w = 4;
  for (const auto& l : links) w = std::max(w, l.name.size());
  std::printf("Physical links (one direction each; docs/topology.md \"Physical links\"):\n");
  std::printf("  %4s  %-*s  %9s  %s\n", "#", static_cast<int>(w), "link", "GB/s", "pairs crossing");
  for (std::size_t i = 0; i < links.size(); ++i)
    std::printf("  %4zu  %-*s  %9.1f  %d\n", i, static_cast<int>(w), links[i].name.c_str(), links[i].bandwidth_gbps,
                crossings[i]);
  std::size_t nw = 4;
  for (const auto& e : m.endpoints()) nw = std::max(nw, e.name.size());
  std::printf("\nRoutes (source -> destination: kind, GB/s: links crossed):\n");
  for (std::size_t a = 0; a < m.size(); ++a)
    for (std::size_t b = 0; b < m.size(); ++b) {
      if (a == b) continue;
      const auto& p = m.path(a, b);
      std::string route;
      for (std::uint32_t l : p.links) route += (route.empty() ? "" : ", ") + links[l].name;
      std::printf("  %-*s -> %-*s  %-5s %8.1f: %s\n", static_cast<int>(nw), m.endpoints()[a].name.c_str(),
                  static_cast<int>(nw), m.endpoints()[b].name.c_str(), p.label().c_str(), p.bandwidth_gbps,
                  route.c_str());
    }
}

int run_topo(const TopoOptions& opts) {
  using stepgraph::topology::CostMatrix;
  using stepgraph::topology::Topology;
  try {
    const Topology topo = opts.file.empty() ? Topology::from_env_or_live() : Topology::load(opts.file);
    const CostMatrix m = CostMatrix::build(topo);
    if (!opts.dump.empty()) {
      topo.dump(opts.dump);
      std::fprintf(stderr, "wrote %s (NCCL topology XML)\n", opts.dump.c_str());
    }
    if (opts.json) {
      std::printf("{\n\"model\": %s,\n\"matrix\": %s\n}\n", topo.to_json().c_str(), m.to_json().c_str());
      return 0;
    }
    if (opts.links) {
      std::printf("Topology: %s\n\n", topo.source().c_str());
      print_links(m);
      return 0;
    }
    const auto& cpu = topo.cpu();
    std::printf("Topology: %s\n", topo.source().c_str());
    std::printf(
        "  %zu package(s), %zu NUMA node(s), %d core(s), %d PU(s), %zu GPU(s), %zu NIC(s), %zu NVSwitch(es)%s%s\n\n",
        topo.package_count(), topo.numa_count(), topo.core_count(), topo.pu_count(), topo.gpu_count(), topo.nic_count(),
        topo.nvswitch_count(), cpu.vendor.empty() ? "" : ", CPU ",
        cpu.vendor.empty() ? "" : (cpu.vendor + (cpu.model.empty() ? "" : " " + cpu.model)).c_str());
    for (const auto& g : topo.gpus())
      std::printf("  %-6s %s %s sm_%d\n", g.name.c_str(), g.bus_id.empty() ? "-" : g.bus_id.c_str(),
                  g.model.empty() ? "(model unknown)" : g.model.c_str(), g.sm);
    if (topo.gpu_count() > 0) std::printf("\n");
    if (topo.gpu_count() + topo.nic_count() > 0) std::printf("%s\n", m.to_nvidia_smi().c_str());
    std::printf("Bandwidth (GB/s, one direction):\n%s\n", m.bandwidth_table().c_str());
    std::printf("Latency (us, estimate):\n%s\n", m.latency_table().c_str());
    std::printf("NUMA distance%s:\n%s", topo.has_numa_distances() ? "" : " (none in the source: 10 local, 20 remote)",
                m.numa_table().c_str());
    if (!topo.notes().empty()) {
      std::printf("\nNotes:\n");
      for (const auto& n : topo.notes()) std::printf("  - %s\n", n.c_str());
    }
    return 0;
  } catch (const stepgraph::Error& e) {
    std::fprintf(stderr, "stepgraph topo: %s\n", e.what());
    return 1;
  }
}

stepgraph::tools::Command topo_cmd{
    "topo", "print the GPU/NIC/NUMA topology and cost matrix (this machine, or --file)", [](CLI::App& app) {
      auto opts = std::make_shared<TopoOptions>();
      app.add_option("--file,-f", opts->file,
                     "a recorded topology: hwloc XML 2.x or NCCL topology XML (default: STEPGRAPH_TOPO_FILE, else "
                     "this machine)");
      app.add_flag("--json", opts->json, "print the model and the matrices as JSON (schema: docs/topology.md)");
      app.add_flag("--links", opts->links,
                   "list the physical links (one direction each) and the links every path crosses");
      app.add_option("--dump", opts->dump, "write the model to this file as NCCL topology XML");
      return [opts]() -> int { return run_topo(*opts); };
    }};

}  // namespace
