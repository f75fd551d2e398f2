// The StepExecutor (executor.h). See Note [Host code runs at warm-up and
// capture only] there.
//
// Note [Executor threads and streams]
// One stream carries every step: warm-ups, captures (the stream is the
// capture's origin) and replays. Replays therefore run one after another and
// never race on the shared state buffers; slots let the caller fill the next
// inputs and read the last outputs while a step runs. Each launched replay
// records its slot's event; the executor's own thread waits on those events
// in launch order (never through cudaLaunchHostFunc, which is not called
// after a fault), completes handles, runs callbacks, launches replays queued
// beyond `launch_ahead`, and enforces the per-replay deadline (watchdog).
#include <stepgraph/runtime/executor.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <thread>

#include <stepgraph/core/log.h>

#include "deferred_release.h"
#include "executor_metrics.h"
#include "nvtx.h"
#include "trace_launch.h"

namespace stepgraph::runtime {

std::string_view to_string(ExecutorState s) noexcept {
  switch (s) {
    case ExecutorState::kCreated:
      return "created";
    case ExecutorState::kWarmingUp:
      return "warming up";
    case ExecutorState::kCaptured:
      return "captured";
    case ExecutorState::kReady:
      return "ready";
    case ExecutorState::kFailed:
      return "failed";
    case ExecutorState::kClosed:
      return "closed";
  }
  return "?";
}
std::string_view to_string(StepErrorKind k) noexcept {
  switch (k) {
    case StepErrorKind::kDeviceFault:
      return "device fault";
    case StepErrorKind::kTimeout:
      return "timeout";
    case StepErrorKind::kCancelled:
      return "cancelled";
    case StepErrorKind::kCallback:
      return "callback exception";
    case StepErrorKind::kCollective:
      return "collective error";
  }
  return "?";
}
std::string_view to_string(ReplayStatus s) noexcept {
  switch (s) {
    case ReplayStatus::kQueued:
      return "queued";
    case ReplayStatus::kRunning:
      return "running";
    case ReplayStatus::kDone:
      return "done";
    case ReplayStatus::kFailed:
      return "failed";
    case ReplayStatus::kCancelled:
      return "cancelled";
    case ReplayStatus::kClosed:
      return "closed";
  }
  return "?";
}
double EagerCheck::worst() const {
  double w = 0;
  for (const auto& [name, d] : max_abs_diff) w = std::max(w, d);
  return w;
}

// ------------------------------------------------------------------ arena

DeviceArena::DeviceArena(Backend& backend, int device, std::size_t bytes)
    : memory_(backend.allocate(device, std::max<std::size_t>(bytes, 256))),
      device_(device),
      capacity_(std::max<std::size_t>(bytes, 256)) {}

Buffer DeviceArena::allocate(std::size_t bytes, std::string_view name, std::size_t alignment) {
  STEPGRAPH_CHECK(bytes > 0, InvalidArgument, "DeviceArena::allocate: buffer '{}' has zero bytes", name);
  std::lock_guard lock(mutex_);
  const std::size_t offset = aligned(used_, alignment);
  STEPGRAPH_CHECK(offset + bytes <= capacity_, InvalidState,
                  "the arena of device {} ({} bytes, {} used) cannot hold '{}' ({} bytes); size it for every "
                  "buffer before warm-up",
                  device_, capacity_, used_, name, bytes);
  used_ = offset + bytes;
  return sub_buffer(memory_, offset, bytes);
}

std::size_t DeviceArena::used() const noexcept {
  std::lock_guard lock(mutex_);
  return used_;
}

namespace detail {

// ------------------------------------------------------------------ state

enum class SlotState { kFree, kAcquired, kBusy };

struct Slot {
  SlotState state = SlotState::kFree;
  std::vector<Buffer> inputs;         // pinned
  std::vector<Buffer> inputs_device;  // copy-in device copies (invalid for zero-copy inputs)
  std::vector<Buffer> outputs;        // pinned
  std::vector<Buffer> scratch;        // device
  Buffer scalars;                     // pinned StepScalars
  std::shared_ptr<Event> done;        // shared with the replays that record it
  // Traced executors: recorded before each replay's launch.
  std::shared_ptr<Event> trace_start;
};

struct Bucket {
  std::uint64_t key = 0;
  std::vector<Graph> graphs;  // per slot
  std::vector<GraphExec> execs;
  std::uint64_t last_use = 0;
  std::shared_ptr<const CollectiveBytes> collective_bytes;  // metrics on: per replay, per communicator
  // Metrics on and collective nodes in the graph: what times them (the
  // slots' graphs come from one step function: same nodes, same order).
  std::shared_ptr<const LaunchTrace> collective_timing;
};

struct ReplayState {
  std::mutex mutex;
  std::condition_variable cv;
  ReplayStatus status = ReplayStatus::kQueued;
  std::int64_t step = -1;
  int slot = -1;
  std::uint64_t shape_key = 0;
  std::optional<StepError> error;
  std::vector<std::function<void(const ReplayHandle&)>> callbacks;
  bool released = false;
  std::weak_ptr<ExecutorCore> core;
  std::chrono::steady_clock::time_point launched_at;
  StepScalars scalars;          // fixed when the replay was asked for
  std::shared_ptr<Event> done;  // recorded after the step (set at launch)
  std::vector<Buffer> outputs;  // views of the slot's outputs: valid for the handle's life
  // Metrics on, graph replays: the bytes each communicator moves per replay.
  std::shared_ptr<const CollectiveBytes> collective_bytes;
  std::shared_ptr<Event> trace_start;  // traced graph replays
};

struct ExecutorCore : std::enable_shared_from_this<ExecutorCore> {
  ExecutorCore(StepSpec s, StepFunction f, ExecutorOptions o);

  // configuration
  StepSpec spec;
  StepFunction step_fn;
  ExecutorOptions options;
  std::shared_ptr<Backend> backend;
  std::shared_ptr<CollectiveOps> collectives;
  int device = 0;

  // resources, released in reverse order of creation: buckets (exec, graph),
  // then slots and arena (memory)
  std::unique_ptr<DeviceArena> arena;
  std::vector<Buffer> state_buffers;
  std::vector<Slot> slots;
  Stream stream;
  std::list<Bucket> buckets;

  // lifecycle
  mutable std::mutex mutex;  // guards everything below and the slots' states
  std::condition_variable cv;
  std::condition_variable thread_cv;  // wakes the executor's thread only (Note [Quiet executor thread])
  std::mutex launch_mutex;            // serialises work on the stream (launch, capture, warm-up)
  ExecutorState state = ExecutorState::kCreated;
  std::optional<StepError> failure;
  bool allocated = false;
  int warmups_done = 0;
  std::int64_t next_step = 0;
  std::uint64_t use_clock = 0;
  StepScalars next_scalars;
  std::uint64_t rng_increment = 1;
  std::deque<std::shared_ptr<ReplayState>> queued;    // asked for, not launched (cancellable)
  std::deque<std::shared_ptr<ReplayState>> launched;  // on the device, in stream order
  std::deque<std::function<void()>> posted;           // to run on the executor thread
  bool stop = false;
  std::thread thread;
  std::atomic<std::thread::id> thread_id{};  // read without the mutex

  // observability: null when off (Note [Executor metrics], Note [Replay traces])
  std::shared_ptr<MetricsEndpoint> metrics_endpoint;
  std::unique_ptr<ExecutorMetrics> metrics;  // destroyed before its endpoint
  std::shared_ptr<TraceRecorder> trace;
  int trace_stream_track = 0;
  int trace_events_track = 0;
  Event trace_anchor;  // recorded once, when the host time was trace_anchor_host
  std::chrono::steady_clock::time_point trace_anchor_host;

