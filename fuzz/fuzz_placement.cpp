// Fuzz target: the placement JSON. The repository writes placements
// (graphs::placement_to_json, `stepgraph place --placement-out`) but has no
// reader for them: this target fuzzes the path that produces one from an
// untrusted graph and reads the JSON back with nlohmann::json, checking it
// against the Placement it came from.
//
// Input: one configuration byte, then a StepGraph JSON (seeds:
// fuzz/corpus/placement/). The byte picks the algorithm (bits 0-1), the
// number of uniform devices 1-4 (bits 2-3) and whether the simulator-judged
// search runs (bit 4, 16 evaluations). A graph validate() accepts must be
// placed; the placement must respect every edge and list every node on its
// device (gang nodes on every device); the simulator must accept it; its JSON
// must say the same.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <nlohmann/json.hpp>

#include "graph_checks.h"

namespace {

namespace sg = stepgraph::graphs;

constexpr std::size_t kMaxNodes = 256;  // keeps one input well under libFuzzer's -timeout
constexpr double kSlackUs = 1e-6;

void check_placement(const sg::StepGraph& g, const sg::Platform& platform, const sg::Placement& pl) {
  SG_FUZZ_ASSERT(pl.nodes.size() == g.node_count() && pl.device_order.size() == platform.size(), "placement sizes");
  std::vector<std::size_t> listed(g.node_count(), 0);
  for (std::size_t d = 0; d < pl.device_order.size(); ++d)
    for (sg::NodeId u : pl.device_order[d]) {
      SG_FUZZ_ASSERT(u < g.node_count(), fmt::format("device {} lists node {}", d, u));
      SG_FUZZ_ASSERT(pl.nodes[u].device == static_cast<int>(d) || pl.nodes[u].device == sg::kAllDevices,
                     fmt::format("device {} lists node {} placed on {}", d, u, pl.nodes[u].device));
      ++listed[u];
    }
  for (const auto& n : g.nodes()) {
    const auto& s = pl.nodes[n.id];
    const std::size_t want = s.device == sg::kAllDevices ? platform.size() : 1;
    SG_FUZZ_ASSERT(
        s.device == sg::kAllDevices || (s.device >= 0 && static_cast<std::size_t>(s.device) < platform.size()),
        fmt::format("node {} on device {}", n.id, s.device));
    SG_FUZZ_ASSERT(listed[n.id] == want, fmt::format("node {} listed {} times, want {}", n.id, listed[n.id], want));
    SG_FUZZ_ASSERT(s.start_us <= s.finish_us + kSlackUs, fmt::format("node {} ends before it starts", n.id));
  }
  for (const auto& e : g.edges())
    SG_FUZZ_ASSERT(pl.nodes[e.src].finish_us <= pl.nodes[e.dst].start_us + kSlackUs * (1 + pl.nodes[e.dst].start_us),
                   fmt::format("edge {}->{}: source finishes at {} us, destination starts at {} us", e.src, e.dst,
                               pl.nodes[e.src].finish_us, pl.nodes[e.dst].start_us));
}

void check_json(const sg::StepGraph& g, const sg::Placement& pl) {
  const std::string text = sg::placement_to_json(g, pl);
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    stepgraph::fuzz::fail("placement JSON parses", __FILE__, __LINE__, std::string(e.what()) + "\n" + text);
  }
  SG_FUZZ_ASSERT(doc.at("algorithm") == std::string(sg::to_string(pl.algorithm)), text);
  SG_FUZZ_ASSERT(doc.at("nodes").size() == g.node_count(), text);
  for (sg::NodeId u = 0; u < g.node_count(); ++u) {
    const auto& j = doc["nodes"][u];
    SG_FUZZ_ASSERT(j.at("name") == g.node(u).name && j.at("device") == pl.nodes[u].device, text);
  }
  SG_FUZZ_ASSERT(doc.at("device_order").get<std::vector<std::vector<sg::NodeId>>>() == pl.device_order, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  stepgraph::fuzz::quiet();
  if (size < 1) return 0;
  const std::uint8_t config = data[0];
  try {
    const sg::StepGraph g = stepgraph::fuzz::read_graph_round_trip(stepgraph::fuzz::as_text(data + 1, size - 1));
    if (g.node_count() > kMaxNodes || g.edge_count() > 4 * kMaxNodes) return 0;
    sg::validate(g);
    const auto platform = sg::Platform::uniform(1 + ((config >> 2) & 3u), sg::DeviceKind::kGpu, {25.0, 2.0});
    sg::PlaceOptions po;
    po.algorithm = static_cast<sg::Algorithm>(config & 3u);
    po.search_evaluations = (config & 16u) ? 16 : 0;
    const sg::Placement pl = sg::place(g, platform, po);
    check_placement(g, platform, pl);
    sg::SimulateOptions so;
    so.cost = po.cost;
    so.trace = sg::TraceOutput::kChromeJson;
    const sg::SimResult sim = sg::simulate(g, platform, pl, so);
    SG_FUZZ_ASSERT(sim.nodes.size() == g.node_count() && sim.makespan_us >= 0, "simulation sizes");
    (void)nlohmann::json::parse(sim.trace_json);
    check_json(g, pl);
    sg::DotOptions dot;
    dot.placement = &pl;
    (void)sg::to_dot(g, dot);
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}
