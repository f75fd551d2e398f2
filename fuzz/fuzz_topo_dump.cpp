// Fuzz target: `stepgraph topo --dump F` output read back. The seeds are
// dumps of every recorded machine (fuzz/corpus/topo_dump/, written by
// Topology::dump); an input is read as `topo --file` reads it, and what it
// loads as must survive the dump round trip, and the dump of a dump must be
// the same text (fuzz/topology_checks.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "topology_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace tp = stepgraph::topology;
  stepgraph::fuzz::quiet();
  const std::string text(stepgraph::fuzz::as_text(data, size));
  if (text.find("<topology") != std::string::npos) return 0;  // hwloc XML: fuzz_topo_hwloc
  try {
    const tp::Topology t = tp::Topology::parse(text, "fuzz");
    const tp::CostMatrix m = tp::CostMatrix::build(t);
    const tp::Topology back = stepgraph::fuzz::check_dump_round_trip(t, m);
    const std::string once = back.to_nccl_xml();
    const std::string twice = tp::Topology::parse(once, "dump").to_nccl_xml();
    SG_FUZZ_ASSERT(once == twice, "--- dump:\n" + once + "\n--- its dump:\n" + twice);
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}