  // --- helpers
  void allocate_memory();
  StepContext context(int slot, std::uint64_t key, bool capturing);
  void run_step_eagerly(int slot, std::uint64_t key);
  Bucket& bucket(std::uint64_t key);
  void capture_bucket(Bucket& b);
  void launch(const std::shared_ptr<ReplayState>& r);  // launch_mutex held
  void thread_main();
  void finish(const std::shared_ptr<ReplayState>& r, ReplayStatus status, std::optional<StepError> error);
  /// The waiter's fast path: completes a replay whose event the caller saw
  /// complete, unless it has callbacks (those run on the executor's thread).
  bool finish_from_waiter(const std::shared_ptr<ReplayState>& r);
  void fail(const StepError& e);
  /// The first half of fail(): the state (kFailed, failure) alone; true the
  /// first time. A failed replay's handle is completed between the two
  /// halves, so that a waiter woken by the handle sees the executor failed,
  /// and the error callback (second half) runs with the handle final — a
  /// callback that waits on it must not find it running.
  bool mark_failed(const StepError& e);
  void after_failed(const StepError& e);
  void report(const StepError& e);
  void check_usable(std::string_view what) const;  // mutex held
  std::size_t index_of(const std::vector<BufferSpec>& specs, std::string_view name, std::string_view what) const;
  void post(std::function<void()> fn);
  StepError fault_error(std::int64_t step, const DeviceFault& fault) const;
  bool cancel_behind_a_fault(const std::shared_ptr<ReplayState>& r, const DeviceFault& fault);
  void close();
  [[nodiscard]] MemoryReport memory() const;  // launch_mutex held
  /// A span on the calling thread's track, when traced.
  void trace_span(std::string name, std::chrono::steady_clock::time_point begin, std::int64_t step);
  /// The replay's span from its two events (Note [Replay traces]), when traced.
  void trace_device_span(const ReplayState& r);
};

ExecutorCore::ExecutorCore(StepSpec s, StepFunction f, ExecutorOptions o)
    : spec(std::move(s)), step_fn(std::move(f)), options(std::move(o)) {
  STEPGRAPH_CHECK(static_cast<bool>(step_fn), InvalidArgument, "StepExecutor: the step function is empty");
  STEPGRAPH_CHECK(options.max_in_flight >= 1, InvalidArgument, "StepExecutor: max_in_flight is {}; give at least 1",
                  options.max_in_flight);
  STEPGRAPH_CHECK(options.launch_ahead >= 1, InvalidArgument, "StepExecutor: launch_ahead is {}; give at least 1",
                  options.launch_ahead);
  STEPGRAPH_CHECK(options.warmup >= 0, InvalidArgument, "StepExecutor: warmup is {}; give 0 or more", options.warmup);
  STEPGRAPH_CHECK(options.max_shape_buckets >= 1, InvalidArgument,
                  "StepExecutor: max_shape_buckets must be at least 1");
  auto check_specs = [](const std::vector<BufferSpec>& v, std::string_view kind) {
    for (std::size_t i = 0; i < v.size(); ++i) {
      STEPGRAPH_CHECK(!v[i].name.empty(), InvalidArgument, "StepSpec: {} buffer #{} has no name", kind, i);
      STEPGRAPH_CHECK(v[i].bytes > 0, InvalidArgument, "StepSpec: {} buffer '{}' has zero bytes", kind, v[i].name);
      for (std::size_t j = 0; j < i; ++j)
        STEPGRAPH_CHECK(v[j].name != v[i].name, InvalidArgument, "StepSpec: two {} buffers are called '{}'", kind,
                        v[i].name);
    }
  };
  check_specs(spec.inputs, "input");
  check_specs(spec.outputs, "output");
  check_specs(spec.state, "state");
  check_specs(spec.scratch, "scratch");
  backend =
      options.backend_instance ? options.backend_instance : Backend::create(options.backend, options.backend_options);
  STEPGRAPH_CHECK(options.device >= 0 && options.device < backend->device_count(), InvalidArgument,
                  "StepExecutor: device {} does not exist on the {} backend ({} device(s))", options.device,
                  backend->name(), backend->device_count());
  device = options.device;
  collectives = options.collectives ? options.collectives : std::make_shared<SingleDeviceCollectives>();
  next_scalars = options.initial_scalars;
  metrics_endpoint = detail::metrics_endpoint(options);
  if (metrics_endpoint) metrics = std::make_unique<ExecutorMetrics>(*metrics_endpoint->registry, backend, device);
  trace = options.trace;
  if (trace) {
    trace_stream_track = trace->track(fmt::format("{} device {} stream", backend->name(), device));
    trace_events_track = trace->track(fmt::format("{} device {} stream (events)", backend->name(), device));
  }
}

// The replay's span as its device timed it: the events recorded before the
// launch and after it, placed on the host clock through the anchor event
// (recorded once, on an idle stream, right before the host read its clock).
// Both backends; on cuda this is the only per-replay span (Note [Replay
// traces]).
void ExecutorCore::trace_device_span(const ReplayState& r) {
  if (!trace || !r.trace_start || !r.done) return;
  try {
    const auto at = [&](const Event& e) {
      return trace_anchor_host + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                     std::chrono::duration<double, std::milli>(Event::elapsed_ms(trace_anchor, e)));
    };
    trace->span(trace_events_track, fmt::format("replay {}", r.step), "replay_events", at(*r.trace_start), at(*r.done),
                {{"step", r.step}});
  } catch (const std::exception& e) {
    STEPGRAPH_DEBUG(kExecutor, "trace: no device span for step {}: {}", r.step, e.what());
  }
}

void ExecutorCore::trace_span(std::string name, std::chrono::steady_clock::time_point begin, std::int64_t step) {
  if (trace)
    trace->span(trace->thread_track(), std::move(name), "executor", begin, std::chrono::steady_clock::now(),
                {{"step", step}});
}

void ExecutorCore::allocate_memory() {
  if (allocated) return;
  // Note [Arena]: every device byte the step uses is sized here and taken
  // from one allocation made before the warm-up; nothing is allocated
  // during capture.
  std::size_t bytes = 0;
  for (const auto& b : spec.state) bytes += DeviceArena::aligned(b.bytes);
  std::size_t per_slot = 0;
  for (const auto& b : spec.scratch) per_slot += DeviceArena::aligned(b.bytes);
  for (const auto& b : spec.inputs)
    if (b.mode == InputMode::kCopyIn) per_slot += DeviceArena::aligned(b.bytes);
  bytes += per_slot * static_cast<std::size_t>(options.max_in_flight);
  arena = std::make_unique<DeviceArena>(*backend, device, bytes);
  for (const auto& b : spec.state) {
    state_buffers.push_back(arena->allocate(b.bytes, b.name));
  }
  const int numa = backend->device(device).numa_node;
  stream = backend->create_stream(device);
  slots.resize(static_cast<std::size_t>(options.max_in_flight));
  for (auto& s : slots) {
    for (const auto& b : spec.inputs) {
      s.inputs.push_back(backend->allocate_pinned(b.bytes, numa));
      std::memset(s.inputs.back().host_data(), 0, b.bytes);
      s.inputs_device.push_back(b.mode == InputMode::kCopyIn ? arena->allocate(b.bytes, b.name) : Buffer{});
    }
    for (const auto& b : spec.outputs) {
      s.outputs.push_back(backend->allocate_pinned(b.bytes, numa));
      std::memset(s.outputs.back().host_data(), 0, b.bytes);
    }
    for (const auto& b : spec.scratch) s.scratch.push_back(arena->allocate(b.bytes, b.name));
    s.scalars = backend->allocate_pinned(sizeof(StepScalars), numa);
    std::memcpy(s.scalars.host_data(), &next_scalars, sizeof(StepScalars));
    s.done = std::make_shared<Event>(backend->create_event(device));
    if (trace) s.trace_start = std::make_shared<Event>(backend->create_event(device));
  }
  if (trace) {
    trace_anchor = backend->create_event(device);
    stream.record(trace_anchor);
    trace_anchor.synchronize();
    trace_anchor_host = std::chrono::steady_clock::now();
  }
  allocated = true;
  if (metrics) metrics->memory(memory(), 1);
  thread = std::thread([this] {
    if (trace) trace->name_this_thread("executor thread");
    thread_main();
  });
  thread_id = thread.get_id();
  STEPGRAPH_INFO(kExecutor, "executor on {} device {}: arena {} bytes, {} slot(s)", backend->name(), device, bytes,
                 slots.size());
}

std::size_t ExecutorCore::index_of(const std::vector<BufferSpec>& specs, std::string_view name,
                                   std::string_view what) const {
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (specs[i].name == name) return i;
  throw InvalidArgument(fmt::format("no {} buffer is called '{}'; declare it in the StepSpec", what, name));
}

StepContext ExecutorCore::context(int slot, std::uint64_t key, bool capturing) {
  StepContext ctx;
  ctx.core_ = this;
  ctx.stream_ = stream;
  ctx.backend_ = backend.get();
  ctx.collectives_ = collectives.get();
  ctx.device_ = device;
  ctx.slot_ = slot;
  ctx.shape_key_ = key;
  ctx.capturing_ = capturing;
  return ctx;
}

/// The copy nodes of copy-in inputs, then the step function.
void ExecutorCore::run_step_eagerly(int slot, std::uint64_t key) {
  auto& s = slots[static_cast<std::size_t>(slot)];
  for (std::size_t i = 0; i < spec.inputs.size(); ++i)
    if (spec.inputs[i].mode == InputMode::kCopyIn)
      stream.copy(s.inputs_device[i].slice(), s.inputs[i].slice(), "copy-in " + spec.inputs[i].name);
  auto ctx = context(slot, key, false);
  step_fn(ctx);
}

Bucket& ExecutorCore::bucket(std::uint64_t key) {
  for (auto it = buckets.begin(); it != buckets.end(); ++it) {
    if (it->key == key) {
      it->last_use = ++use_clock;
      return *it;
    }
  }
  if (buckets.size() >= options.max_shape_buckets) {
    auto lru = std::min_element(buckets.begin(), buckets.end(),
                                [](const Bucket& a, const Bucket& b) { return a.last_use < b.last_use; });
    STEPGRAPH_WARN(kExecutor,
                   "shape bucket {} is beyond the bound of {} buckets: dropping the least recently used bucket {} "
                   "(its graphs are captured again on next use); raise max_shape_buckets or pad shapes to fewer "
                   "buckets",
                   key, options.max_shape_buckets, lru->key);
    stream.synchronize();  // no launch of the dropped executables may still run
    buckets.erase(lru);
  }
  Bucket b;
  b.key = key;
  b.last_use = ++use_clock;
  buckets.push_back(std::move(b));
  capture_bucket(buckets.back());
  return buckets.back();
}

void ExecutorCore::capture_bucket(Bucket& b) {
  for (std::size_t slot = 0; slot < slots.size(); ++slot) {
    auto& s = slots[slot];
    Graph g;
    const auto capture_begin = std::chrono::steady_clock::now();
    {
      NvtxRange range("stepgraph capture");
      CaptureSession session(stream, CaptureMode::kThreadLocal);
      for (std::size_t i = 0; i < spec.inputs.size(); ++i)
        if (spec.inputs[i].mode == InputMode::kCopyIn)
          stream.copy(s.inputs_device[i].slice(), s.inputs[i].slice(), "copy-in " + spec.inputs[i].name);
      auto ctx = context(static_cast<int>(slot), b.key, true);
      step_fn(ctx);
      g = session.end();
    }
    trace_span(fmt::format("capture (bucket {}, slot {})", b.key, slot), capture_begin, -1);
    const auto instantiate_begin = std::chrono::steady_clock::now();
    {
      NvtxRange range("stepgraph instantiate");
      b.execs.push_back(g.instantiate());
    }
    trace_span(fmt::format("instantiate (bucket {}, slot {})", b.key, slot), instantiate_begin, -1);
    b.graphs.push_back(std::move(g));
  }
  if (metrics) {
    const auto info = b.graphs.front().info();
    b.collective_bytes = metrics->collective_bytes(info);
    if (auto cs = metrics->collective_seconds(info))
      b.collective_timing = std::make_shared<const LaunchTrace>(LaunchTrace{nullptr, 0, -1, std::move(cs)});
  }
  STEPGRAPH_INFO(kExecutor, "captured shape bucket {}: {} node(s) per slot, {} slot(s)", b.key,
                 b.graphs.front().node_count(), b.graphs.size());
}

void ExecutorCore::launch(const std::shared_ptr<ReplayState>& r) {
  const auto launch_begin = std::chrono::steady_clock::now();
  if (metrics) metrics->launch_started(launch_begin);
  auto& s = slots[static_cast<std::size_t>(r->slot)];
  if (r->outputs.empty())
    for (const auto& o : s.outputs) r->outputs.push_back(sub_buffer(o, 0, o.size()));
  std::memcpy(s.scalars.host_data(), &r->scalars, sizeof(StepScalars));  // the slot is not in flight
  const bool warmup = warmups_done < options.warmup && options.mode == ExecutionMode::kGraph;
  if (options.mode == ExecutionMode::kEager || warmup) {
    {
      std::lock_guard lock(mutex);
      if (warmup) state = ExecutorState::kWarmingUp;
    }
    run_step_eagerly(r->slot, r->shape_key);
    if (warmup) ++warmups_done;
    trace_span(fmt::format("{} step {}", warmup ? "warm-up" : "eager", r->step), launch_begin, r->step);
  } else {
    Bucket& b = bucket(r->shape_key);
    {
      std::lock_guard lock(mutex);
      if (state != ExecutorState::kFailed && state != ExecutorState::kClosed) state = ExecutorState::kReady;
    }
    if (metrics) r->collective_bytes = b.collective_bytes;
    if (trace) [[unlikely]] {
      const auto replay_begin = std::chrono::steady_clock::now();
      ScopedLaunchTrace traced(std::make_shared<const LaunchTrace>(
          LaunchTrace{trace, trace_stream_track, r->step,
                      b.collective_timing ? b.collective_timing->collective_seconds : nullptr}));
      NvtxRange range(fmt::format("stepgraph replay {}", r->step).c_str());
      stream.record(*s.trace_start);
      r->trace_start = s.trace_start;
      b.execs[static_cast<std::size_t>(r->slot)].launch(stream);
      trace_span(fmt::format("launch step {}", r->step), replay_begin, r->step);
    } else if (b.collective_timing) {
      ScopedLaunchTrace timed(b.collective_timing);
      b.execs[static_cast<std::size_t>(r->slot)].launch(stream);
    } else {
      b.execs[static_cast<std::size_t>(r->slot)].launch(stream);
    }
  }
  stream.record(*s.done);
  {
    std::lock_guard lock(r->mutex);
    r->status = ReplayStatus::kRunning;
    r->launched_at = std::chrono::steady_clock::now();
    r->done = s.done;
  }
  {
    std::lock_guard lock(mutex);
    launched.push_back(r);
  }
  if (metrics) metrics->launched();
  if (options.deadline.count() > 0) thread_cv.notify_one();  // the watchdog must start timing
}

StepError ExecutorCore::fault_error(std::int64_t step, const DeviceFault& fault) const {
  // The host backend names the faulting node; on CUDA a fault is
  // asynchronous and names none (DESIGN 1.6).
  std::optional<std::string> node;
  if (!fault.node().empty()) node = fault.node();
  return StepError{
      StepErrorKind::kDeviceFault, step, node,
      backend->kind() == BackendKind::kCuda
          ? fmt::format("device fault during step {} (asynchronous: CUDA names no node): {}", step, fault.what())
          : fmt::format("device fault during step {}: {}", step, fault.what())};
}

// A device fault that surfaces while `r` is enqueued happened in a step
// launched before it if one is still on the device (a stream runs in order):
// `r` is cancelled, and the executor's thread reports that step's fault with
// its own step number (the fault matrix saw step 0's fault charged to step 1).
// False if no earlier step is in flight: the fault is then `r`'s to report.
bool ExecutorCore::cancel_behind_a_fault(const std::shared_ptr<ReplayState>& r, const DeviceFault& fault) {
  {
    std::lock_guard lock(mutex);
    if (launched.empty()) return false;
  }
  finish(r, ReplayStatus::kCancelled,
         StepError{StepErrorKind::kCancelled, r->step, std::nullopt,
                   fmt::format("cancelled: the device faulted during an earlier step: {}", fault.what())});
  return true;
}

void ExecutorCore::post(std::function<void()> fn) {
  {
    std::lock_guard lock(mutex);
    posted.push_back(std::move(fn));
  }
  thread_cv.notify_one();
}

void ExecutorCore::report(const StepError& e) {
  if (!options.on_error) {
    STEPGRAPH_WARN(kExecutor, "step {}: {}: {} (no error callback set)", e.step, to_string(e.kind), e.message);
    return;
  }
  try {
    options.on_error(e);
  } catch (const std::exception& ex) {
    STEPGRAPH_WARN(kExecutor, "the error callback threw while reporting step {}: {}", e.step, ex.what());
  } catch (...) {
    // Not a std::exception: it must not leave the executor's thread either
    // (std::terminate); the failure itself is already recorded.
    STEPGRAPH_WARN(kExecutor, "the error callback threw a non-standard exception while reporting step {}", e.step);
  }
}

void ExecutorCore::finish(const std::shared_ptr<ReplayState>& r, ReplayStatus status, std::optional<StepError> error) {
  const auto finish_begin = std::chrono::steady_clock::now();
  std::vector<std::function<void(const ReplayHandle&)>> callbacks;
  {
    std::lock_guard lock(r->mutex);
    if (r->status == ReplayStatus::kDone || r->status == ReplayStatus::kFailed ||
        r->status == ReplayStatus::kCancelled || r->status == ReplayStatus::kClosed)
      return;
    if (status == ReplayStatus::kDone) trace_device_span(*r);  // before the slot can be reused
    r->status = status;
    r->error = std::move(error);
    callbacks.swap(r->callbacks);
    if (metrics) metrics->finished(status, r->error, r->launched_at, r->collective_bytes.get());
  }
  r->cv.notify_all();
  if (status == ReplayStatus::kCancelled) {
    std::lock_guard lock(mutex);
    slots[static_cast<std::size_t>(r->slot)].state = SlotState::kFree;
    r->released = true;
  }
  cv.notify_all();
  trace_span(fmt::format("complete step {} ({})", r->step, to_string(status)), finish_begin, r->step);
  if (callbacks.empty()) return;
  const auto callbacks_begin = std::chrono::steady_clock::now();
  ReplayHandle h(r);
  for (auto& cb : callbacks) {
    try {
      cb(h);
    } catch (const std::exception& ex) {
      report(StepError{StepErrorKind::kCallback, r->step, std::nullopt,
                       fmt::format("a completion callback of step {} threw: {}", r->step, ex.what())});
    } catch (...) {
      report(StepError{StepErrorKind::kCallback, r->step, std::nullopt,
                       fmt::format("a completion callback of step {} threw a non-standard exception", r->step)});
    }
  }
  trace_span(fmt::format("callbacks step {}", r->step), callbacks_begin, r->step);
}

bool ExecutorCore::finish_from_waiter(const std::shared_ptr<ReplayState>& r) {
  if (collectives->async_error()) return false;  // the executor's thread reports it
  const auto finish_begin = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(r->mutex);
    if (r->status != ReplayStatus::kRunning || !r->callbacks.empty()) return false;
    trace_device_span(*r);  // before the slot can be released and its events recorded again
    r->status = ReplayStatus::kDone;
    if (metrics) metrics->finished(ReplayStatus::kDone, std::nullopt, r->launched_at, r->collective_bytes.get());
  }
  r->cv.notify_all();
  bool more = false;
  {
    std::lock_guard lock(mutex);
    const auto landed = std::erase(launched, r);
    if (metrics) metrics->landed(static_cast<double>(landed));
    more = !queued.empty();
  }
  cv.notify_all();
  if (more) thread_cv.notify_one();  // it launches the replays queued behind this one
  trace_span(fmt::format("complete step {} (done, by the waiter)", r->step), finish_begin, r->step);
  return true;
}

