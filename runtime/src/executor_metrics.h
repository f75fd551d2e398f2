// runtime/src/executor_metrics.h — the StepExecutor's metrics (Note
// [Executor metrics]). Private to the runtime module.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <vector>

#include <stepgraph/runtime/executor.h>
#include <stepgraph/runtime/metrics.h>

namespace stepgraph::runtime::detail {

/// A registry and, where asked for, the server that serves it.
struct MetricsEndpoint {
  std::shared_ptr<MetricsRegistry> registry;
  std::unique_ptr<MetricsServer> server;  // null: served elsewhere (or not at all)
};

/// The endpoint `options` asks for: options.metrics (+ a server on
/// options.metrics_port), a registry and server of its own, the process's
/// shared one (STEPGRAPH_METRICS_PORT), or null (metrics off).
[[nodiscard]] std::shared_ptr<MetricsEndpoint> metrics_endpoint(const ExecutorOptions& options);

/// Bytes one replay moves through each communicator, with the counter they go to.
using CollectiveBytes = std::vector<std::pair<Counter*, double>>;

class ExecutorMetrics {
 public:
  using Clock = std::chrono::steady_clock;
  ExecutorMetrics(MetricsRegistry& registry, const std::shared_ptr<Backend>& backend, int device);

  void started() noexcept { started_->inc(); }
  void queued(double delta) noexcept { queued_->add(delta); }
  /// A step's launch begins at `at` (whether or not it then succeeds).
  void launch_started(Clock::time_point at) noexcept;
  /// A step is on the device.
  void launched() noexcept { in_flight_->add(1); }
  void landed(double n) noexcept { in_flight_->add(-n); }
  /// A replay's handle reached its final status.
  void finished(ReplayStatus status, const std::optional<StepError>& error, Clock::time_point launched_at,
                const CollectiveBytes* collective_bytes) noexcept;
  /// Memory of one executor, added (sign +1) at allocation and taken away
  /// (sign -1) at close, so that executors sharing a registry add up.
  void memory(const MemoryReport& m, double sign) noexcept;
  /// The per-replay collective bytes of a captured graph.
  [[nodiscard]] std::shared_ptr<const CollectiveBytes> collective_bytes(const GraphInfo& graph);
  /// By node index, the seconds counter of each collective node's
  /// communicator; null if the graph has no collective node.
  [[nodiscard]] std::shared_ptr<const std::vector<Counter*>> collective_seconds(const GraphInfo& graph);

 private:
  Counter& failed_counter(StepErrorKind kind);
  MetricsRegistry& registry_;
  Counter* started_;
  Counter* completed_;
  Counter* cancelled_;
  std::array<Counter*, 5> failed_{};  // by StepErrorKind; null for kinds no failed step carries
  Histogram* latency_;
  Histogram* interval_;
  Gauge* queued_;
  Gauge* in_flight_;
  Gauge* arena_bytes_;
  Gauge* arena_used_bytes_;
  Gauge* pinned_bytes_;
  Gauge* state_bytes_;
  std::atomic<std::int64_t> last_launch_ns_{-1};
  CallbackHandle device_memory_;
};

}  // namespace stepgraph::runtime::detail
