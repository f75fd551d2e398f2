#include <stepgraph/graphs/platform.h>

#include <cmath>

#include <stepgraph/core/error.h>

namespace stepgraph::graphs {

Platform::Platform(std::vector<Device> devices, Link default_link) : devices_(std::move(devices)) {
  const std::size_t n = devices_.size();
  for (std::size_t i = 0; i < n; ++i)
    STEPGRAPH_CHECK(std::isfinite(devices_[i].speed) && devices_[i].speed > 0, InvalidArgument,
                    "device {} '{}': speed {} must be a finite number > 0", i, devices_[i].name, devices_[i].speed);
  links_.assign(n * n, default_link);
  numa_.assign(n * n, 20.0);
  for (std::size_t i = 0; i < n; ++i) {
    links_[i * n + i] = Link{INFINITY, 0.0};
    numa_[i * n + i] = 10.0;
  }
}

Platform Platform::uniform(std::size_t n, DeviceKind kind, Link link) {
  std::vector<Device> devices;
  for (std::size_t i = 0; i < n; ++i)
    devices.push_back(Device{std::string(to_string(kind)) + std::to_string(i), kind, 1.0, 0});
  Platform p(std::move(devices), link);
  for (std::size_t i = 0; i < n; ++i) p.numa_[i * n + i] = 10.0;
  return p;
}

void Platform::set_link(std::size_t a, std::size_t b, Link link) {
  STEPGRAPH_CHECK(a < size() && b < size() && a != b, InvalidArgument,
                  "set_link({}, {}): need two distinct device indices below {}", a, b, size());
  STEPGRAPH_CHECK(link.bandwidth_gbps > 0 && !std::isnan(link.bandwidth_gbps) && link.latency_us >= 0 &&
                      std::isfinite(link.latency_us),
                  InvalidArgument,
                  "link {} <-> {}: bandwidth {} GB/s must be > 0 and latency {} us must be finite and >= 0", a, b,
                  link.bandwidth_gbps, link.latency_us);
  links_[a * size() + b] = link;
  links_[b * size() + a] = link;
}

std::uint32_t Platform::add_shared_link(SharedLink link) {
  STEPGRAPH_CHECK(link.bandwidth_gbps > 0 && !std::isnan(link.bandwidth_gbps), InvalidArgument,
                  "shared link '{}': bandwidth {} GB/s must be > 0", link.name, link.bandwidth_gbps);
  shared_.push_back(std::move(link));
  return static_cast<std::uint32_t>(shared_.size() - 1);
}

void Platform::set_route(std::size_t a, std::size_t b, std::vector<std::uint32_t> shared_links) {
  STEPGRAPH_CHECK(a < size() && b < size() && a != b, InvalidArgument,
                  "set_route({}, {}): need two distinct device indices below {}", a, b, size());
  for (auto l : shared_links)
    STEPGRAPH_CHECK(l < shared_.size(), InvalidArgument, "set_route({}, {}): shared link {} does not exist ({} links)",
                    a, b, l, shared_.size());
  if (routes_.empty()) routes_.resize(size() * size());
  routes_[a * size() + b] = std::move(shared_links);
}

void Platform::set_numa_distance(std::size_t a, std::size_t b, double d) {
  STEPGRAPH_CHECK(a < size() && b < size(), InvalidArgument, "set_numa_distance({}, {}): index out of range {}", a, b,
                  size());
  STEPGRAPH_CHECK(std::isfinite(d) && d >= 0, InvalidArgument, "numa distance {} <-> {} is {}; must be >= 0", a, b, d);
  numa_[a * size() + b] = d;
  numa_[b * size() + a] = d;
}

namespace {
template <typename F>
double mean_pairs(const Platform& p, F f) {
  double sum = 0;
  std::size_t count = 0;
  for (std::size_t a = 0; a < p.size(); ++a)
    for (std::size_t b = 0; b < p.size(); ++b)
      if (a != b) {
        sum += f(p.link(a, b));
        ++count;
      }
  return count ? sum / static_cast<double>(count) : 0.0;
}
}  // namespace

double Platform::mean_bandwidth_gbps() const noexcept {
  return mean_pairs(*this, [](const Link& l) { return l.bandwidth_gbps; });
}
double Platform::mean_latency_us() const noexcept {
  return mean_pairs(*this, [](const Link& l) { return l.latency_us; });
}
double Platform::mean_us_per_byte() const noexcept {
  return mean_pairs(*this, [](const Link& l) { return 1.0 / (l.bandwidth_gbps * 1e3); });
}

Platform Platform::without_topology(LinkModel) const {
  Platform p = *this;
  // Harmonic mean keeps the mean transfer time of a byte unchanged.
  const double per_byte = mean_us_per_byte();
  const Link mean{per_byte > 0 ? 1.0 / (per_byte * 1e3) : 1.0, mean_latency_us()};
  for (std::size_t a = 0; a < size(); ++a)
    for (std::size_t b = 0; b < size(); ++b)
      if (a != b) p.links_[a * size() + b] = mean;
  p.shared_.clear();
  p.routes_.clear();
  return p;
}

Platform Platform::subset(const std::vector<std::size_t>& indices) const {
  std::vector<Device> devices;
  for (auto i : indices) {
    STEPGRAPH_CHECK(i < size(), InvalidArgument, "subset: device index {} out of range ({} devices)", i, size());
    devices.push_back(devices_[i]);
  }
  Platform p(std::move(devices));
  const std::size_t m = indices.size();
  for (std::size_t a = 0; a < m; ++a)
    for (std::size_t b = 0; b < m; ++b) {
      p.links_[a * m + b] = link(indices[a], indices[b]);
      p.numa_[a * m + b] = numa_distance(indices[a], indices[b]);
    }
  p.shared_ = shared_;
  if (!routes_.empty())
    for (std::size_t a = 0; a < m; ++a)
      for (std::size_t b = 0; b < m; ++b)
        if (a != b && !route(indices[a], indices[b]).empty()) p.set_route(a, b, route(indices[a], indices[b]));
  return p;
}

}  // namespace stepgraph::graphs
