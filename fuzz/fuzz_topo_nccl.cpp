// Fuzz target: the NCCL topology XML reader (Topology::parse of a
// `<system version="1">` document), then the cost matrix, every printed form
// and the dump round trip (fuzz/topology_checks.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "topology_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace tp = stepgraph::topology;
  stepgraph::fuzz::quiet();
  const std::string text(stepgraph::fuzz::as_text(data, size));
  // hwloc XML goes to libhwloc: fuzz_topo_hwloc's input.
  if (text.find("<topology") != std::string::npos) return 0;
  try {
    const tp::Topology t = tp::Topology::parse(text, "fuzz");
    const tp::CostMatrix m = tp::CostMatrix::build(t);
    stepgraph::fuzz::exercise(t, m);
    (void)stepgraph::fuzz::check_dump_round_trip(t, m);
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}
