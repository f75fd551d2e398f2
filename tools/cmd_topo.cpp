// `stepgraph topo`: the topology of this machine (or of a recorded file) as
// `nvidia-smi topo -m` prints it, then the bandwidth, latency and NUMA
// distance matrices; `--json` for the whole model and matrices; `--dump F`
// writes the model as NCCL topology XML (loadable by --file and by NCCL).
#include <cstdio>
#include <memory>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "command.h"

namespace {

struct TopoOptions {
  std::string file;
  std::string dump;
  bool json = false;
};

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
    const auto& cpu = topo.cpu();
    std::printf("Topology: %s\n", topo.source().c_str());
    std::printf("  %zu package(s), %zu NUMA node(s), %d core(s), %d PU(s), %zu GPU(s), %zu NIC(s), %zu NVSwitch(es)%s%s\n\n",
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
      app.add_option("--dump", opts->dump, "write the model to this file as NCCL topology XML");
      return [opts]() -> int { return run_topo(*opts); };
    }};

}  // namespace
