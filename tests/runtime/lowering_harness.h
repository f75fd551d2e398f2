// tests/runtime/lowering_harness.h — what the lowering tests share (host
// binary and the gpu-labelled one): graphs with real dataflow built from the
// graphs module's generators, a hand-built Platform of host devices, the
// mix-kernel emitter, and the run that gives every final buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/lowering.h>

namespace sgtest::lowering {

namespace g = stepgraph::graphs;
namespace rt = stepgraph::runtime;

/// The same nodes, costs and edges (with their bytes) as `shape`, plus real
/// dataflow: node i writes its own slice of `act` (elems uint64), reads all
/// or half of each predecessor's slice and one slot of the input `x`; every
/// third node read-writes a slot of `acc`, the nodes sharing a slot chained
/// by extra edges in topological order (several versions of one range, on
/// several devices).
[[nodiscard]] g::StepGraph with_dataflow(const g::StepGraph& shape, std::uint64_t elems = 16);

/// `count` CPU devices built by hand; pairs (0,1) and (2,3) share a fast
/// link, the others are slower (an uneven machine).
[[nodiscard]] g::Platform cpu_platform(int count);

/// Placement with the serial fallback off, so that the nodes really spread.
[[nodiscard]] g::Placement place(const g::StepGraph& graph, const g::Platform& platform, g::Algorithm algorithm);

/// The emitter: for each written range, mix_seed (write) or mix_keep
/// (read-write) with a seed from the node id and the range's index, then
/// mix_in of every range the node reads from another buffer.
[[nodiscard]] rt::NodeEmitter mix_emitter();

/// Deterministic initial contents of buffer `b` (depends on b only).
[[nodiscard]] std::vector<std::byte> initial_contents(const g::StepGraph& graph, g::BufferId b);

/// Uploads the initial contents of every buffer, runs `runs` times, reads
/// every buffer back.
[[nodiscard]] std::vector<std::vector<std::byte>> run_and_read(rt::LoweredGraph& lowered, const g::StepGraph& graph,
                                                               int runs);

/// The independent reference: the single-device lowering on a fresh host
/// backend with one device, no shuffle.
[[nodiscard]] std::vector<std::vector<std::byte>> reference(const g::StepGraph& graph, int runs,
                                                            const rt::LoweringOptions& options = {});

/// Number of distinct devices the placement uses (collectives not counted).
[[nodiscard]] int devices_used(const g::StepGraph& graph, const g::Placement& placement);

}  // namespace sgtest::lowering