bool ExecutorCore::mark_failed(const StepError& e) {
  std::lock_guard lock(mutex);
  if (state == ExecutorState::kFailed || state == ExecutorState::kClosed) return false;
  state = ExecutorState::kFailed;
  failure = e;
  return true;
}

void ExecutorCore::fail(const StepError& e) {
  if (mark_failed(e)) after_failed(e);
}

void ExecutorCore::after_failed(const StepError& e) {
  std::deque<std::shared_ptr<ReplayState>> dropped;
  {
    std::lock_guard lock(mutex);
    dropped.swap(queued);
    if (metrics) metrics->queued(-static_cast<double>(dropped.size()));
  }
  STEPGRAPH_WARN(kExecutor, "executor failed at step {}: {}", e.step, e.message);
  if (e.kind == StepErrorKind::kTimeout || e.kind == StepErrorKind::kDeviceFault) collectives->abort(e.message);
  report(e);
  for (auto& r : dropped)
    finish(r, ReplayStatus::kCancelled,
           StepError{StepErrorKind::kCancelled, r->step, std::nullopt,
                     fmt::format("cancelled: the executor failed at step {}", e.step)});
  cv.notify_all();
}

// Note [Quiet executor thread]
// The executor's thread has a condition variable of its own, signalled only
// when it must act now: posted work, queued replays, a deadline to time, a
// completion callback, close. Otherwise it polls its launched replays every
// millisecond. Waking it on every launch and completion cost a futex wake-up
// and a context switch per step on a 2-core machine (docs/benchmarks.md).
void ExecutorCore::thread_main() {
  std::unique_lock lock(mutex);
  int idle_polls = 0;
  for (;;) {
    // Posted work (late on_complete callbacks).
    while (!posted.empty()) {
      auto fn = std::move(posted.front());
      posted.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
    // Replays queued beyond launch_ahead.
    while (!queued.empty() && static_cast<int>(launched.size()) < options.launch_ahead &&
           state != ExecutorState::kFailed && state != ExecutorState::kClosed) {
      auto r = queued.front();
      queued.pop_front();
      if (metrics) metrics->queued(-1);
      lock.unlock();
      {
        std::lock_guard ll(launch_mutex);
        try {
          launch(r);
        } catch (const DeviceFault& ex) {
          if (!cancel_behind_a_fault(r, ex)) {
            const StepError e = fault_error(r->step, ex);
            const bool first = mark_failed(e);  // a waiter woken by the handle sees the executor failed
            finish(r, ReplayStatus::kFailed, e);
            if (first) after_failed(e);
          }
        } catch (const std::exception& ex) {
          const StepError e{StepErrorKind::kDeviceFault, r->step, std::nullopt, ex.what()};
          const bool first = mark_failed(e);  // a waiter woken by the handle sees the executor failed
          finish(r, ReplayStatus::kFailed, e);
          if (first) after_failed(e);
        }
      }
      lock.lock();
    }
    if (launched.empty()) {
      if (stop && queued.empty() && posted.empty()) return;
      // Idle: poll at 1 ms, backing off to 10 ms after a while, so that a
      // replay nobody waits for is still completed (synchronize() relies on it).
      const auto idle_poll = idle_polls < 100 ? std::chrono::milliseconds(1) : std::chrono::milliseconds(10);
      ++idle_polls;
      thread_cv.wait_for(lock, idle_poll,
                         [&] { return stop || !posted.empty() || !launched.empty() || !queued.empty(); });
      if (!launched.empty() || !queued.empty() || !posted.empty()) idle_polls = 0;
      if (stop && launched.empty() && queued.empty() && posted.empty()) return;
      continue;
    }
    auto r = launched.front();
    const Event& done = *slots[static_cast<std::size_t>(r->slot)].done;
    lock.unlock();
    // Wait in slices so that posted work and the deadline are served.
    auto slice = std::chrono::milliseconds(2);
    if (options.deadline.count() > 0) {
      const auto left = options.deadline - std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::steady_clock::now() - r->launched_at);
      slice = std::max(std::chrono::milliseconds(0), std::min(slice, left));
    }
    bool completed = false;
    std::optional<StepError> error;
    // Note [Attentive and lazy waiting]: with a deadline or completion
    // callbacks the thread blocks on the event; otherwise the caller's own
    // wait() completes the handle (Note [Waiting without a hand-off]) and
    // the thread only polls, so that it does not spin beside the workers.
    bool attentive = options.deadline.count() > 0;
    {
      std::lock_guard rl(r->mutex);
      attentive = attentive || !r->callbacks.empty() || r->status != ReplayStatus::kRunning;
    }
    try {
      if (attentive) {
        completed = done.wait_for(slice);
      } else {
        completed = done.query();
        if (!completed) {
          lock.lock();
          thread_cv.wait_for(lock, std::chrono::milliseconds(1));
          continue;
        }
      }
    } catch (const DeviceFault& ex) {
      completed = true;
      error = fault_error(r->step, ex);
    } catch (const std::exception& ex) {
      completed = true;
      error = StepError{StepErrorKind::kDeviceFault, r->step, std::nullopt, ex.what()};
    }
    if (!completed && options.deadline.count() > 0 &&
        std::chrono::steady_clock::now() - r->launched_at >= options.deadline) {
      StepError e{StepErrorKind::kTimeout, r->step, std::nullopt,
                  fmt::format("step {} did not finish within its deadline of {} ms (watchdog); the executor is "
                              "failed and its communicator aborted; close() waits at most one more deadline for "
                              "the device, then leaves the executor's memory to be freed when the step ends "
                              "(leaked if it never does) rather than hang",
                              r->step, options.deadline.count())};
      const bool first = mark_failed(e);  // a waiter woken by the handle sees the executor failed
      finish(r, ReplayStatus::kFailed, e);
      if (first) after_failed(e);
      lock.lock();
      const auto landed = std::erase(launched, r);
      if (metrics) metrics->landed(static_cast<double>(landed));
      cv.notify_all();
      continue;
    }
    if (completed && !error) {
      // A handle a waiter already completed (Note [Waiting without a
      // hand-off]) ran its collectives to the end: an error the
      // communicator reports now belongs to a later step, which finds it.
      bool final = false;
      {
        std::lock_guard rl(r->mutex);
        final = r->status == ReplayStatus::kDone;
      }
      if (!final)
        if (auto ce = collectives->async_error())
          error = StepError{StepErrorKind::kCollective, r->step, std::nullopt, *ce};
    }
    if (completed) {
      // Complete the handle before leaving `launched`, so that a caller of
      // synchronize() sees every handle final.
      if (error) {
        const bool first = mark_failed(*error);  // a waiter woken by the handle sees the executor failed
        finish(r, ReplayStatus::kFailed, error);
        if (first) after_failed(*error);
      } else {
        finish(r, ReplayStatus::kDone, std::nullopt);
      }
    }
    lock.lock();
    if (completed) {
      const auto landed = std::erase(launched, r);  // by identity: a waiter may have removed it already
      if (metrics) metrics->landed(static_cast<double>(landed));
      cv.notify_all();
    }
  }
}

