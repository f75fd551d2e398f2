#include <stepgraph/graphs/cost_model.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

CostModel::CostModel(const Platform& platform, CostModelOptions options) : platform_(&platform), options_(options) {
  STEPGRAPH_CHECK(platform.size() > 0, InvalidArgument, "the device set is empty; give placement at least one device");
  const std::size_t p = platform.size();
  mean_lat_ = platform.mean_latency_us();
  mean_us_per_byte_ = platform.mean_us_per_byte();
  // Greedy widest-neighbour ring from every start; keep the widest bottleneck.
  ring_bw_ = -1;
  for (std::size_t start = 0; start < p; ++start) {
    std::vector<std::size_t> ring{start};
    std::vector<bool> used(p, false);
    used[start] = true;
    while (ring.size() < p) {
      std::size_t best = p;
      for (std::size_t c = 0; c < p; ++c)
        if (!used[c] && (best == p || platform.link(ring.back(), c).bandwidth_gbps >
                                          platform.link(ring.back(), best).bandwidth_gbps))
          best = c;
      used[best] = true;
      ring.push_back(best);
    }
    double bw = std::numeric_limits<double>::infinity();
    double lat = 0;
    if (p > 1)
      for (std::size_t i = 0; i < p; ++i) {
        const Link& l = platform.link(ring[i], ring[(i + 1) % p]);
        bw = std::min(bw, l.bandwidth_gbps);
        lat = std::max(lat, l.latency_us);
      }
    if (bw > ring_bw_) {
      ring_bw_ = bw;
      ring_lat_ = lat;
      ring_ = ring;
    }
  }
}

bool CostModel::can_run(const Node& node, std::size_t device) const noexcept {
  if (node.pinned_device && static_cast<std::size_t>(*node.pinned_device) != device) return false;
  if (node.kind == NodeKind::kCollective) return true;
  return node.cost.runs_on(platform_->device(device).kind);
}

double CostModel::node_us(const Node& node, std::size_t device) const noexcept {
  if (node.kind == NodeKind::kCollective && node.collective) return collective_us(*node.collective);
  const Device& d = platform_->devices()[device];
  const auto est = node.cost.get(d.kind);
  if (!est) return std::numeric_limits<double>::infinity();
  return std::max(*est / d.speed, options_.launch_floor_us[static_cast<std::size_t>(d.kind)]);
}

double CostModel::collective_us(const CollectiveSpec& spec) const noexcept {
  const double p = static_cast<double>(platform_->size());
  double floor = 0;
  for (const auto& d : platform_->devices())
    floor = std::max(floor, options_.launch_floor_us[static_cast<std::size_t>(d.kind)]);
  if (p <= 1) return floor;
  const double alpha = ring_lat_ + options_.collective_step_us;
  const double us_per_byte = 1.0 / (ring_bw_ * 1e3);
  const double bytes = static_cast<double>(spec.bytes);
  double t = options_.collective_base_us;
  switch (spec.op) {
    case CollectiveOp::kAllReduce:
      t += 2 * (p - 1) * alpha + 2 * (p - 1) / p * bytes * us_per_byte;
      break;
    case CollectiveOp::kAllGather:
    case CollectiveOp::kReduceScatter:
      t += (p - 1) * alpha + (p - 1) / p * bytes * us_per_byte;
      break;
    case CollectiveOp::kBroadcast:
      t += (p - 1) * alpha + bytes * us_per_byte;
      break;
  }
  return std::max(t, floor);
}

double CostModel::transfer_us(std::size_t a, std::size_t b, std::uint64_t bytes) const noexcept {
  if (a == b) return 0;
  if (bytes == 0) return options_.sync_latency_us;
  const Link& l = platform_->link(a, b);
  return options_.sync_latency_us + l.latency_us + static_cast<double>(bytes) / (l.bandwidth_gbps * 1e3);
}

double CostModel::mean_transfer_us(std::uint64_t bytes) const noexcept {
  if (platform_->size() <= 1) return 0;
  if (bytes == 0) return options_.sync_latency_us;
  return options_.sync_latency_us + mean_lat_ + static_cast<double>(bytes) * mean_us_per_byte_;
}

}  // namespace stepgraph::graphs
