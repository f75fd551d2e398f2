// stepgraph/runtime/executor.h — the StepExecutor: the API a training
// framework embeds as its step executor.
//
// Note [Host code runs at warm-up and capture only]
// The step function is called W times eagerly (warm-up, real updates) and
// once per slot and shape bucket under stream capture. It is NEVER called on
// replay: a replay re-runs the captured kernels with the arguments they had
// at capture and the buffer contents they find. So a value that changes per
// step (the step counter, the learning rate, the RNG seed and offset) must be
// read by the kernels from ctx.scalars() (device-visible memory the executor
// writes before each replay), never passed as a host value: a host value is
// baked into the graph. check_against_eager() catches a step that does so.
//
// Lifecycle (ExecutorState): created → warming up → captured → ready; any
// device fault or watchdog timeout → failed (sticky: every later call throws
// InvalidState naming the step and the cause); close() or the destructor →
// closed. Destroying an executor cancels queued replays, waits for those on
// the device, stops its thread, then releases exec → graph → memory. After a
// failure (a watchdog timeout: a step that may never finish) it waits at most
// one more deadline (1 s without one) for the device, then leaves exec, graph
// and memory to be freed when the device finishes, or leaked if it never
// does, rather than hang (Note [Closing a wedged executor], executor.cpp).
//
// Ownership: the executor owns its backend objects, arena, pinned buffers,
// graphs and thread; ReplayHandle and InputSlot share state with it and stay
// safe to use (they report kClosed) after it is destroyed.
// Thread-safety: every public member is thread-safe. Callbacks run on the
// executor's own thread (never a CUDA-internal one) and may call replay().
// Capture: no member may be called from inside the step function (they are
// not capturable); the step function itself runs under capture.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/collectives_hook.h>
#include <stepgraph/runtime/metrics.h>
#include <stepgraph/runtime/step_scalars.h>
#include <stepgraph/runtime/trace.h>

namespace stepgraph::runtime {

enum class ExecutorState { kCreated, kWarmingUp, kCaptured, kReady, kFailed, kClosed };
[[nodiscard]] std::string_view to_string(ExecutorState s) noexcept;

/// What replay()/acquire_inputs() do when every slot is in use.
enum class OnBusy { kBlock, kThrow };

/// How a step input reaches the graph.
enum class InputMode {
  kZeroCopy,  // the graph reads the registered pinned buffer in place (data read once)
  kCopyIn,    // one copy node inside the graph brings it to the device (data read many times)
};

/// How replay() runs the step: the captured graph, or the step function
/// eagerly on every call (the reference the demo and the checker compare to).
enum class ExecutionMode { kGraph, kEager };

struct BufferSpec {
  std::string name;
  std::size_t bytes = 0;
  DType dtype = DType::kFloat32;          // for check_against_eager's element-wise difference
  InputMode mode = InputMode::kZeroCopy;  // inputs only
};

/// The buffers a step uses, declared before warm-up so that all memory is
/// allocated first (nothing is allocated during capture).
struct StepSpec {
  std::vector<BufferSpec> inputs;   // pinned, one set per slot, filled by the caller
  std::vector<BufferSpec> outputs;  // pinned, one set per slot, written in place by the graph
  std::vector<BufferSpec> state;    // device memory shared by all steps (parameters, optimizer state)
  std::vector<BufferSpec> scratch;  // device memory per slot (activations, gradients)
};

enum class StepErrorKind { kDeviceFault, kTimeout, kCancelled, kCallback, kCollective };
[[nodiscard]] std::string_view to_string(StepErrorKind k) noexcept;

struct StepError {
  StepErrorKind kind = StepErrorKind::kDeviceFault;
  std::int64_t step = -1;
  std::optional<std::string> node;  // where it can be known (host: always for faults)
  std::string message;
};

enum class ReplayStatus { kQueued, kRunning, kDone, kFailed, kCancelled, kClosed };
[[nodiscard]] std::string_view to_string(ReplayStatus s) noexcept;

class StepExecutor;
namespace detail {
struct ExecutorCore;
struct ReplayState;
}  // namespace detail

/// A free slot's input buffers, for the caller to fill; handed back to
/// replay(). Move-only. Dropping it unused returns the slot.
class InputSlot {
 public:
  InputSlot();
  InputSlot(InputSlot&&) noexcept;
  InputSlot& operator=(InputSlot&&) noexcept;
  InputSlot(const InputSlot&) = delete;
  InputSlot& operator=(const InputSlot&) = delete;
  ~InputSlot();