void ExecutorCore::check_usable(std::string_view what) const {
  if (state == ExecutorState::kClosed)
    throw InvalidState(fmt::format("StepExecutor::{}: the executor is closed", what));
  if (state == ExecutorState::kFailed)
    throw InvalidState(
        fmt::format("StepExecutor::{}: the executor failed at step {} ({}: {}) and cannot run more "
                    "steps{}; create a new executor{}",
                    what, failure->step, to_string(failure->kind), failure->message,
                    failure->node ? " at node '" + *failure->node + "'" : "",
                    backend->kind() == BackendKind::kCuda ? " in a new process (CUDA faults are "
                                                            "sticky for the process)"
                                                          : ""));
}

namespace {
/// The executor's device resources, destroyed in the order of Note
/// [Closing a wedged executor]: executables, graphs, then memory, then the
/// stream.
struct Remains {
  std::list<Bucket> buckets;
  std::vector<Slot> slots;
  std::vector<Buffer> state_buffers;
  std::unique_ptr<DeviceArena> arena;
  Stream stream;

  Remains() = default;
  Remains(const Remains&) = delete;
  Remains& operator=(const Remains&) = delete;
  ~Remains() {
    for (auto& b : buckets) b.execs.clear();
    for (auto& b : buckets) b.graphs.clear();
    buckets.clear();
    slots.clear();
    state_buffers.clear();
    arena.reset();
  }
};

/// True once every step enqueued on `stream` has finished (or the device
/// faulted, after which nothing runs); polls, since no backend offers a
/// bounded stream wait.
bool drained_within(StreamRef stream, std::chrono::milliseconds bound) {
  const auto until = std::chrono::steady_clock::now() + bound;
  auto pause = std::chrono::microseconds(50);
  for (;;) {
    try {
      if (stream.query()) return true;
    } catch (const Error&) {
      return true;  // a device fault: no work of the device runs any more
    }
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::microseconds(10'000));
  }
}
}  // namespace

// Note [Closing a wedged executor]
// A step that never finishes (a kernel spinning on a flag, a collective whose
// peer died) must not make close() hang (DESIGN 1.6): the watchdog has failed
// the executor and aborted its communicator (fail()), and the executor's
// thread has given up on the step. What is left is the memory: on CUDA,
// freeing it (cudaFree, cudaHostUnregister) and destroying an executable
// that may still run wait for the device, i.e. forever. So after a failure
// close() waits at most one more deadline (1 s without one) for the stream
// to drain; if it does not, the executables, graphs, buffers, arena and
// stream go to the release thread (Note [Deferred release]), which frees
// them once the stream has drained, and never if it does not: a deliberate
// leak, said in the timeout's error and in the log.
void ExecutorCore::close() {
  std::deque<std::shared_ptr<ReplayState>> dropped;
  {
    std::lock_guard lock(mutex);
    if (state == ExecutorState::kClosed && !thread.joinable()) return;
    dropped.swap(queued);
    if (metrics) metrics->queued(-static_cast<double>(dropped.size()));
  }
  for (auto& r : dropped)
    finish(r, ReplayStatus::kCancelled,
           StepError{StepErrorKind::kCancelled, r->step, std::nullopt, "cancelled: the executor was closed"});
  {
    std::lock_guard lock(mutex);
    stop = true;
  }
  cv.notify_all();
  thread_cv.notify_all();
  if (thread.joinable()) {
    STEPGRAPH_CHECK(std::this_thread::get_id() != thread.get_id(), InvalidState,
                    "StepExecutor::close must not be called from a callback (the executor's own thread)");
    thread.join();  // it drains `launched` first: every replay on the device finishes or times out
  }
  std::optional<StepError> failed_with;
  {
    std::lock_guard lock(mutex);
    if (state == ExecutorState::kFailed) failed_with = failure;
    state = ExecutorState::kClosed;
  }
  if (metrics) {
    // Its share of the memory gauges goes; its server (if its own) stops.
    if (allocated) metrics->memory(memory(), -1);
    metrics.reset();
    metrics_endpoint.reset();
  }
  auto remains = std::make_shared<Remains>();
  remains->buckets.swap(buckets);
  remains->slots.swap(slots);
  remains->state_buffers.swap(state_buffers);
  remains->arena = std::move(arena);
  remains->stream = std::move(stream);
  if (failed_with && remains->stream.valid()) {
    const auto bound = options.deadline.count() > 0 ? options.deadline : std::chrono::milliseconds(1000);
    if (!drained_within(remains->stream.ref(), bound)) {
      STEPGRAPH_LOG(kError, kExecutor,
                    "close: the executor failed at step {} ({}) and its stream has not drained {} ms later; its "
                    "executables, graphs and memory are left to be freed when the device finishes that work, and "
                    "are leaked if it never does (deliberately: freeing them now would block until then)",
                    failed_with->step, to_string(failed_with->kind), bound.count());
      const StreamRef probe = remains->stream.ref();
      release_when(std::move(remains), [probe] { return probe.query(); });
      return;
    }
  }
  remains.reset();  // released here, in order (Remains)
}

}  // namespace detail

