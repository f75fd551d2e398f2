// Fuzz target: the StepGraph JSON reader (graphs::from_json, what
// `stepgraph graph --input` and `stepgraph place --graph` read). An accepted
// graph must round-trip through to_json (fuzz/graph_checks.h); a graph that
// validate() accepts must have a topological order that respects every edge,
// a critical path and a DOT rendering.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <stepgraph/graphs/io.h>

#include "graph_checks.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace sg = stepgraph::graphs;
  stepgraph::fuzz::quiet();
  try {
    const sg::StepGraph g = stepgraph::fuzz::read_graph_round_trip(stepgraph::fuzz::as_text(data, size));
    (void)sg::to_dot(g);
    sg::validate(g);
    const auto order = sg::topological_order(g);
    SG_FUZZ_ASSERT(order.size() == g.node_count(),
                   fmt::format("order of {} nodes for {}", order.size(), g.node_count()));
    std::vector<std::size_t> pos(g.node_count(), g.node_count());
    for (std::size_t i = 0; i < order.size(); ++i) {
      SG_FUZZ_ASSERT(order[i] < g.node_count() && pos[order[i]] == g.node_count(), "order is a permutation");
      pos[order[i]] = i;
    }
    for (const auto& e : g.edges())
      SG_FUZZ_ASSERT(pos[e.src] < pos[e.dst], fmt::format("edge {}->{} against the order", e.src, e.dst));
    SG_FUZZ_ASSERT(sg::find_cycle(g).empty(), "a validated graph has a cycle");
    std::vector<double> w(g.node_count(), 0.0);
    for (const auto& n : g.nodes()) w[n.id] = n.cost.get(sg::DeviceKind::kGpu).value_or(1.0);
    const auto cp = sg::critical_path(g, w);
    SG_FUZZ_ASSERT(cp.length_us >= 0 && cp.nodes.size() <= g.node_count(), "critical path");
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}