  [[nodiscard]] int index() const;
  /// The registered pinned input buffer called `name` (host_data() to fill).
  [[nodiscard]] const Buffer& input(std::string_view name) const;
  template <class T>
  [[nodiscard]] std::span<T> input_span(std::string_view name) const {
    return input(name).host_span<T>();
  }
  [[nodiscard]] bool valid() const noexcept { return core_ != nullptr; }

 private:
  friend class StepExecutor;
  std::shared_ptr<detail::ExecutorCore> core_;
  int slot_ = -1;
};

/// The result of one replay. Shared with the executor; copyable.
class ReplayHandle {
 public:
  ReplayHandle() = default;
  [[nodiscard]] std::int64_t step() const;
  [[nodiscard]] ReplayStatus status() const;
  /// True once the replay has finished (done, failed or cancelled).
  [[nodiscard]] bool poll() const;
  /// Waits; returns the final status, or nullopt past the timeout.
  std::optional<ReplayStatus> wait_for(std::chrono::nanoseconds timeout) const;
  ReplayStatus wait() const;
  [[nodiscard]] std::optional<StepError> error() const;
  /// Calls `fn` on the executor's thread when the replay finishes (at once,
  /// on that thread, if it already has).
  void on_complete(std::function<void(const ReplayHandle&)> fn) const;
  /// Cancels the replay if it has not been handed to the device yet.
  bool cancel() const;
  /// The slot's pinned output `name`, valid until release().
  [[nodiscard]] const Buffer& output(std::string_view name) const;
  template <class T>
  [[nodiscard]] std::span<T> output_span(std::string_view name) const {
    return output(name).host_span<T>();
  }
  /// Gives the slot back (its outputs may be overwritten from now on).
  void release() const;
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

 private:
  friend class StepExecutor;
  friend struct detail::ExecutorCore;
  explicit ReplayHandle(std::shared_ptr<detail::ReplayState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::ReplayState> state_;
};

/// What the step function sees. Valid only during the call.
class StepContext {
 public:
  [[nodiscard]] StreamRef stream() const { return stream_; }
  [[nodiscard]] Backend& backend() const { return *backend_; }
  [[nodiscard]] int device() const { return device_; }
  [[nodiscard]] int slot() const { return slot_; }
  [[nodiscard]] std::uint64_t shape_key() const { return shape_key_; }
  /// True while the call is being captured (host code still runs, once).
  [[nodiscard]] bool capturing() const { return capturing_; }
  /// The input as the kernels must read it: the pinned buffer (zero copy),
  /// or its device copy (copy-in; the copy node is already in the graph).
  [[nodiscard]] const Buffer& input(std::string_view name) const;
  [[nodiscard]] const Buffer& output(std::string_view name) const;
  [[nodiscard]] const Buffer& state(std::string_view name) const;
  [[nodiscard]] const Buffer& scratch(std::string_view name) const;
  /// Device-visible StepScalars the replay reads. Pass scalars_ptr() to
  /// kernels; never pass a host copy of its values (Note above).
  [[nodiscard]] const Buffer& scalars() const;
  [[nodiscard]] const StepScalars* scalars_ptr() const { return scalars().data<const StepScalars>(); }
  /// The host view of this slot's scalars as of this call. Reading it bakes
  /// the value into a graph: for host logic at warm-up only.
  [[nodiscard]] const StepScalars& host_scalars() const;
  [[nodiscard]] CollectiveOps& collectives() const { return *collectives_; }