// ------------------------------------------------------------------ context

namespace {
const Buffer& pick(const std::vector<Buffer>& v, std::size_t i) {
  return v[i];
}
}  // namespace

const Buffer& StepContext::input(std::string_view name) const {
  const auto i = core_->index_of(core_->spec.inputs, name, "input");
  const auto& s = core_->slots[static_cast<std::size_t>(slot_)];
  return core_->spec.inputs[i].mode == InputMode::kCopyIn ? pick(s.inputs_device, i) : pick(s.inputs, i);
}
const Buffer& StepContext::output(std::string_view name) const {
  return core_->slots[static_cast<std::size_t>(slot_)].outputs[core_->index_of(core_->spec.outputs, name, "output")];
}
const Buffer& StepContext::state(std::string_view name) const {
  return core_->state_buffers[core_->index_of(core_->spec.state, name, "state")];
}
const Buffer& StepContext::scratch(std::string_view name) const {
  return core_->slots[static_cast<std::size_t>(slot_)].scratch[core_->index_of(core_->spec.scratch, name, "scratch")];
}
const Buffer& StepContext::scalars() const {
  return core_->slots[static_cast<std::size_t>(slot_)].scalars;
}
const StepScalars& StepContext::host_scalars() const {
  return *static_cast<const StepScalars*>(scalars().host_data());
}

// ------------------------------------------------------------------ slots, handles

