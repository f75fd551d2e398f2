// The StepExecutor's metrics (executor_metrics.h).
//
// Note [Executor metrics]
// What an executor with metrics on reports (docs/observability.md lists them
// as scraped):
//   stepgraph_steps_started_total            replay() calls that took a step number
//   stepgraph_steps_completed_total          steps whose handle ended done
//   stepgraph_steps_failed_total{kind}       steps whose handle ended failed, by StepErrorKind
//   stepgraph_steps_cancelled_total          steps cancelled (by the caller, a failure, close)
//   stepgraph_replay_latency_seconds         histogram: handed to the device -> seen complete
//   stepgraph_replay_interval_seconds        histogram: between the starts of consecutive launches
//   stepgraph_replays_queued                 replays waiting beyond launch_ahead
//   stepgraph_replays_in_flight              replays on the device
//   stepgraph_arena_bytes, _arena_used_bytes, stepgraph_pinned_bytes, stepgraph_state_bytes
//   stepgraph_collective_bytes_total{communicator}  bytes the replays' collective nodes moved
//   stepgraph_collective_seconds_total{communicator} time they took (host backend: start to completion)
//   stepgraph_device_memory_used_bytes{device}       cuda: cudaMemGetInfo, at scrape time
// Every hot-path update is one or two relaxed atomics on objects looked up
// at construction (Note [Metrics on the hot path], metrics.h); the gauges
// are adjusted by deltas so that executors sharing a registry add up.
#include "executor_metrics.h"

#include <map>

#include <fmt/format.h>

#include <stepgraph/core/env.h>
#include <stepgraph/core/log.h>

