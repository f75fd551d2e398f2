// stepgraph/graphs/io.h — JSON export/import (versioned schema) and DOT export.
//
// Note [Graph JSON schema, version 1]
//   {
//     "schema": "stepgraph.graph", "version": 1,
//     "origin": "builder" | "annotated_capture" | "raw_cuda_graph",
//     "buffers": [ {"name": str, "bytes": uint} ],
//     "nodes": [ {
//        "name": str,
//        "kind": "kernel"|"memcpy"|"memset"|"host"|"collective"|
//                "event_record"|"event_wait"|"empty",
//        "cost_us": {"gpu": number, "cpu": number},     // either key optional
//        "accesses": [ {"buffer": index, "offset": uint, "bytes": uint,
//                       "mode": "read"|"write"|"read_write"} ],   // optional
//        "pinned_device": int,                                  // optional
//        "collective": {"op": "allreduce"|"allgather"|"reduce_scatter"|
//                              "broadcast", "bytes": uint}       // iff kind
//     } ],
//     "edges": [ {"src": node index, "dst": node index, "bytes": uint} ]
//   }
// Nodes and buffers are referred to by their index in their array. A reader
// rejects another "schema" or "version" and every malformed field with an
// InvalidArgument naming the JSON path (e.g. "nodes[3].cost_us.gpu").
// Edges are imported as given: call validate() for cycles and dangling edges.
//
// Thread-safety: reentrant. Capture: no CUDA calls.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/placement.h>

namespace stepgraph::graphs {

inline constexpr int kGraphSchemaVersion = 1;

[[nodiscard]] std::string to_json(const StepGraph& graph);
[[nodiscard]] StepGraph from_json(std::string_view text);
void save_json(const StepGraph& graph, const std::filesystem::path& file);
[[nodiscard]] StepGraph load_json(const std::filesystem::path& file);

struct DotOptions {
  /// When set, nodes are clustered per device and labelled with start times.
  const Placement* placement = nullptr;
};
/// Graphviz DOT: one node per graph node (label: name, kind), edge labels
/// with bytes.
[[nodiscard]] std::string to_dot(const StepGraph& graph, const DotOptions& options = {});

/// Placement as JSON: {"algorithm", "estimated_makespan_us",
/// "nodes": [{"name","device","start_us","finish_us"}], "device_order": [[..]]}.
[[nodiscard]] std::string placement_to_json(const StepGraph& graph, const Placement& placement);

}  // namespace stepgraph::graphs