 private:
  friend struct detail::ExecutorCore;
  StepContext() = default;
  detail::ExecutorCore* core_ = nullptr;
  StreamRef stream_;
  Backend* backend_ = nullptr;
  CollectiveOps* collectives_ = nullptr;
  int device_ = 0;
  int slot_ = 0;
  std::uint64_t shape_key_ = 0;
  bool capturing_ = false;
};

using StepFunction = std::function<void(StepContext&)>;
using ErrorCallback = std::function<void(const StepError&)>;

struct ExecutorOptions {
  std::string backend = "auto";               // auto | cuda | host (ignored if backend_instance is set)
  std::shared_ptr<Backend> backend_instance;  // share a backend with other code
  BackendOptions backend_options;
  int device = 0;
  int warmup = 3;         // eager iterations on the capture stream before capture
  int max_in_flight = 2;  // slots
  int launch_ahead = 2;   // replays handed to the device at once; later ones queue (cancellable)
  OnBusy on_busy = OnBusy::kBlock;
  ErrorCallback on_error;                 // runs on the executor's thread
  std::chrono::milliseconds deadline{0};  // per replay; 0 = none (watchdog off)
  std::size_t max_shape_buckets = 8;      // past it: a warning, and the least recently used bucket is dropped
  ExecutionMode mode = ExecutionMode::kGraph;
  std::shared_ptr<CollectiveOps> collectives;  // default SingleDeviceCollectives
  StepScalars initial_scalars;
  /// Metrics (Note [Executor metrics], executor.cpp): the registry the
  /// executor's counters, gauges and histograms go to. Null: a registry of
  /// its own when metrics_port asks for a server, else none (metrics off).
  /// Executors sharing a registry add up in the same series.
  std::shared_ptr<MetricsRegistry> metrics;
  /// Serves the registry at http://metrics_address:metrics_port/metrics.
  /// -1: no server of its own (off by default); 0: an ephemeral port
  /// (StepExecutor::metrics_port() says which). Without one, a set
  /// STEPGRAPH_METRICS_PORT gives every executor of the process one shared
  /// registry served on that port by one server.
  int metrics_port = -1;
  std::string metrics_address = "127.0.0.1";
  /// Records replays into this trace (trace.h); null: not traced.
  std::shared_ptr<TraceRecorder> trace;
};

struct MemoryReport {
  std::size_t arena_bytes = 0;  // the device arena, allocated before warm-up
  std::size_t arena_used = 0;
  std::size_t pinned_bytes = 0;  // every pinned buffer (inputs, outputs, scalars) of every slot
  std::size_t per_slot_pinned = 0;
  std::size_t per_slot_device = 0;  // scratch and copy-in buffers of one slot
  std::size_t state_bytes = 0;
};

/// Largest absolute element-wise difference per buffer between k eager
/// steps and k replayed steps from the same state.
struct EagerCheck {
  int steps = 0;
  std::map<std::string, double> max_abs_diff;  // per state and output buffer
  [[nodiscard]] double worst() const;
};

class StepExecutor {
 public:
  StepExecutor(StepSpec spec, StepFunction step, ExecutorOptions options = {});
  StepExecutor(const StepExecutor&) = delete;
  StepExecutor& operator=(const StepExecutor&) = delete;
  ~StepExecutor();

  /// Allocates, warms up, captures and instantiates for `shape_key` (done
  /// on first use otherwise). The warm-ups it runs are real steps on slot
  /// 0's inputs *as they are* (zeros unless filled): to warm up on real
  /// batches, skip prepare() and let the first `warmup` replay() calls be
  /// the warm-ups (they run eagerly, then the next replay() captures).
  void prepare(std::uint64_t shape_key = 0);