InputSlot::InputSlot() = default;
InputSlot::InputSlot(InputSlot&& o) noexcept : core_(std::move(o.core_)), slot_(o.slot_) {
  o.slot_ = -1;
}
InputSlot& InputSlot::operator=(InputSlot&& o) noexcept {
  if (this != &o) {
    InputSlot dropped(std::move(*this));  // gives the current slot back
    core_ = std::move(o.core_);
    slot_ = o.slot_;
    o.slot_ = -1;
  }
  return *this;
}
InputSlot::~InputSlot() {
  if (!core_) return;
  {
    std::lock_guard lock(core_->mutex);
    if (!core_->slots.empty()) core_->slots[static_cast<std::size_t>(slot_)].state = detail::SlotState::kFree;
  }
  core_->cv.notify_all();
}
int InputSlot::index() const {
  STEPGRAPH_CHECK(core_ != nullptr, InvalidState, "InputSlot: empty (already given to replay)");
  return slot_;
}
const Buffer& InputSlot::input(std::string_view name) const {
  STEPGRAPH_CHECK(core_ != nullptr, InvalidState, "InputSlot: empty (already given to replay)");
  return core_->slots[static_cast<std::size_t>(slot_)].inputs[core_->index_of(core_->spec.inputs, name, "input")];
}

namespace {
detail::ReplayState& st(const std::shared_ptr<detail::ReplayState>& s) {
  STEPGRAPH_CHECK(s != nullptr, InvalidState, "ReplayHandle: empty handle");
  return *s;
}
bool final_status(ReplayStatus s) {
  return s == ReplayStatus::kDone || s == ReplayStatus::kFailed || s == ReplayStatus::kCancelled ||
         s == ReplayStatus::kClosed;
}
}  // namespace

namespace {
// Note [Waiting without a hand-off]
// A caller that waits for a replay with no completion callbacks waits on the
// replay's event itself and completes the handle, instead of waiting for the
// executor's thread to notice the event and wake it: one cross-thread
// hand-off less per step. Errors (a fault, a collective error) and callbacks
// stay with the executor's thread. Not with a deadline: the watchdog (the
// executor's thread, which then waits on the event anyway) may fail the
// replay while its step still runs, and a caller blocked on the event would
// not see that until the step ended — never, for a wedged step (found by
// the fault matrix, tests/runtime/fault_matrix_test.cpp).
void wait_fast(const std::shared_ptr<detail::ReplayState>& s, std::optional<std::chrono::nanoseconds> timeout) {
  auto core = s->core.lock();
  if (!core || std::this_thread::get_id() == core->thread_id.load() || core->options.deadline.count() > 0) return;
  std::shared_ptr<Event> done;
  {
    std::lock_guard lock(s->mutex);
    if (s->status != ReplayStatus::kRunning || !s->callbacks.empty()) return;
    done = s->done;
  }
  if (!done) return;
  try {
    const bool complete = timeout ? done->wait_for(*timeout) : (done->synchronize(), true);
    if (complete) (void)core->finish_from_waiter(s);
  } catch (const std::exception&) {
    // A fault: the executor's thread reports it with the step and node.
  }
}
}  // namespace

std::int64_t ReplayHandle::step() const {
  return st(state_).step;
}
ReplayStatus ReplayHandle::status() const {
  std::lock_guard lock(st(state_).mutex);
  return state_->status;
}
bool ReplayHandle::poll() const {
  if (final_status(status())) return true;
  auto core = state_->core.lock();
  std::shared_ptr<Event> done;
  {
    std::lock_guard lock(state_->mutex);
    done = state_->done;
  }
  if (core && done && std::this_thread::get_id() != core->thread_id.load()) {
    try {
      if (done->query()) (void)core->finish_from_waiter(state_);
    } catch (const std::exception&) {
      // a fault: reported by the executor's thread
    }
  }
  return final_status(status());
}
std::optional<ReplayStatus> ReplayHandle::wait_for(std::chrono::nanoseconds timeout) const {
  auto& s = st(state_);
  const auto start = std::chrono::steady_clock::now();
  wait_fast(state_, timeout);
  timeout -=
      std::min(timeout, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start));
  std::unique_lock lock(s.mutex);
  if (!s.cv.wait_for(lock, timeout, [&] { return final_status(s.status); })) return std::nullopt;
  return s.status;
}
ReplayStatus ReplayHandle::wait() const {
  auto& s = st(state_);
  if (auto core = s.core.lock()) {
    STEPGRAPH_CHECK(std::this_thread::get_id() != core->thread_id, InvalidState,
                    "ReplayHandle::wait from a callback would wait for the executor's own thread; use on_complete");
  }
  wait_fast(state_, std::nullopt);
  std::unique_lock lock(s.mutex);
  s.cv.wait(lock, [&] { return final_status(s.status); });
  return s.status;
}
std::optional<StepError> ReplayHandle::error() const {
  std::lock_guard lock(st(state_).mutex);
  return state_->error;
}
void ReplayHandle::on_complete(std::function<void(const ReplayHandle&)> fn) const {
  auto& s = st(state_);
  {
    std::lock_guard lock(s.mutex);
    if (!final_status(s.status)) {
      s.callbacks.push_back(std::move(fn));
      if (auto core = s.core.lock()) core->thread_cv.notify_one();  // the thread now waits attentively
      return;
    }
  }
  auto core = s.core.lock();
  STEPGRAPH_CHECK(core != nullptr, InvalidState, "ReplayHandle::on_complete: the executor is gone");
  core->post([fn = std::move(fn), h = *this] {
    try {
      fn(h);
    } catch (const std::exception& ex) {
      if (auto c = h.state_->core.lock())
        c->report(StepError{StepErrorKind::kCallback, h.step(), std::nullopt,
                            fmt::format("a completion callback of step {} threw: {}", h.step(), ex.what())});
    }
  });
}
bool ReplayHandle::cancel() const {
  auto& s = st(state_);
  auto core = s.core.lock();
  if (!core) return false;
  {
    std::lock_guard lock(core->mutex);
    auto it = std::find(core->queued.begin(), core->queued.end(), state_);
    if (it == core->queued.end()) return false;
    core->queued.erase(it);
    if (core->metrics) core->metrics->queued(-1);
  }
  core->finish(state_, ReplayStatus::kCancelled,
               StepError{StepErrorKind::kCancelled, s.step, std::nullopt, "cancelled by the caller"});
  return true;
}
const Buffer& ReplayHandle::output(std::string_view name) const {
  auto& s = st(state_);
  auto core = s.core.lock();
  STEPGRAPH_CHECK(core != nullptr, InvalidState, "ReplayHandle::output: the executor is gone");
  std::lock_guard lock(core->mutex);
  STEPGRAPH_CHECK(!s.released, InvalidState,
                  "ReplayHandle::output('{}') after release(): the slot may already hold another step's outputs", name);
  STEPGRAPH_CHECK(!s.outputs.empty(), InvalidState,
                  "ReplayHandle::output('{}'): step {} never ran (it was cancelled or the executor closed)", name,
                  s.step);
  // A view held by the handle: it stays valid even if the executor closes.
  return s.outputs[core->index_of(core->spec.outputs, name, "output")];
}

void ReplayHandle::release() const {
  auto& s = st(state_);
  auto core = s.core.lock();
  if (!core) return;
  {
    std::lock_guard rl(s.mutex);
    STEPGRAPH_CHECK(final_status(s.status), InvalidState,
                    "ReplayHandle::release of step {} while it is {}: wait for it (or cancel it) first", s.step,
                    to_string(s.status));
  }
  {
    std::lock_guard lock(core->mutex);
    if (s.released) return;
    s.released = true;
    if (!core->slots.empty()) core->slots[static_cast<std::size_t>(s.slot)].state = detail::SlotState::kFree;
  }
  core->cv.notify_all();
}

// ------------------------------------------------------------------ executor

StepExecutor::StepExecutor(StepSpec spec, StepFunction step, ExecutorOptions options)
    : core_(std::make_shared<detail::ExecutorCore>(std::move(spec), std::move(step), std::move(options))) {}

StepExecutor::~StepExecutor() {
  try {
    core_->close();
  } catch (const std::exception& e) {
    STEPGRAPH_WARN(kExecutor, "closing the executor: {}", e.what());
  }
}

void StepExecutor::close() {
  core_->close();
}

