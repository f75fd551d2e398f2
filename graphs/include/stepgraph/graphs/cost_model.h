// stepgraph/graphs/cost_model.h — what a node, a transfer and a collective cost.
//
// Note [Cost model constants]
// * Node: max(estimate(kind) / device.speed, launch_floor(kind)). The floor is
//   the smallest time any node occupies a device: ~2 µs for a kernel node of
//   an instantiated CUDA graph (NVIDIA Technical Blog, "Getting Started with
//   CUDA Graphs", 2019: per-kernel time of short kernels drops to ~2-3 µs in a
//   graph), ~5 µs for a host-backend task (a condition-variable wake-up of a
//   worker thread is a few µs on Linux).
// * Transfer between distinct devices: sync + latency + bytes / bandwidth of
//   the pair's link. `sync` (5 µs default) is the cross-device event
//   record/wait every cross-device dependency costs, even with no bytes.
//   With no bytes only `sync` is paid.
// * Collective (gang node on p devices), α–β ring model (Patarasuk & Yuan,
//   "Bandwidth optimal all-reduce algorithms", JPDC 2009; Thakur,
//   Rabenseifner & Gropp, IJHPCA 2005), at the ring's narrowest link B and
//   α = the ring's largest link latency + a per-step overhead:
//     AllReduce       base + 2(p-1) α + 2 (p-1)/p · bytes / B
//     AllGather,
//     ReduceScatter   base + (p-1) α + (p-1)/p · bytes / B
//     Broadcast       base + (p-1) α + bytes / B          (pipelined ring)
//   base = 6.8 µs and per-step overhead 0.6 µs follow NCCL's ring/LL
//   latencies (src/graph/tuning.cc, baseLat and hwLat for NVLink). The ring
//   order is the greedy widest-neighbour ring, as NCCL searches for rings
//   over the fastest links.
//
// Ownership: holds a reference to the Platform, which must outlive it.
// Thread-safety: const, may be shared between threads. Capture: no CUDA.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/platform.h>

namespace stepgraph::graphs {

struct CostModelOptions {
  /// Indexed by DeviceKind.
  std::array<double, kDeviceKindCount> launch_floor_us{2.0, 5.0};
  double sync_latency_us = 5.0;
  double collective_base_us = 6.8;
  double collective_step_us = 0.6;

  /// Everything zero: costs are exactly the estimates (hand-checked tests,
  /// the HEFT paper's model).
  static CostModelOptions ideal() { return CostModelOptions{{0.0, 0.0}, 0.0, 0.0, 0.0}; }
};

class CostModel {
 public:
  CostModel(const Platform& platform, CostModelOptions options = {});

  [[nodiscard]] const Platform& platform() const noexcept { return *platform_; }
  [[nodiscard]] const CostModelOptions& options() const noexcept { return options_; }

  /// Whether `node` may run on `device` (kind estimate present, pin matches).
  [[nodiscard]] bool can_run(const Node& node, std::size_t device) const noexcept;
  /// Execution time in µs of a non-collective node on `device` (+inf when it
  /// cannot run there). For a collective node, `collective_us()`.
  [[nodiscard]] double node_us(const Node& node, std::size_t device) const noexcept;
  /// Time of a gang node over all devices of the platform.
  [[nodiscard]] double collective_us(const CollectiveSpec& spec) const noexcept;
  /// Dependency cost from `a` to `b` carrying `bytes`; 0 when a == b.
  [[nodiscard]] double transfer_us(std::size_t a, std::size_t b, std::uint64_t bytes) const noexcept;
  /// Mean transfer cost over distinct ordered pairs (HEFT's c̄).
  [[nodiscard]] double mean_transfer_us(std::uint64_t bytes) const noexcept;
  /// The ring used for collectives (device order) and its narrowest link.
  [[nodiscard]] const std::vector<std::size_t>& ring() const noexcept { return ring_; }
  [[nodiscard]] double ring_bandwidth_gbps() const noexcept { return ring_bw_; }

 private:
  const Platform* platform_;
  CostModelOptions options_;
  std::vector<std::size_t> ring_;
  double ring_bw_ = 0;
  double ring_lat_ = 0;
  double mean_lat_ = 0;
  double mean_us_per_byte_ = 0;
};

}  // namespace stepgraph::graphs