namespace stepgraph::runtime::detail {

namespace {

const env::Param<int> kMetricsPort{
    "STEPGRAPH_METRICS_PORT", -1,
    "serve every StepExecutor's metrics (one shared registry) at http://127.0.0.1:PORT/metrics; -1: off, 0: an "
    "ephemeral port (logged)"};

/// The process's shared endpoint for STEPGRAPH_METRICS_PORT: made by the
/// first executor that needs it, gone with the last.
std::shared_ptr<MetricsEndpoint> shared_env_endpoint(int port) {
  static std::mutex mutex;
  static std::weak_ptr<MetricsEndpoint> shared;
  std::lock_guard lock(mutex);
  if (auto e = shared.lock()) return e;
  auto e = std::make_shared<MetricsEndpoint>();
  e->registry = MetricsRegistry::create();
  MetricsServerOptions so;
  so.port = port;
  e->server = std::make_unique<MetricsServer>(e->registry, so);
  STEPGRAPH_INFO(kExecutor, "{}: metrics at http://{}:{}/metrics", kMetricsPort.name(), e->server->address(),
                 e->server->port());
  shared = e;
  return e;
}

constexpr double kLatencyStart = 10e-6;  // 10 us ... ~ 42 s, factor 2
constexpr int kLatencyBuckets = 23;

}  // namespace

std::shared_ptr<MetricsEndpoint> metrics_endpoint(const ExecutorOptions& options) {
  if (options.metrics || options.metrics_port >= 0) {
    auto e = std::make_shared<MetricsEndpoint>();
    e->registry = options.metrics ? options.metrics : MetricsRegistry::create();
    if (options.metrics_port >= 0) {
      MetricsServerOptions so;
      so.address = options.metrics_address;
      so.port = options.metrics_port;
      e->server = std::make_unique<MetricsServer>(e->registry, so);
    }
    return e;
  }
  if (const int port = kMetricsPort.get(); port >= 0) return shared_env_endpoint(port);
  return nullptr;
}

ExecutorMetrics::ExecutorMetrics(MetricsRegistry& r, const std::shared_ptr<Backend>& backend, int device)
    : registry_(r),
      started_(&r.counter("stepgraph_steps_started_total", "Steps asked for with replay() (warm-ups included)")),
      completed_(&r.counter("stepgraph_steps_completed_total", "Steps whose replay handle ended done")),
      cancelled_(&r.counter("stepgraph_steps_cancelled_total",
                            "Steps cancelled before reaching the device (by the caller, a failure or close)")),
      latency_(&r.histogram("stepgraph_replay_latency_seconds",
                            "Time from handing a step to the device to seeing it complete",
                            Histogram::exponential_bounds(kLatencyStart, 2, kLatencyBuckets))),
      interval_(&r.histogram("stepgraph_replay_interval_seconds", "Time between the launches of consecutive steps",
                             Histogram::exponential_bounds(kLatencyStart, 2, kLatencyBuckets))),
      queued_(&r.gauge("stepgraph_replays_queued", "Replays asked for and waiting beyond launch_ahead")),
      in_flight_(&r.gauge("stepgraph_replays_in_flight", "Replays handed to the device and not yet seen complete")),
      arena_bytes_(&r.gauge("stepgraph_arena_bytes", "Device arena capacity, allocated before warm-up")),
      arena_used_bytes_(&r.gauge("stepgraph_arena_used_bytes", "Device arena bytes given to buffers")),
      pinned_bytes_(&r.gauge("stepgraph_pinned_bytes", "Pinned host memory of every slot (inputs, outputs, scalars)")),
      state_bytes_(&r.gauge("stepgraph_state_bytes", "Device memory of the state shared by all steps")) {
  // The kinds a failed handle carries; a cancelled step counts as
  // cancelled, and a throwing callback does not fail its step.
  for (auto k : {StepErrorKind::kDeviceFault, StepErrorKind::kTimeout, StepErrorKind::kCollective})
    failed_[static_cast<std::size_t>(k)] = &failed_counter(k);
  if (backend->kind() == BackendKind::kCuda) {
    std::weak_ptr<Backend> weak = backend;
    device_memory_ = r.gauge_callback("stepgraph_device_memory_used_bytes",
                                      "Device memory in use (cudaMemGetInfo: total - free), at scrape time",
                                      {{"device", std::to_string(device)}}, [weak, device]() -> std::optional<double> {
                                        auto b = weak.lock();
                                        if (!b) return std::nullopt;
                                        const auto used = b->memory_in_use(device);
                                        return used ? std::optional<double>(static_cast<double>(*used)) : std::nullopt;
                                      });
  }
}

Counter& ExecutorMetrics::failed_counter(StepErrorKind kind) {
  const char* label = "device_fault";
  switch (kind) {
    case StepErrorKind::kDeviceFault:
      break;
    case StepErrorKind::kTimeout:
      label = "timeout";
      break;
    case StepErrorKind::kCollective:
      label = "collective";
      break;
    case StepErrorKind::kCancelled:
      label = "cancelled";
      break;
    case StepErrorKind::kCallback:
      label = "callback";
      break;
  }
  return registry_.counter("stepgraph_steps_failed_total", "Steps whose replay handle ended failed, by error kind",
                           {{"kind", label}});
}

void ExecutorMetrics::launch_started(Clock::time_point at) noexcept {
  const std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  const std::int64_t prev = last_launch_ns_.exchange(ns, std::memory_order_relaxed);
  if (prev >= 0 && ns >= prev) interval_->observe(static_cast<double>(ns - prev) * 1e-9);
}

void ExecutorMetrics::finished(ReplayStatus status, const std::optional<StepError>& error,
                               Clock::time_point launched_at, const CollectiveBytes* collective_bytes) noexcept {
  switch (status) {
    case ReplayStatus::kDone:
      completed_->inc();
      if (launched_at != Clock::time_point{})
        latency_->observe(std::chrono::duration<double>(Clock::now() - launched_at).count());
      if (collective_bytes != nullptr)
        for (const auto& [counter, bytes] : *collective_bytes) counter->inc(bytes);
      break;
    case ReplayStatus::kFailed: {
      const auto kind = error ? error->kind : StepErrorKind::kDeviceFault;
      if (kind == StepErrorKind::kCancelled)
        cancelled_->inc();
      else if (auto* c = failed_[static_cast<std::size_t>(kind)])
        c->inc();
      break;
    }
    case ReplayStatus::kCancelled:
      cancelled_->inc();
      break;
    default:
      break;
  }
}

void ExecutorMetrics::memory(const MemoryReport& m, double sign) noexcept {
  arena_bytes_->add(sign * static_cast<double>(m.arena_bytes));
  arena_used_bytes_->add(sign * static_cast<double>(m.arena_used));
  pinned_bytes_->add(sign * static_cast<double>(m.pinned_bytes));
  state_bytes_->add(sign * static_cast<double>(m.state_bytes));
}

std::shared_ptr<const CollectiveBytes> ExecutorMetrics::collective_bytes(const GraphInfo& graph) {
  std::map<std::uint64_t, double> per_comm;
  for (const auto& n : graph.nodes) {
    if (!n.collective) continue;
    const auto& c = *n.collective;
    // What this rank sends: count elements (all_gather: its own part;
    // reduce_scatter: world_size parts), of the dtype's size.
    double elements = static_cast<double>(c.count);
    if (c.op == "reduce_scatter") elements *= std::max(1, c.world_size);
    std::size_t size = 4;
    for (auto t : {DType::kFloat32, DType::kFloat64, DType::kInt32, DType::kInt64, DType::kUInt8, DType::kFloat16,
                   DType::kBFloat16})
      if (to_string(t) == c.dtype) size = dtype_size(t);
    per_comm[c.communicator] += elements * static_cast<double>(size);
  }
  auto out = std::make_shared<CollectiveBytes>();
  for (const auto& [comm, bytes] : per_comm)
    out->emplace_back(&registry_.counter("stepgraph_collective_bytes_total",
                                         "Bytes this rank's replayed collective nodes sent, per communicator",
                                         {{"communicator", std::to_string(comm)}}),
                      bytes);
  return out;
}

std::shared_ptr<const std::vector<Counter*>> ExecutorMetrics::collective_seconds(const GraphInfo& graph) {
  auto out = std::make_shared<std::vector<Counter*>>(graph.nodes.size(), nullptr);
  bool any = false;
  for (std::size_t i = 0; i < graph.nodes.size(); ++i) {
    const auto& c = graph.nodes[i].collective;
    if (!c) continue;
    (*out)[i] = &registry_.counter("stepgraph_collective_seconds_total",
                                   "Seconds this rank's replayed collective nodes took, start to completion (host "
                                   "backend), per communicator",
                                   {{"communicator", std::to_string(c->communicator)}});
    any = true;
  }
  return any ? out : nullptr;
}

}  // namespace stepgraph::runtime::detail
