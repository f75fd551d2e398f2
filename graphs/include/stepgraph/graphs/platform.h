// stepgraph/graphs/platform.h — the device set a graph is placed on.
//
// A Platform is a small, self-contained view of a machine for placement and
// simulation: devices (a kind and a relative compute speed), and for every
// ordered pair a link (bandwidth GB/s, latency µs) and a NUMA distance. It is
// built by hand (tests, what-if studies) or from a topology::CostMatrix
// (`Platform::from_cost_matrix`).
//
// Ownership: value type. Thread-safety: const functions may be called
// concurrently. Capture: no CUDA calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <stepgraph/graphs/graph.h>

namespace stepgraph::topology {
class CostMatrix;
}  // namespace stepgraph::topology

namespace stepgraph::graphs {

/// Which endpoints of a CostMatrix become devices.
enum class EndpointSelection : std::uint8_t {
  kGpus,         ///< every GPU
  kGpusAndNuma,  ///< every GPU, then every NUMA node as a CPU device (mixed set)
  kNuma,         ///< every NUMA node as a CPU device (host backend)
};

struct Device {
  std::string name;
  DeviceKind kind = DeviceKind::kGpu;
  /// Relative compute speed: a node's estimate for this kind is divided by it.
  double speed = 1.0;
  int numa_node = 0;
};

struct Link {
  double bandwidth_gbps = 0;  ///< GB/s (1e9 bytes per second)
  double latency_us = 0;
};

/// How a Platform without topology is derived from one with it.
/// One direction of a physical link that the transfers of several device
/// pairs cross (a PCIe switch's uplink, the inter-socket link, a GPU's
/// links into an NVSwitch fabric). Transfers crossing it at the same time
/// share its bandwidth.
struct SharedLink {
  std::string name;
  double bandwidth_gbps = 0;  ///< one direction, GB/s
};

enum class LinkModel : std::uint8_t {
  /// Every device pair gets the same link: the harmonic-mean bandwidth (so a
  /// byte takes the mean time over the platform's distinct pairs) and the
  /// mean latency ("topology-blind").
  kUniformMean,
};

class Platform {
 public:
  Platform() = default;
  /// Devices with no links yet: every pair starts at `default_link`, NUMA
  /// distance 10 on the diagonal and 20 elsewhere (ACPI SLIT conventions).
  explicit Platform(std::vector<Device> devices, Link default_link = {10.0, 10.0});

  /// The adapter from the topology module: devices in CostMatrix order (GPUs
  /// by index, then NUMA nodes), links = each pair's path bandwidth and
  /// latency, routes = the physical links of each pair's path (shared
  /// links, Note [Routes]), NUMA distance between the devices' nearest NUMA
  /// nodes (20 off the diagonal when unknown). Throws InvalidArgument when the selection
  /// is empty (a topology without GPUs asked for kGpus).
  static Platform from_cost_matrix(const topology::CostMatrix& matrix,
                                   EndpointSelection selection = EndpointSelection::kGpus);

  /// `n` identical devices, all pairs `link`.
  static Platform uniform(std::size_t n, DeviceKind kind, Link link);

  /// Sets a->b and b->a. Throws InvalidArgument for a bad index or a
  /// bandwidth <= 0 / latency < 0 / NaN.
  void set_link(std::size_t a, std::size_t b, Link link);

  /// Note [Routes]
  /// By default every ordered device pair has a private link (`link(a, b)`):
  /// only transfers between the same two devices share it. A route says that
  /// transfers a -> b cross these shared links instead, each shared with
  /// every other transfer crossing it at the same time; link(a, b) stays the
  /// pair's summary (its bandwidth should be the route's narrowest link,
  /// its latency the whole path's). from_cost_matrix() sets the routes of
  /// the recorded machine; without_topology() drops them.
  /// add_shared_link returns the new link's index. InvalidArgument for a
  /// bandwidth <= 0 or NaN.
  std::uint32_t add_shared_link(SharedLink link);
  /// InvalidArgument for a bad device index, a == b, or an unknown link.
  void set_route(std::size_t a, std::size_t b, std::vector<std::uint32_t> shared_links);
  /// The shared links transfers a -> b cross; empty: the pair's private link.
  [[nodiscard]] const std::vector<std::uint32_t>& route(std::size_t a, std::size_t b) const noexcept {
    return routes_.empty() ? kNoRoute : routes_[a * size() + b];
  }
  [[nodiscard]] const std::vector<SharedLink>& shared_links() const noexcept { return shared_; }
  void set_numa_distance(std::size_t a, std::size_t b, double distance);

  [[nodiscard]] std::size_t size() const noexcept { return devices_.size(); }
  [[nodiscard]] const std::vector<Device>& devices() const noexcept { return devices_; }
  [[nodiscard]] const Device& device(std::size_t i) const { return devices_.at(i); }
  [[nodiscard]] const Link& link(std::size_t a, std::size_t b) const noexcept { return links_[a * size() + b]; }
  [[nodiscard]] double numa_distance(std::size_t a, std::size_t b) const noexcept { return numa_[a * size() + b]; }
  /// Mean over ordered pairs a != b (0 / 0 for a single device).
  [[nodiscard]] double mean_bandwidth_gbps() const noexcept;
  [[nodiscard]] double mean_latency_us() const noexcept;
  /// Mean over ordered pairs a != b of 1 / bandwidth, in µs per byte.
  [[nodiscard]] double mean_us_per_byte() const noexcept;

  /// The same devices with every link replaced (see LinkModel) and no
  /// routes: every pair has a private link.
  [[nodiscard]] Platform without_topology(LinkModel model = LinkModel::kUniformMean) const;
  /// The devices `indices` (in that order), their links, routes and
  /// distances.
  [[nodiscard]] Platform subset(const std::vector<std::size_t>& indices) const;

 private:
  std::vector<Device> devices_;
  std::vector<Link> links_;
  std::vector<double> numa_;
  std::vector<SharedLink> shared_;
  std::vector<std::vector<std::uint32_t>> routes_;  // size()² when any route is set
  static inline const std::vector<std::uint32_t> kNoRoute{};
};

}  // namespace stepgraph::graphs