  /// A free slot's input buffers. With none free: blocks, or throws
  /// InvalidState, as OnBusy says (and always throws on the executor's own
  /// thread, where blocking would wait for itself).
  [[nodiscard]] InputSlot acquire_inputs();
  /// Starts one step on the slot's inputs and returns without waiting for
  /// it. The call that captures (the first after the warm-ups, or the first
  /// of a new shape bucket) runs the step function under capture first. A
  /// replay queued beyond `launch_ahead` is launched later by the executor's
  /// thread — and if it is a warm-up or a capture, the step function then
  /// runs on that thread: keep per-thread state (a framework's current
  /// stream) out of step functions, or keep launch_ahead ≥ max_in_flight.
  ReplayHandle replay(InputSlot slot, std::uint64_t shape_key = 0);
  /// Acquires a slot and starts a step with its inputs as they are.
  ReplayHandle replay(std::uint64_t shape_key = 0);
  /// Waits for every replay handed out so far to finish.
  void synchronize();

  // --- step scalars: seen by the next replay()
  void set_learning_rate(float lr);
  void set_loss_scale(float scale);
  void set_rng(std::uint64_t seed, std::uint64_t offset);
  /// The offset added to rng_offset after every step (default 1).
  void set_rng_offset_increment(std::uint64_t inc);
  [[nodiscard]] StepScalars scalars() const;  // what the next replay will see

  /// Copies a state buffer from/to the host (not during a replay).
  void write_state(std::string_view name, const void* data, std::size_t bytes);
  void read_state(std::string_view name, void* data, std::size_t bytes);

  /// Runs k steps replayed and k eager from the same state and inputs (the
  /// inputs of slot 0 as they are), then restores the state.
  [[nodiscard]] EagerCheck check_against_eager(int k, std::uint64_t shape_key = 0);

  [[nodiscard]] ExecutorState state() const;
  [[nodiscard]] std::optional<StepError> failure() const;
  [[nodiscard]] MemoryReport memory_report() const;
  [[nodiscard]] std::int64_t steps_started() const;
  [[nodiscard]] std::size_t shape_buckets() const;
  [[nodiscard]] Backend& backend() const;
  /// The captured graph of (shape_key, slot), for inspection.
  [[nodiscard]] GraphInfo graph_info(std::uint64_t shape_key = 0, int slot = 0) const;
  /// The registry the executor's metrics go to (null with metrics off); for
  /// user gauges such as the loss.
  [[nodiscard]] std::shared_ptr<MetricsRegistry> metrics() const;
  /// The port its metrics server listens on; -1 without one.
  [[nodiscard]] int metrics_port() const;
  /// Cancels queued replays, waits for the rest, releases everything.
  /// After a failure the wait is bounded (see the lifecycle note above).
  void close();

 private:
  std::shared_ptr<detail::ExecutorCore> core_;
};

/// A bump allocator over one device allocation, made before warm-up
/// (Note [Arena]: no allocation may happen during capture).
/// Ownership: sub-buffers keep the arena's memory alive.
/// Thread-safety: allocate() is thread-safe.
class DeviceArena {
 public:
  DeviceArena(Backend& backend, int device, std::size_t bytes);
  /// A sub-buffer of `bytes` aligned to `alignment`; InvalidState naming
  /// `name` if the arena is exhausted.
  [[nodiscard]] Buffer allocate(std::size_t bytes, std::string_view name, std::size_t alignment = 256);
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::size_t used() const noexcept;
  [[nodiscard]] int device() const noexcept { return device_; }
  static std::size_t aligned(std::size_t bytes, std::size_t alignment = 256) {
    return (bytes + alignment - 1) / alignment * alignment;
  }

 private:
  Buffer memory_;
  int device_;
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::size_t used_ = 0;
};

/// A view of bytes [offset, offset+bytes) of `parent` as a Buffer of its own
/// (own id, same device and kind); keeps the parent's memory alive.
[[nodiscard]] Buffer sub_buffer(const Buffer& parent, std::size_t offset, std::size_t bytes);

}  // namespace stepgraph::runtime
