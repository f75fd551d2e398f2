// `stepgraph info`: the backends this build has, the devices they see, and
// the live machine's NUMA layout.
#include <cstdio>

#include <stepgraph/runtime/backend.h>
#include <stepgraph/topology/live.h>

#include "command.h"

namespace {

int run_info() {
  namespace rt = stepgraph::runtime;
  const auto& machine = stepgraph::topology::LiveMachine::get();
  std::printf("stepgraph info\n\nmachine: %d package(s), %d core(s), %d PU(s), %zu NUMA node(s)\n",
              machine.package_count(), machine.core_count(), machine.pu_count(), machine.numa_nodes().size());
  for (const auto& n : machine.numa_nodes())
    std::printf("  NUMA %d: cpus %s, %.1f GiB\n", n.os_index, n.cpus.to_string().c_str(),
                static_cast<double>(n.memory_bytes) / (1ull << 30));
  std::printf("\nbackends:\n");
  auto host = rt::Backend::create(rt::BackendKind::kHost);
  std::printf("  host: available, %d device(s)\n", host->device_count());
  for (int d = 0; d < host->device_count(); ++d) {
    const auto i = host->device(d);
    std::printf("    %s: NUMA node %d, cpus %s, %d worker(s)\n", i.name.c_str(), i.numa_node,
                i.cpus.to_string().c_str(), i.workers);
  }
  std::string reason;
  if (!rt::Backend::cuda_compiled()) {
    std::printf("  cuda: not built (configured without CUDA)\n");
  } else if (!rt::Backend::cuda_available(&reason)) {
    std::printf("  cuda: built, not available: %s\n", reason.c_str());
  } else {
    auto cuda = rt::Backend::create(rt::BackendKind::kCuda);
    std::printf("  cuda: available, %d device(s)\n", cuda->device_count());
    for (int d = 0; d < cuda->device_count(); ++d) {
      const auto i = cuda->device(d);
      std::printf("    %d: %s, sm_%d, %.1f GiB, PCI %s, NUMA node %d\n", d, i.name.c_str(), i.compute_capability,
                  static_cast<double>(i.memory_bytes) / (1ull << 30), i.pci_bus_id.c_str(), i.numa_node);
    }
  }
  std::printf("\ndefault backend (auto): %s\n", rt::Backend::cuda_available() ? "cuda" : "host");
  return 0;
}

stepgraph::tools::Command info_cmd{"info", "print the backends, devices and NUMA layout",
                                   [](CLI::App&) { return [] { return run_info(); }; }};

}  // namespace
