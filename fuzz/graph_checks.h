// fuzz/graph_checks.h — the StepGraph JSON round trip both graph fuzz
// targets assert (Note [What a fuzz target asserts]).
#pragma once

#include <string>
#include <string_view>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/io.h>

#include "fuzz_common.h"

namespace stepgraph::fuzz {

/// from_json(text); when it accepts, to_json of the graph must read back as
/// the same graph: the same JSON text once more. Throws InvalidArgument when
/// `text` is not a graph.
inline graphs::StepGraph read_graph_round_trip(std::string_view text) {
  graphs::StepGraph g = graphs::from_json(text);
  const std::string once = graphs::to_json(g);
  std::string twice;
  try {
    twice = graphs::to_json(graphs::from_json(once));
  } catch (const InvalidArgument& e) {
    fail("to_json's output reads back", __FILE__, __LINE__, std::string(e.what()) + "\n--- to_json:\n" + once);
  }
  SG_FUZZ_ASSERT(once == twice, "--- to_json:\n" + once + "\n--- read back and written again:\n" + twice);
  return g;
}

}  // namespace stepgraph::fuzz
