// Private: helpers shared by placement.cpp and search.cpp.
#pragma once

#include <cstddef>
#include <vector>

#include <stepgraph/graphs/placement.h>

namespace stepgraph::graphs::detail {

/// A collective: one gang node on every device (ScheduledNode::device ==
/// kAllDevices).
inline bool is_gang(const Node& n) {
  return n.kind == NodeKind::kCollective;
}

/// Fills out.device_order from out.nodes: each device's nodes (gang nodes
/// on every device) by (start time, position in `topo`), so the order is
/// consistent with the edges; sets out.estimated_makespan_us to the latest
/// finish.
void build_device_order(const StepGraph& g, const std::vector<NodeId>& topo, std::size_t p, Placement& out);

}  // namespace stepgraph::graphs::detail