void StepExecutor::prepare(std::uint64_t shape_key) {
  std::lock_guard ll(core_->launch_mutex);
  {
    std::lock_guard lock(core_->mutex);
    core_->check_usable("prepare");
  }
  core_->allocate_memory();
  if (core_->options.mode == ExecutionMode::kEager) return;
  // Warm-ups are real steps: each takes the next step number and scalars.
  auto write_scalars = [&](std::size_t slot, bool consume_step) {
    StepScalars s;
    {
      std::lock_guard lock(core_->mutex);
      s = core_->next_scalars;
      s.step = core_->next_step;
      if (consume_step) {
        ++core_->next_step;
        core_->next_scalars.rng_offset += core_->rng_increment;
      }
    }
    std::memcpy(core_->slots[slot].scalars.host_data(), &s, sizeof(s));
  };
  while (core_->warmups_done < core_->options.warmup) {
    {
      std::lock_guard lock(core_->mutex);
      core_->state = ExecutorState::kWarmingUp;
      STEPGRAPH_CHECK(core_->slots[0].state == detail::SlotState::kFree, InvalidState,
                      "StepExecutor::prepare warms up on slot 0, which is in use; release it first");
    }
    write_scalars(0, true);
    core_->run_step_eagerly(0, shape_key);
    core_->stream.synchronize();
    ++core_->warmups_done;
  }
  core_->stream.synchronize();
  {
    std::unique_lock lock(core_->mutex);
    // Slots with no replay in flight get the current scalars before capture,
    // so that host logic reading host_scalars() sees today's values.
    for (std::size_t i = 0; i < core_->slots.size(); ++i) {
      if (core_->slots[i].state == detail::SlotState::kBusy) continue;
      lock.unlock();
      write_scalars(i, false);
      lock.lock();
    }
  }
  (void)core_->bucket(shape_key);
  std::lock_guard lock(core_->mutex);
  if (core_->state != ExecutorState::kFailed) core_->state = ExecutorState::kReady;
}

InputSlot StepExecutor::acquire_inputs() {
  auto& c = *core_;
  struct TraceAcquire {
    detail::ExecutorCore& c;
    std::chrono::steady_clock::time_point begin = std::chrono::steady_clock::now();
    ~TraceAcquire() { c.trace_span("acquire", begin, -1); }
  } traced{c};
  {
    std::lock_guard ll(c.launch_mutex);
    c.allocate_memory();
  }
  std::unique_lock lock(c.mutex);
  for (;;) {
    c.check_usable("acquire_inputs");
    for (std::size_t i = 0; i < c.slots.size(); ++i) {
      if (c.slots[i].state == detail::SlotState::kFree) {
        c.slots[i].state = detail::SlotState::kAcquired;
        InputSlot s;
        s.core_ = core_;
        s.slot_ = static_cast<int>(i);
        return s;
      }
    }
    const bool own_thread = std::this_thread::get_id() == c.thread_id.load();
    STEPGRAPH_CHECK(c.options.on_busy == OnBusy::kBlock && !own_thread, InvalidState,
                    "StepExecutor: all {} slot(s) are in use{}; release() finished replays (or raise max_in_flight)",
                    c.slots.size(), own_thread ? " and blocking on the executor's own thread would deadlock" : "");
    c.cv.wait(lock);
  }
}

ReplayHandle StepExecutor::replay(std::uint64_t shape_key) {
  return replay(acquire_inputs(), shape_key);
}

ReplayHandle StepExecutor::replay(InputSlot slot, std::uint64_t shape_key) {
  auto& c = *core_;
  STEPGRAPH_CHECK(slot.core_ == core_, InvalidArgument,
                  "StepExecutor::replay: the input slot is empty or belongs to another executor");
  auto r = std::make_shared<detail::ReplayState>();
  r->core = core_;
  r->slot = slot.slot_;
  r->shape_key = shape_key;
  bool launch_now = false;
  {
    std::lock_guard lock(c.mutex);
    c.check_usable("replay");
    c.slots[static_cast<std::size_t>(slot.slot_)].state = detail::SlotState::kBusy;
    slot.core_.reset();  // the slot now belongs to the replay
    r->step = c.next_step++;
    r->scalars = c.next_scalars;
    r->scalars.step = r->step;
    c.next_scalars.rng_offset += c.rng_increment;
    launch_now = c.queued.empty() && static_cast<int>(c.launched.size()) < c.options.launch_ahead;
    if (!launch_now) c.queued.push_back(r);
    if (c.metrics) {
      c.metrics->started();
      if (!launch_now) c.metrics->queued(1);
    }
  }
  if (launch_now) {
    std::unique_lock ll(c.launch_mutex);
    try {
      c.launch(r);
    } catch (const DeviceFault& e) {
      // The device faulted before or while this step was enqueued (an
      // earlier step's fault surfacing here): the failure travels like any
      // asynchronous one, to the handle and the error callback.
      ll.unlock();
      if (c.cancel_behind_a_fault(r, e)) return ReplayHandle(r);
      const auto err = c.fault_error(r->step, e);
      const bool first = c.mark_failed(err);  // a waiter woken by the handle sees the executor failed
      c.finish(r, ReplayStatus::kFailed, err);
      // The error callback runs on the executor's thread, never the caller's.
      if (first) c.post([core = &c, err] { core->after_failed(err); });
      return ReplayHandle(r);
    } catch (...) {
      std::lock_guard lock(c.mutex);
      c.slots[static_cast<std::size_t>(r->slot)].state = detail::SlotState::kFree;
      r->status = ReplayStatus::kFailed;
      throw;
    }
  } else {
    c.thread_cv.notify_one();
  }
  return ReplayHandle(r);
}

void StepExecutor::synchronize() {
  auto& c = *core_;
  std::unique_lock lock(c.mutex);
  STEPGRAPH_CHECK(std::this_thread::get_id() != c.thread_id.load(), InvalidState,
                  "StepExecutor::synchronize from a callback would wait for itself");
  c.cv.wait(lock, [&] { return (c.queued.empty() && c.launched.empty()) || c.state == ExecutorState::kClosed; });
}

void StepExecutor::set_learning_rate(float lr) {
  std::lock_guard lock(core_->mutex);
  core_->next_scalars.learning_rate = lr;
}
void StepExecutor::set_loss_scale(float scale) {
  std::lock_guard lock(core_->mutex);
  core_->next_scalars.loss_scale = scale;
}
void StepExecutor::set_rng(std::uint64_t seed, std::uint64_t offset) {
  std::lock_guard lock(core_->mutex);
  core_->next_scalars.rng_seed = seed;
  core_->next_scalars.rng_offset = offset;
}
void StepExecutor::set_rng_offset_increment(std::uint64_t inc) {
  std::lock_guard lock(core_->mutex);
  core_->rng_increment = inc;
}
StepScalars StepExecutor::scalars() const {
  std::lock_guard lock(core_->mutex);
  auto s = core_->next_scalars;
  s.step = core_->next_step;
  return s;
}

namespace {
void copy_state(detail::ExecutorCore& c, std::string_view name, void* data, std::size_t bytes, bool to_device) {
  const auto i = c.index_of(c.spec.state, name, "state");
  const auto& buf = c.state_buffers[i];
  STEPGRAPH_CHECK(bytes == buf.size(), InvalidArgument, "state '{}' has {} bytes; {} given", name, buf.size(), bytes);
  auto pinned = c.backend->register_host(data, bytes);
  if (to_device)
    c.stream.copy(buf.slice(), pinned.slice(), "write state " + std::string(name));
  else
    c.stream.copy(pinned.slice(), buf.slice(), "read state " + std::string(name));
  c.stream.synchronize();
}
}  // namespace

void StepExecutor::write_state(std::string_view name, const void* data, std::size_t bytes) {
  synchronize();
  {
    // A failed executor's step may still run (a watchdog timeout): its
    // state is not the caller's to touch (executor.h, Lifecycle).
    std::lock_guard lock(core_->mutex);
    core_->check_usable("write_state");
  }
  std::lock_guard ll(core_->launch_mutex);
  core_->allocate_memory();
  copy_state(*core_, name, const_cast<void*>(data), bytes, true);
}
void StepExecutor::read_state(std::string_view name, void* data, std::size_t bytes) {
  synchronize();
  {
    std::lock_guard lock(core_->mutex);
    core_->check_usable("read_state");
  }
  std::lock_guard ll(core_->launch_mutex);
  core_->allocate_memory();
  copy_state(*core_, name, data, bytes, false);
}

