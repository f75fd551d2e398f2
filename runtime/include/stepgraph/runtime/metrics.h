// stepgraph/runtime/metrics.h — counters, gauges and histograms, rendered in
// the Prometheus text exposition format and served over HTTP.
//
// Note [Metrics on the hot path]
// The executor updates its metrics on every replay, so an update is a few
// relaxed atomic operations and nothing else: no lock, no allocation, no
// lookup by name. A metric is looked up (and created) once, by name and
// labels, under the registry's mutex; the caller keeps the reference it gets
// and updates that. Rendering (a scrape) reads the atomics without stopping
// the writers: a histogram's _sum may be one observation ahead of or behind
// its buckets, which Prometheus tolerates (its counts are always consistent:
// _count is the sum of the buckets).
//
// Naming follows Prometheus's conventions (prometheus.io/docs/practices/naming):
// counters end in `_total`; units are base units spelled in the name
// (`_seconds`, `_bytes`); labels are few and low-cardinality. The registry
// checks names and label names and throws InvalidArgument for a bad one, a
// counter without `_total`, or one name registered with two types or two
// help texts.
//
// Ownership: a MetricsRegistry owns its metrics; references it hands out stay
// valid for the registry's lifetime (share the registry through shared_ptr).
// A CallbackHandle owns the registration of a callback gauge and removes it
// when destroyed, after any scrape that is running it has finished.
// MetricsServer owns its listening socket and thread; destroying it stops
// both (bounded: it closes connections after each response).
// Thread-safety: everything here is thread-safe. Counter, Gauge and Histogram
// updates are lock-free; registration, callbacks and render() take the
// registry's mutex (a callback must not register metrics: it would deadlock).
// Capture: no CUDA calls (a gauge callback may make some, at scrape time, on
// the server's thread); safe to call while a stream is capturing.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stepgraph::runtime {

/// Label name → value pairs of one series, e.g. {{"kind", "device_fault"}}.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

/// A value that only goes up (Prometheus counter). Lock-free.
class Counter {
 public:
  /// Adds `v` (>= 0; a negative or NaN `v` is ignored: a counter never falls).
  void inc(double v = 1.0) noexcept {
    if (v >= 0) value_.fetch_add(v, std::memory_order_relaxed);
  }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

/// A value that goes up and down (Prometheus gauge). Lock-free.
class Gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double v) noexcept { value_.fetch_add(v, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

/// Observations counted in buckets with fixed upper bounds (Prometheus
/// histogram: cumulative `le` buckets, `_sum`, `_count`). Lock-free.
class Histogram {
 public:
  /// `bounds`: strictly increasing finite upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void observe(double v) noexcept;
  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }
  /// Per bucket (not cumulative), the last one being +Inf.
  [[nodiscard]] std::vector<std::uint64_t> bucket_counts() const;
  [[nodiscard]] std::uint64_t count() const;
  [[nodiscard]] double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

  /// `count` bounds from `start`, each `factor` times the one before.
  [[nodiscard]] static std::vector<double> exponential_bounds(double start, double factor, int count);

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

enum class MetricType { kCounter, kGauge, kHistogram };
[[nodiscard]] std::string_view to_string(MetricType t) noexcept;

class MetricsRegistry;

/// The registration of a callback gauge; removes it when destroyed.
/// Move-only.
class CallbackHandle {
 public:
  CallbackHandle() = default;
  CallbackHandle(CallbackHandle&& o) noexcept;
  CallbackHandle& operator=(CallbackHandle&& o) noexcept;
  CallbackHandle(const CallbackHandle&) = delete;
  CallbackHandle& operator=(const CallbackHandle&) = delete;
  ~CallbackHandle();
  /// Removes the callback now (waits for a scrape running it).
  void reset();
  [[nodiscard]] bool valid() const noexcept { return !registry_.expired(); }

 private:
  friend class MetricsRegistry;
  std::weak_ptr<MetricsRegistry> registry_;
  std::uint64_t id_ = 0;
};

class MetricsRegistry : public std::enable_shared_from_this<MetricsRegistry> {
 public:
  /// Registries are shared: callback handles refer back to them.
  [[nodiscard]] static std::shared_ptr<MetricsRegistry> create();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  /// The series `name{labels}`, created on first use. `name` must end in
  /// `_total`. The same name and labels give the same object.
  Counter& counter(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const MetricLabels& labels = {});
  /// Every series of one histogram name has the same bounds.
  Histogram& histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                       const MetricLabels& labels = {});
  /// A gauge whose value `fn` computes at every scrape (on the scraping
  /// thread, under the registry's mutex); nullopt leaves the series out of
  /// that scrape. Registered until the handle is destroyed. Registering one
  /// series again queues the new callback behind the first: the oldest one
  /// still registered gives the value (several executors on one device).
  [[nodiscard]] CallbackHandle gauge_callback(std::string_view name, std::string_view help, const MetricLabels& labels,
                                              std::function<std::optional<double>()> fn);

  /// The text exposition format (version 0.0.4): families sorted by name,
  /// each with `# HELP` and `# TYPE`, series sorted by labels.
  [[nodiscard]] std::string render() const;
  /// Content-Type of render()'s text.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  MetricsRegistry() = default;
  friend class CallbackHandle;
  struct Family;
  Family& family(std::string_view name, std::string_view help, MetricType type);  // mutex held
  void remove_callback(std::uint64_t id);

  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_;
  std::uint64_t next_callback_ = 0;
};

struct MetricsServerOptions {
  std::string address = "127.0.0.1";  // loopback unless told otherwise
  int port = 0;                       // 0: an ephemeral port (see MetricsServer::port())
};

/// An HTTP server answering GET /metrics with registry->render() (and 404
/// elsewhere) on one thread of its own. Ports and addresses that cannot be
/// bound throw InvalidArgument; a build without cpp-httplib throws
/// InvalidState.
class MetricsServer {
 public:
  MetricsServer(std::shared_ptr<const MetricsRegistry> registry, MetricsServerOptions options = {});
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  ~MetricsServer();

  /// The bound port (the ephemeral one when options.port was 0).
  [[nodiscard]] int port() const noexcept;
  [[nodiscard]] const std::string& address() const noexcept;
  /// GET /metrics requests answered so far.
  [[nodiscard]] std::uint64_t scrapes() const noexcept;
  /// Waits until at least `n` scrapes were answered; false past `timeout`.
  bool wait_for_scrapes(std::uint64_t n, std::chrono::milliseconds timeout) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace stepgraph::runtime
