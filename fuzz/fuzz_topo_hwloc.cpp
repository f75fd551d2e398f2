// Fuzz target: hwloc XML as the topology loader takes it — hwloc's own XML
// import (hwloc_topology_set_xmlbuffer + load), our conversion of hwloc's
// objects into the model, the cost matrix, the platform the placer sees, and
// the dump round trip (fuzz/topology_checks.h). Only our code is
// instrumented for coverage; libhwloc is the system's.
#include <cstddef>
#include <cstdint>
#include <string>

#include <stepgraph/graphs/platform.h>

#include "topology_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace tp = stepgraph::topology;
  namespace sg = stepgraph::graphs;
  stepgraph::fuzz::quiet();
  const std::string text(stepgraph::fuzz::as_text(data, size));
  // NCCL XML is fuzz_topo_nccl's input; hwloc reads a NUL-terminated buffer.
  if (text.find("<topology") == std::string::npos || text.find('\0') != std::string::npos) return 0;
  try {
    const tp::Topology t = tp::Topology::parse(text, "fuzz");
    const tp::CostMatrix m = tp::CostMatrix::build(t);
    stepgraph::fuzz::exercise(t, m);
    for (auto sel : {sg::EndpointSelection::kGpus, sg::EndpointSelection::kGpusAndNuma, sg::EndpointSelection::kNuma}) {
      try {
        (void)sg::Platform::from_cost_matrix(m, sel);
      } catch (const stepgraph::InvalidArgument&) {  // e.g. no GPU for kGpus
      }
    }
    (void)stepgraph::fuzz::check_dump_round_trip(t, m);
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}