namespace {
double max_abs_diff(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b, DType t) {
  double worst = 0;
  const std::size_t n = a.size() / dtype_size(t);
  for (std::size_t i = 0; i < n; ++i) {
    double x = 0, y = 0;
    switch (t) {
      case DType::kFloat32: {
        float u, v;
        std::memcpy(&u, a.data() + 4 * i, 4);
        std::memcpy(&v, b.data() + 4 * i, 4);
        x = u;
        y = v;
        break;
      }
      case DType::kFloat64:
        std::memcpy(&x, a.data() + 8 * i, 8);
        std::memcpy(&y, b.data() + 8 * i, 8);
        break;
      case DType::kInt32: {
        std::int32_t u, v;
        std::memcpy(&u, a.data() + 4 * i, 4);
        std::memcpy(&v, b.data() + 4 * i, 4);
        x = u;
        y = v;
        break;
      }
      case DType::kInt64: {
        std::int64_t u, v;
        std::memcpy(&u, a.data() + 8 * i, 8);
        std::memcpy(&v, b.data() + 8 * i, 8);
        x = static_cast<double>(u);
        y = static_cast<double>(v);
        break;
      }
      case DType::kUInt8:
        x = a[i];
        y = b[i];
        break;
      case DType::kFloat16:
      case DType::kBFloat16: {
        std::uint16_t u, v;
        std::memcpy(&u, a.data() + 2 * i, 2);
        std::memcpy(&v, b.data() + 2 * i, 2);
        x = t == DType::kFloat16 ? half_to_float(u) : bfloat16_to_float(u);
        y = t == DType::kFloat16 ? half_to_float(v) : bfloat16_to_float(v);
        break;
      }
    }
    const double d = (x != x || y != y) ? ((x != x) == (y != y) ? 0.0 : INFINITY) : std::abs(x - y);
    worst = std::max(worst, d);
  }
  return worst;
}
}  // namespace

EagerCheck StepExecutor::check_against_eager(int k, std::uint64_t shape_key) {
  STEPGRAPH_CHECK(k >= 1, InvalidArgument, "check_against_eager: k is {}; give at least 1 step", k);
  STEPGRAPH_CHECK(core_->options.mode == ExecutionMode::kGraph, InvalidState,
                  "check_against_eager compares replays with eager steps: the executor must be in graph mode");
  prepare(shape_key);
  synchronize();
  auto& c = *core_;
  std::lock_guard ll(c.launch_mutex);
  {
    std::lock_guard lock(c.mutex);
    c.check_usable("check_against_eager");
    STEPGRAPH_CHECK(c.slots[0].state == detail::SlotState::kFree, InvalidState,
                    "check_against_eager uses slot 0: release its replay first");
    c.slots[0].state = detail::SlotState::kBusy;
  }
  struct Restore {
    detail::ExecutorCore& c;
    ~Restore() {
      std::lock_guard lock(c.mutex);
      c.slots[0].state = detail::SlotState::kFree;
    }
  } restore{c};

  auto snapshot = [&] {
    std::vector<std::vector<unsigned char>> out;
    for (const auto& b : c.state_buffers) {
      auto pinned = c.backend->allocate_pinned(b.size());
      c.stream.copy(pinned.slice(), b.slice(), "check: read state");
      c.stream.synchronize();
      auto* p = static_cast<unsigned char*>(pinned.host_data());
      out.emplace_back(p, p + b.size());
    }
    for (const auto& b : c.slots[0].outputs) {
      auto* p = static_cast<unsigned char*>(b.host_data());
      out.emplace_back(p, p + b.size());
    }
    return out;
  };
  auto restore_state = [&](const std::vector<std::vector<unsigned char>>& snap) {
    for (std::size_t i = 0; i < c.state_buffers.size(); ++i) {
      auto pinned = c.backend->allocate_pinned(c.state_buffers[i].size());
      std::memcpy(pinned.host_data(), snap[i].data(), snap[i].size());
      c.stream.copy(c.state_buffers[i].slice(), pinned.slice(), "check: restore state");
      c.stream.synchronize();
    }
  };
  StepScalars base;
  std::int64_t step0 = 0;
  {
    std::lock_guard lock(c.mutex);
    base = c.next_scalars;
    step0 = c.next_step;
  }
  auto set_scalars = [&](int i) {
    StepScalars s = base;
    s.step = step0 + i;
    s.rng_offset = base.rng_offset + static_cast<std::uint64_t>(i) * c.rng_increment;
    std::memcpy(c.slots[0].scalars.host_data(), &s, sizeof(s));
  };
  const auto initial = snapshot();
  for (int i = 0; i < k; ++i) {
    set_scalars(i);
    c.run_step_eagerly(0, shape_key);
    c.stream.synchronize();
  }
  const auto eager = snapshot();
  restore_state(initial);
  auto& exec = c.bucket(shape_key).execs[0];
  for (int i = 0; i < k; ++i) {
    set_scalars(i);
    exec.launch(c.stream);
    c.stream.synchronize();
  }
  const auto replayed = snapshot();
  restore_state(initial);
  EagerCheck result;
  result.steps = k;
  for (std::size_t i = 0; i < c.spec.state.size(); ++i)
    result.max_abs_diff[c.spec.state[i].name] = max_abs_diff(eager[i], replayed[i], c.spec.state[i].dtype);
  for (std::size_t j = 0; j < c.spec.outputs.size(); ++j) {
    const auto i = c.spec.state.size() + j;
    result.max_abs_diff[c.spec.outputs[j].name] = max_abs_diff(eager[i], replayed[i], c.spec.outputs[j].dtype);
  }
  return result;
}

ExecutorState StepExecutor::state() const {
  std::lock_guard lock(core_->mutex);
  return core_->state;
}
std::optional<StepError> StepExecutor::failure() const {
  std::lock_guard lock(core_->mutex);
  return core_->failure;
}
std::int64_t StepExecutor::steps_started() const {
  std::lock_guard lock(core_->mutex);
  return core_->next_step;
}
std::size_t StepExecutor::shape_buckets() const {
  std::lock_guard ll(core_->launch_mutex);
  return core_->buckets.size();
}
Backend& StepExecutor::backend() const {
  return *core_->backend;
}

GraphInfo StepExecutor::graph_info(std::uint64_t shape_key, int slot) const {
  std::lock_guard ll(core_->launch_mutex);
  for (const auto& b : core_->buckets)
    if (b.key == shape_key) {
      STEPGRAPH_CHECK(slot >= 0 && static_cast<std::size_t>(slot) < b.graphs.size(), InvalidArgument,
                      "graph_info: slot {} does not exist", slot);
      return b.graphs[static_cast<std::size_t>(slot)].info();
    }
  throw InvalidArgument(fmt::format("graph_info: shape bucket {} has not been captured", shape_key));
}

MemoryReport StepExecutor::memory_report() const {
  std::lock_guard ll(core_->launch_mutex);
  return core_->memory();
}

std::shared_ptr<MetricsRegistry> StepExecutor::metrics() const {
  return core_->metrics_endpoint ? core_->metrics_endpoint->registry : nullptr;
}

int StepExecutor::metrics_port() const {
  const auto& e = core_->metrics_endpoint;
  return e && e->server ? e->server->port() : -1;
}

MemoryReport detail::ExecutorCore::memory() const {
  const auto& c = *this;
  MemoryReport m;
  if (c.arena) {
    m.arena_bytes = c.arena->capacity();
    m.arena_used = c.arena->used();
  }
  for (const auto& b : c.spec.state) m.state_bytes += b.bytes;
  for (const auto& b : c.spec.inputs) {
    m.per_slot_pinned += b.bytes;
    if (b.mode == InputMode::kCopyIn) m.per_slot_device += b.bytes;
  }
  for (const auto& b : c.spec.outputs) m.per_slot_pinned += b.bytes;
  m.per_slot_pinned += sizeof(StepScalars);
  for (const auto& b : c.spec.scratch) m.per_slot_device += b.bytes;
  m.pinned_bytes = m.per_slot_pinned * static_cast<std::size_t>(c.options.max_in_flight);
  return m;
}

}  // namespace stepgraph::runtime
