// stepgraph/graphs/simulator.h — discrete-event step-time simulator.
//
// One simulator, in virtual time, judges every placement algorithm:
// * each device runs one node at a time, its nodes taken in
//   `Placement::device_order` priority among those whose inputs have arrived
//   (or strictly in that order, DeviceDispatch::kStrict); a gang node starts
//   when its inputs have arrived on every device and every device took it;
// * node durations come from the CostModel;
// * a cross-device edge becomes a transfer on the directed link a -> b: first
//   a fixed delay (sync latency, plus the link latency when bytes > 0), then
//   the bytes flow at the link's bandwidth shared equally among the
//   transfers on that link at that moment (fluid fair sharing), so transfers
//   that cross one link at the same time slow each other down. Edges into a
//   gang node are a synchronisation to every other device (the collective's
//   own cost moves its bytes); edges out of a gang node are free (its
//   result is on every device).
// The placement's own start times are ignored: only device and order count.
// The makespan is deterministic for a given input.
//
// Ownership: the result is a value. Thread-safety: simulate() is reentrant;
// a Simulator is not thread-safe (one per thread). Capture: no CUDA calls,
// safe to call at any time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <stepgraph/graphs/cost_model.h>
#include <stepgraph/graphs/placement.h>

namespace stepgraph::graphs {

enum class TraceOutput : std::uint8_t { kNone, kChromeJson };

/// How a device picks its next node (Note [Device dispatch] in simulator.cpp).
enum class DeviceDispatch : std::uint8_t {
  /// Among the device's nodes whose inputs have arrived, the earliest in its
  /// Placement::device_order list: a lowered per-device graph, where only
  /// edges order work.
  kReadyFirst,
  /// Exactly the device_order list: a late input blocks the device.
  kStrict,
};

struct SimulateOptions {
  CostModelOptions cost{};
  /// Chrome / Perfetto trace-event JSON in SimResult::trace_json (open it in
  /// chrome://tracing or ui.perfetto.dev).
  TraceOutput trace = TraceOutput::kNone;
  DeviceDispatch dispatch = DeviceDispatch::kReadyFirst;
};

struct SimResult {
  double makespan_us = 0;
  std::vector<ScheduledNode> nodes;  ///< simulated start/finish per node
  std::vector<double> busy_us;       ///< per device (gang nodes count on each)
  std::vector<double> utilization;   ///< busy / makespan per device
  std::size_t transfers = 0;         ///< cross-device edges simulated
  double transfer_bytes = 0;
  std::string trace_json;  ///< set when options.trace != kNone
};

/// Throws InvalidArgument when the placement does not match the graph or the
/// platform (sizes, device indices) and InvalidState when the device orders
/// deadlock (an order that contradicts the edges).
[[nodiscard]] SimResult simulate(const StepGraph& graph, const Platform& platform, const Placement& placement,
                                 const SimulateOptions& options = {});

/// simulate() prepared for many placements of one graph on one platform
/// (Note [Prepared simulator] in simulator.cpp): the adjacency, durations,
/// routes and link rates are built once and each run() reuses the buffers
/// of the last. run(pl) returns exactly what simulate(graph, platform, pl,
/// options) returns, and throws the same errors.
/// Ownership: keeps references to `graph` and `platform`, which must outlive
/// it and must not change while it exists. Thread-safety: none (run()
/// writes the shared buffers); use one per thread. Capture: no CUDA calls.
class Simulator {
 public:
  /// Throws InvalidArgument for an empty platform or a dangling edge.
  Simulator(const StepGraph& graph, const Platform& platform, const SimulateOptions& options = {});
  ~Simulator();
  Simulator(Simulator&&) noexcept;
  Simulator& operator=(Simulator&&) noexcept;
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  [[nodiscard]] SimResult run(const Placement& placement);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stepgraph::graphs
