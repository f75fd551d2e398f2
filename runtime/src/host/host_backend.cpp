// The host backend: a CPU executor with CUDA's semantics (DESIGN.md section 2).
//
// Note [Host capture]
// A capture follows CUDA's stream-capture model (CUDA Programming Guide,
// "Creating a Graph Using Stream Capture"): an operation on a capturing
// stream becomes a node whose dependencies are the stream's current frontier
// and is never executed; recording an event in a capture remembers the
// frontier; a stream that waits on such an event joins the capture (fork);
// the origin stream ends the capture, which fails if a joined stream's last
// work was not joined back, or if the capture was invalidated by an illegal
// call (a synchronize or query of captured work, a wait on an event recorded
// outside the capture, an unsafe call that the capture mode prohibits).
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <set>
#include <thread>
#include <utility>

#include <stepgraph/core/log.h>
#include <stepgraph/topology/live.h>

#include "host/scheduler.h"
#include "impl.h"

namespace stepgraph::runtime::detail {
namespace {

using host::ExecNode;
using host::ExecPayload;
using host::GraphRun;
using host::Scheduler;
using host::Task;

class HostBackend;
class HostStream;
class HostGraph;

thread_local CaptureMode tls_capture_mode = CaptureMode::kGlobal;

/// The values of the conditions of one executable graph (its body graphs'
/// included): one per ConditionHandle made in the graph's capture, reset to
/// their defaults at each launch (cudaGraphCondAssignDefault). Launches of
/// one executable run one after another, so one table per executable is
/// what CUDA keeps per executable graph.
struct ConditionTable {
  std::vector<std::uint64_t> ids;
  std::vector<unsigned> defaults;
  std::unique_ptr<std::atomic<unsigned>[]> values;

  [[nodiscard]] std::atomic<unsigned>* find(std::uint64_t id) const {
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (ids[i] == id) return &values[i];
    return nullptr;
  }
  void reset() const {
    for (std::size_t i = 0; i < ids.size(); ++i) values[i].store(defaults[i], std::memory_order_relaxed);
  }
};

/// The table of the graph whose node runs on this thread (set around each
/// node of a graph that has conditions), for set_condition.
thread_local const ConditionTable* tls_conditions = nullptr;

class ConditionScope {
 public:
  explicit ConditionScope(const ConditionTable* table) : previous_(std::exchange(tls_conditions, table)) {}
  ConditionScope(const ConditionScope&) = delete;
  ConditionScope& operator=(const ConditionScope&) = delete;
  ~ConditionScope() { tls_conditions = previous_; }

 private:
  const ConditionTable* previous_;
};

std::atomic<std::uint64_t> next_condition_id{0};

/// A node recorded by a capture.
struct CapturedNode {
  std::string name;
  NodeKind kind = NodeKind::kOther;
  int device = 0;
  int priority = 0;
  std::vector<BufferAccess> accesses;
  std::function<void()> fn;
  std::function<void(std::function<void()>)> async_start;  // a collective (Note [Asynchronous nodes])
  std::optional<CollectiveInfo> collective;
  bool runnable = true;  // false: a kernel with no host implementation
  CopyKind copy_kind = CopyKind::kDeviceToDevice;
  int src_device = -1;
  int dst_device = -1;
  std::size_t bytes = 0;
  // kConditional only (Note [Conditional nodes], condition.h)
  std::shared_ptr<const HostGraph> body;
  ConditionalKind conditional = ConditionalKind::kIf;
  std::uint64_t condition = 0;
  unsigned condition_default = 0;
};

class HostGraph final : public GraphImpl {
 public:
  explicit HostGraph(HostBackend& backend) : backend_(backend) {}
  GraphInfo info() const override;
  std::unique_ptr<GraphExecImpl> instantiate(const InstantiateOptions& options) const override;

  /// Every condition made in this graph and in its bodies, (id, default).
  void collect_conditions(std::vector<std::pair<std::uint64_t, unsigned>>& out) const {
    out.insert(out.end(), conditions_.begin(), conditions_.end());
    for (const auto& n : nodes_)
      if (n.body) n.body->collect_conditions(out);
  }

  HostBackend& backend_;
  std::vector<CapturedNode> nodes_;
  std::set<std::pair<std::size_t, std::size_t>> edges_;
  std::vector<std::pair<std::uint64_t, unsigned>> conditions_;  // made by create_condition in this graph
};

struct CaptureState {
  std::mutex mutex;
  CaptureMode mode = CaptureMode::kThreadLocal;
  std::thread::id thread;
  HostStream* origin = nullptr;
  std::unique_ptr<HostGraph> graph;
  std::optional<std::string> invalidated;
  std::vector<HostStream*> streams;  // every stream in the capture, origin first
  bool ended = false;
  /// The capture of a conditional node's body: host functions, collectives
  /// and event records or waits are refused (ConditionalBodyError).
  std::string conditional_body;  // the conditional node's name; empty: not a body
};

class HostEvent final : public EventImpl {
 public:
  HostEvent(HostBackend& backend, int device) : backend_(backend), device_(device) {}
  int device() const override { return device_; }
  bool query() override;
  void synchronize() override;
  bool wait_for(std::chrono::nanoseconds timeout) override;
  float elapsed_ms(const EventImpl& end) const override;

  /// The latest record outside a capture, and its device.
  std::shared_ptr<Task> last_record() const {
    std::lock_guard lock(mutex_);
    return last_;
  }
  /// The capture the latest record was made in, if it is still running.
  std::shared_ptr<CaptureState> live_capture(std::vector<std::uint32_t>* nodes = nullptr) const;

  HostBackend& backend_;
  int device_;
  std::atomic<bool> waited_{false};  // SyncCounts::events_waited_on
  mutable std::mutex mutex_;
  std::shared_ptr<Task> last_;
  std::weak_ptr<CaptureState> capture_;
  std::vector<std::uint32_t> capture_nodes_;
  bool captured_ = false;  // the latest record was made in a capture (ended or not)

  /// Whether the latest record was made in a capture that has ended (Note
  /// [Events recorded in a finished capture], cuda/backend.cpp).
  bool recorded_in_ended_capture() const {
    std::lock_guard lock(mutex_);
    if (!captured_) return false;
    auto cap = capture_.lock();
    if (!cap) return true;
    std::lock_guard cl(cap->mutex);
    return cap->ended;
  }

 private:
  void check_not_captured(std::string_view what);
  void throw_if_faulted(const std::shared_ptr<Task>& task) const;
};

class HostStream final : public StreamImpl {
 public:
  HostStream(HostBackend& backend, int device, int priority, bool legacy)
      : backend_(backend), device_(device), priority_(priority), legacy_(legacy) {}
  ~HostStream() override;

  int device() const override { return device_; }
  void launch_kernel(KernelParams&& params) override;
  void copy(const BufferSlice& dst, const BufferSlice& src, std::string name) override;
  void memset(const BufferSlice& dst, unsigned char value, std::string name) override;
  void host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) override;
  void collective(CollectiveCall&& call) override;
  void record(EventImpl& event) override;
  void wait(const EventImpl& event) override;
  void synchronize() override;
  bool query() override;
  void begin_capture(CaptureMode mode) override;
  std::unique_ptr<GraphImpl> end_capture() override;
  CaptureStatus capture_status() const override;
  ConditionHandle create_condition(unsigned default_value) override;
  void capture_conditional(ConditionalKind kind, ConditionHandle condition, const std::function<void(StreamRef)>& body,
                           std::string name) override;

  /// Enqueues `node` eagerly, or records it in the capture.
  void submit(CapturedNode node);
  void launch_exec(const std::shared_ptr<const ExecPayload>& payload,
                   const std::shared_ptr<const ConditionTable>& conditions, std::shared_ptr<Task>& exec_last,
                   std::mutex& exec_mutex);
  /// Throws ConditionalBodyError if this stream captures a conditional
  /// node's body, where `what` is not allowed.
  void refuse_in_body(std::string_view what, std::string_view op) const;
  /// True while this stream captures (also as a forked stream).
  [[nodiscard]] bool capturing() const { return capture() != nullptr; }
  std::string label() const {
    return legacy_ ? fmt::format("legacy default stream of host device {}", device_)
                   : fmt::format("stream of host device {}", device_);
  }

  HostBackend& backend_;
  const int device_;
  const int priority_;
  const bool legacy_;
  mutable std::mutex mutex_;
  std::shared_ptr<Task> tail_;
  std::shared_ptr<CaptureState> capture_;
  std::vector<std::uint32_t> frontier_;

 private:
  void enqueue(std::shared_ptr<Task> task, const std::shared_ptr<Task>& extra_dep = nullptr);
  std::shared_ptr<CaptureState> capture() const {
    std::lock_guard lock(mutex_);
    return capture_;
  }
  void invalidate_and_throw(const std::shared_ptr<CaptureState>& cap, const std::string& message);
};

class HostGraphExec final : public GraphExecImpl {
 public:
  HostGraphExec(HostBackend& backend, std::shared_ptr<const ExecPayload> payload,
                std::shared_ptr<const ConditionTable> conditions, GraphInfo info, InstantiateOptions options)
      : backend_(backend),
        payload_(std::move(payload)),
        conditions_(std::move(conditions)),
        info_(std::move(info)),
        options_(options) {}
  void launch(StreamImpl& stream) override;
  UpdateInfo update(const GraphImpl& graph) override;
  std::size_t node_count() const override { return info_.nodes.size(); }

 private:
  HostBackend& backend_;
  std::mutex mutex_;
  std::shared_ptr<const ExecPayload> payload_;
  std::shared_ptr<const ConditionTable> conditions_;  // null: the graph has no conditional node
  GraphInfo info_;
  InstantiateOptions options_;
  std::shared_ptr<Task> last_launch_;
};

class HostBackend final : public BackendImpl {
 public:
  explicit HostBackend(const BackendOptions& options);
  ~HostBackend() override;

  BackendKind kind() const override { return BackendKind::kHost; }
  int device_count() const override { return static_cast<int>(devices_.size()); }
  DeviceInfo device(int index) const override { return devices_[static_cast<std::size_t>(index)]; }
  std::shared_ptr<BufferImpl> allocate(int device, std::size_t bytes) override;
  std::shared_ptr<BufferImpl> allocate_pinned(std::size_t bytes, int numa_node) override;
  std::shared_ptr<BufferImpl> register_host(void* ptr, std::size_t bytes) override;
  void enable_peer_access(int device, int peer) override {
    check_fault(device, "enable_peer_access");
    set_peer_enabled(device, peer);
  }
  std::unique_ptr<StreamImpl> create_stream(int device, const StreamOptions& options) override {
    check_fault(device, "create_stream");
    return std::make_unique<HostStream>(*this, device, options.priority, false);
  }
  std::unique_ptr<EventImpl> create_event(int device) override { return std::make_unique<HostEvent>(*this, device); }
  StreamImpl* legacy_default_stream(int device) override { return legacy_[static_cast<std::size_t>(device)].get(); }
  void synchronize_device(int device) override;
  std::optional<std::string> device_fault(int device) const override {
    auto f = scheduler_->fault(device);
    return f ? std::optional<std::string>(f->message) : std::nullopt;
  }
  CaptureMode exchange_thread_capture_mode(CaptureMode mode) override { return std::exchange(tls_capture_mode, mode); }

  /// Throws DeviceFault if `device` has faulted (sticky).
  void check_fault(int device, std::string_view what) const {
    if (!scheduler_->faulted(device)) return;
    const auto f = scheduler_->fault(device).value_or(host::Scheduler::Fault{"?", ""});
    throw DeviceFault(fmt::format("{} on host device {}: the device has faulted earlier and every later "
                                  "operation fails (as on CUDA): {}",
                                  what, device, f.message),
                      f.node);
  }
  /// An unsafe call (allocation, device synchronize, ...) made while a
  /// capture is running: prohibited according to CUDA's capture modes.
  void check_unsafe_call(std::string_view what);
  void add_capture(const std::shared_ptr<CaptureState>& cap) {
    std::lock_guard lock(captures_mutex_);
    captures_.push_back(cap);
  }
  void remove_capture(const CaptureState* cap) {
    std::lock_guard lock(captures_mutex_);
    std::erase_if(captures_, [&](const auto& c) { return c.get() == cap; });
  }

  Scheduler& scheduler() { return *scheduler_; }
  std::shared_ptr<BufferImpl> make_buffer(MemoryKind kind, int device, std::size_t bytes, int numa,
                                          void* caller_memory);
  /// The executable form of `graph`; conditional nodes get their bodies'
  /// payloads and `conditions` (the table of the whole executable), which
  /// build_exec makes. Null with `failing_node` and `why` set if a node
  /// cannot run.
  std::unique_ptr<ExecPayload> build_payload(const HostGraph& graph, const InstantiateOptions& options,
                                             const std::shared_ptr<const ConditionTable>& conditions,
                                             std::optional<std::size_t>* failing_node, std::string* why) const;

 private:
  std::vector<DeviceInfo> devices_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<HostStream>> legacy_;
  std::mutex captures_mutex_;
  std::vector<std::shared_ptr<CaptureState>> captures_;
};

// ------------------------------------------------------------------ backend

HostBackend::HostBackend(const BackendOptions& options) {
  STEPGRAPH_CHECK(options.host_devices >= 1, InvalidArgument, "host backend: host_devices is {}; give at least 1",
                  options.host_devices);
  STEPGRAPH_CHECK(options.workers_per_device >= 1, InvalidArgument,
                  "host backend: workers_per_device is {}; give at least 1", options.workers_per_device);
  const auto& machine = topology::LiveMachine::get();
  const auto& numa = machine.numa_nodes();
  Scheduler::Options so;
  so.devices = options.host_devices;
  so.workers_per_device = options.workers_per_device;
  so.shuffle_seed = options.shuffle_seed;
  so.owner = this;
  for (int d = 0; d < options.host_devices; ++d) {
    DeviceInfo info;
    info.index = d;
    info.backend = BackendKind::kHost;
    info.name = fmt::format("host:{}", d);
    info.workers = options.workers_per_device;
    if (!numa.empty()) {
      const auto& node = numa[static_cast<std::size_t>(d) % numa.size()];
      info.numa_node = node.os_index;
      info.cpus = node.cpus;
      info.memory_bytes = node.memory_bytes;
    }
    so.device_cpus.push_back(options.bind_workers ? info.cpus.pus : std::vector<int>{});
    devices_.push_back(std::move(info));
  }
  scheduler_ = std::make_unique<Scheduler>(so);
  for (int d = 0; d < options.host_devices; ++d) legacy_.push_back(std::make_unique<HostStream>(*this, d, 0, true));
  STEPGRAPH_DEBUG(kRuntime, "host backend: {} device(s), {} worker(s) each, shuffle seed {}", options.host_devices,
                  options.workers_per_device, options.shuffle_seed);
}

HostBackend::~HostBackend() {
  // Let enqueued work finish before the workers stop (as a process exit
  // would not, but a destroyed backend must not leave threads running).
  for (int d = 0; d < device_count(); ++d) scheduler_->wait_idle(d);
  legacy_.clear();
  scheduler_.reset();
}

void HostBackend::check_unsafe_call(std::string_view what) {
  const CaptureMode mine = tls_capture_mode;
  if (mine == CaptureMode::kRelaxed) return;
  const auto self = std::this_thread::get_id();
  // Every capture that prohibits the call is invalidated, not only the first
  // found: each is a reason for the refusal.
  std::optional<std::string> refusal;
  std::lock_guard lock(captures_mutex_);
  for (const auto& cap : captures_) {
    std::lock_guard cl(cap->mutex);
    if (cap->ended) continue;
    const bool own = cap->thread == self && cap->mode != CaptureMode::kRelaxed;
    const bool other_global = cap->thread != self && mine == CaptureMode::kGlobal && cap->mode == CaptureMode::kGlobal;
    if (own || other_global) {
      const std::string reason = fmt::format(
          "{} was called while a {} capture was running{}; it is not permitted then "
          "(cudaErrorStreamCaptureUnsupported) and invalidated the capture. Allocate and "
          "synchronise before capture, or use thread-local capture / a relaxed CaptureModeGuard",
          what, to_string(cap->mode), own ? " on this thread" : " on another thread");
      if (!cap->invalidated) cap->invalidated = reason;
      if (!refusal) refusal = reason;
    }
  }
  if (refusal) throw InvalidState(*refusal);
}

std::shared_ptr<BufferImpl> HostBackend::make_buffer(MemoryKind kind, int device, std::size_t bytes, int numa,
                                                     void* caller_memory) {
  // Host memory stands for every kind: a device's memory is placed on its
  // NUMA node, pinned memory on the node asked for; caller memory is only
  // recorded (the caller owns it).
  void* p = caller_memory;
  if (p == nullptr) p = numa >= 0 ? topology::LiveMachine::get().allocate_on_node(bytes, numa) : ::operator new(bytes);
  auto b = std::make_shared<BufferImpl>();
  b->id = next_buffer_id();
  b->kind = kind;
  b->device = kind == MemoryKind::kDevice ? device : -1;
  b->size = bytes;
  b->device_ptr = p;
  b->host_ptr = kind == MemoryKind::kPinnedHost ? p : nullptr;
  b->backend = this;
  b->keep_backend = shared_from_this();
  if (caller_memory == nullptr) {
    b->release = [p, bytes, numa] {
      if (numa >= 0)
        topology::LiveMachine::get().free_on_node(p, bytes);
      else
        ::operator delete(p);
    };
  }
  return b;
}

std::shared_ptr<BufferImpl> HostBackend::allocate(int device, std::size_t bytes) {
  check_fault(device, "allocate");
  check_unsafe_call(fmt::format("Backend::allocate({} bytes, device {})", bytes, device));
  return make_buffer(MemoryKind::kDevice, device, bytes, devices_[static_cast<std::size_t>(device)].numa_node, nullptr);
}

std::shared_ptr<BufferImpl> HostBackend::allocate_pinned(std::size_t bytes, int numa_node) {
  check_unsafe_call(fmt::format("Backend::allocate_pinned({} bytes)", bytes));
  const auto& machine = topology::LiveMachine::get();
  const auto& nodes = machine.numa_nodes();
  int numa = numa_node >= 0 ? numa_node : (nodes.empty() ? -1 : nodes[0].os_index);
  // As on CUDA: a node missing from the topology this process sees (a cgroup
  // or cpuset filtered it) gets unplaced memory, not an error.
  if (numa >= 0 && std::none_of(nodes.begin(), nodes.end(), [&](const auto& n) { return n.os_index == numa; })) {
    STEPGRAPH_WARN(kMemory,
                   "allocate_pinned: NUMA node {} is not in this process's topology (filtered by a cgroup or "
                   "cpuset?); using memory without NUMA placement",
                   numa);
    numa = -1;
  }
  return make_buffer(MemoryKind::kPinnedHost, -1, bytes, numa, nullptr);
}

std::shared_ptr<BufferImpl> HostBackend::register_host(void* ptr, std::size_t bytes) {
  check_unsafe_call(fmt::format("Backend::register_host({}, {} bytes)", ptr, bytes));
  return make_buffer(MemoryKind::kPinnedHost, -1, bytes, -1, ptr);
}

void HostBackend::synchronize_device(int device) {
  SyncCounters::bump(sync_counters().device_synchronize);
  check_unsafe_call(fmt::format("Backend::synchronize_device({})", device));
  scheduler_->wait_idle(device);
  check_fault(device, "synchronize_device");
}

namespace {

/// Runs a conditional node (Note [Conditional nodes], condition.h): reads
/// its condition now, and if it is non-zero runs the body as a graph run of
/// its own on the node's device (a launch task), then — WHILE — reads it
/// again, and so on; `done` completes the node. Asynchronous like a
/// collective (Note [Asynchronous nodes]): the worker never waits for the
/// body, whose nodes may need that worker.
void run_conditional(Scheduler* sched, std::shared_ptr<const ExecPayload> body,
                     std::shared_ptr<const ConditionTable> conditions, std::uint64_t id, ConditionalKind kind,
                     int device, std::function<void()> done) {
  const std::atomic<unsigned>* value = conditions->find(id);
  if (value == nullptr || value->load(std::memory_order_relaxed) == 0 || body->nodes.empty() ||
      sched->faulted(device)) {
    done();
    return;
  }
  auto launch = std::make_shared<Task>();
  launch->name = "conditional body";
  launch->device = device;
  launch->run = [body, sched](const std::shared_ptr<Task>& self) {
    auto run = std::make_shared<GraphRun>();
    run->payload = body;
    run->launch_task = self;
    sched->start_run(run);
    return false;  // completes when the body's last node has run
  };
  auto after = std::make_shared<Task>();
  after->name = "conditional body end";
  after->device = device;
  after->run = [sched, body, conditions, id, kind, device, done = std::move(done)](const std::shared_ptr<Task>&) {
    if (kind == ConditionalKind::kWhile)
      run_conditional(sched, body, conditions, id, kind, device, done);  // evaluated again after each run
    else
      done();
    return true;
  };
  Scheduler::add_dependency(after, launch);
  sched->submit(launch);
  sched->submit(after);
}

}  // namespace

std::unique_ptr<ExecPayload> HostBackend::build_payload(const HostGraph& graph, const InstantiateOptions& options,
                                                        const std::shared_ptr<const ConditionTable>& conditions,
                                                        std::optional<std::size_t>* failing_node,
                                                        std::string* why) const {
  auto payload = std::make_unique<ExecPayload>();
  payload->nodes.resize(graph.nodes_.size());
  for (std::size_t i = 0; i < graph.nodes_.size(); ++i) {
    const auto& n = graph.nodes_[i];
    if (n.body) {
      std::optional<std::size_t> inner;
      std::string inner_why;
      auto body = build_payload(*n.body, options, conditions, &inner, &inner_why);
      if (!body) {
        *failing_node = i;
        *why = fmt::format("in the body of conditional node '{}': {}", n.name, inner_why);
        return nullptr;
      }
      auto& e = payload->nodes[i];
      e.name = n.name;
      e.device = n.device;
      e.priority = options.use_node_priority ? n.priority : 0;
      Scheduler* sched = scheduler_.get();
      e.async_start = [sched, body = std::shared_ptr<const ExecPayload>(std::move(body)), conditions, id = n.condition,
                       kind = n.conditional, device = n.device](std::function<void()> done) {
        run_conditional(sched, body, conditions, id, kind, device, std::move(done));
      };
      e.keep = std::make_shared<const std::vector<BufferAccess>>(n.accesses);
      continue;
    }
    if (!n.runnable) {
      *failing_node = i;
      *why = fmt::format(
          "kernel node '{}' has no host implementation (like a CUDA kernel with no image for "
          "the device); give Kernel::host",
          n.name);
      return nullptr;
    }
    auto& e = payload->nodes[i];
    e.name = n.name;
    e.device = n.device;
    e.priority = options.use_node_priority ? n.priority : 0;
    e.fn = n.fn;
    if (conditions && e.fn) {
      // A kernel of this graph may set one of its conditions (set_condition).
      e.fn = [fn = std::move(e.fn), conditions] {
        ConditionScope scope(conditions.get());
        fn();
      };
    }
    e.async_start = n.async_start;
    // The executable keeps the node's declared buffers alive.
    e.keep = std::make_shared<const std::vector<BufferAccess>>(n.accesses);
  }
  for (auto [a, b] : graph.edges_) {
    payload->nodes[a].successors.push_back(static_cast<std::uint32_t>(b));
    payload->nodes[b].in_degree++;
  }
  for (std::size_t i = 0; i < payload->nodes.size(); ++i)
    if (payload->nodes[i].in_degree == 0) payload->roots.push_back(static_cast<std::uint32_t>(i));
  for (const auto& n : graph.nodes_)
    payload->accesses.insert(payload->accesses.end(), n.accesses.begin(), n.accesses.end());
  return payload;
}

// ------------------------------------------------------------------ graph

GraphInfo HostGraph::info() const {
  GraphInfo info;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const auto& n = nodes_[i];
    NodeInfo ni;
    ni.index = i;
    ni.name = n.name;
    ni.kind = n.kind;
    ni.device = n.device;
    ni.accesses = access_infos(n.accesses);
    ni.copy_kind = n.copy_kind;
    ni.src_device = n.src_device;
    ni.dst_device = n.dst_device;
    ni.bytes = n.bytes;
    ni.priority = n.priority;
    ni.collective = n.collective;
    if (n.body)
      ni.conditional = ConditionalInfo{n.conditional, n.condition, n.condition_default,
                                       std::make_shared<const GraphInfo>(n.body->info())};
    info.nodes.push_back(std::move(ni));
  }
  info.edges.assign(edges_.begin(), edges_.end());
  return info;
}

namespace {
/// The condition table of an executable made from `graph`; null without conditions.
std::shared_ptr<const ConditionTable> make_condition_table(const HostGraph& graph) {
  std::vector<std::pair<std::uint64_t, unsigned>> all;
  graph.collect_conditions(all);
  if (all.empty()) return nullptr;
  auto t = std::make_shared<ConditionTable>();
  t->values = std::make_unique<std::atomic<unsigned>[]>(all.size());
  for (const auto& [id, def] : all) {
    t->ids.push_back(id);
    t->defaults.push_back(def);
  }
  t->reset();
  return t;
}
}  // namespace

std::unique_ptr<GraphExecImpl> HostGraph::instantiate(const InstantiateOptions& options) const {
  std::optional<std::size_t> failing;
  std::string why;
  auto conditions = make_condition_table(*this);
  auto payload = backend_.build_payload(*this, options, conditions, &failing, &why);
  if (!payload) {
    throw GraphInstantiateError(
        fmt::format("instantiate failed at node {} ('{}'): {}", *failing, nodes_[*failing].name, why),
        nodes_[*failing].name);
  }
  return std::make_unique<HostGraphExec>(backend_, std::shared_ptr<const ExecPayload>(std::move(payload)),
                                         std::move(conditions), info(), options);
}

void HostGraphExec::launch(StreamImpl& stream) {
  auto& s = dynamic_cast<HostStream&>(stream);
  std::shared_ptr<const ExecPayload> payload;
  std::shared_ptr<const ConditionTable> conditions;
  GraphInfo info;
  {
    std::lock_guard lock(mutex_);
    payload = payload_;  // parameters as of this call (cudaGraphExecUpdate semantics)
    conditions = conditions_;
    if (s.capturing()) info = info_;
  }
  if (s.capturing()) {
    // A child graph node: CUDA refuses one holding conditional nodes
    // (cudaGraphAddChildGraphNode), and a conditional body refuses what a
    // body may not hold, also inside a child graph.
    for (const auto& n : info.nodes)
      STEPGRAPH_CHECK(n.kind != NodeKind::kConditional, InvalidArgument,
                      "GraphExec::launch into a capture on host device {}: the graph holds the conditional node '{}', "
                      "and a child graph node cannot hold conditional nodes (cudaGraphAddChildGraphNode); launch it "
                      "outside the capture, or capture its work into this graph directly",
                      s.device(), n.name);
    for (const auto& n : info.nodes)
      if (n.kind == NodeKind::kHost || n.kind == NodeKind::kCollective)
        s.refuse_in_body(
            fmt::format("GraphExec::launch of a graph holding the {} node '{}'", to_string(n.kind), n.name), n.name);
  }
  s.launch_exec(payload, conditions, last_launch_, mutex_);
}

UpdateInfo HostGraphExec::update(const GraphImpl& graph) {
  const auto* g = dynamic_cast<const HostGraph*>(&graph);
  STEPGRAPH_CHECK(g != nullptr, InvalidArgument, "GraphExec::update: the graph was made by another backend");
  const GraphInfo next = g->info();
  UpdateInfo result = check_update_rules(info_, next);
  if (!result.ok()) return result;
  std::optional<std::size_t> failing;
  std::string why;
  auto conditions = make_condition_table(*g);
  auto payload = backend_.build_payload(*g, options_, conditions, &failing, &why);
  if (!payload) return {UpdateResult::kFunctionChanged, failing, why};
  std::lock_guard lock(mutex_);
  payload_ = std::move(payload);
  conditions_ = std::move(conditions);
  info_ = next;
  return result;
}

// ------------------------------------------------------------------ events

std::shared_ptr<CaptureState> HostEvent::live_capture(std::vector<std::uint32_t>* nodes) const {
  std::lock_guard lock(mutex_);
  auto cap = capture_.lock();
  if (!cap) return nullptr;
  {
    std::lock_guard cl(cap->mutex);
    if (cap->ended) return nullptr;
  }
  if (nodes != nullptr) *nodes = capture_nodes_;
  return cap;
}

void HostEvent::check_not_captured(std::string_view what) {
  if (recorded_in_ended_capture()) {
    throw InvalidState(fmt::format(
        "Event::{} on host device {}: the event was last recorded by a stream capture that has ended "
        "(cudaErrorCapturedEvent): that record belongs to the captured graph, not to any stream's work, so there "
        "is nothing to query or wait for; record the event again outside capture",
        what, device_));
  }
  if (auto cap = live_capture()) {
    std::string reason = fmt::format(
        "Event::{} on an event recorded inside a capture in progress is not "
        "permitted (cudaErrorStreamCaptureUnsupported) and invalidated the capture; "
        "query or wait on it only after the graph runs",
        what);
    std::lock_guard cl(cap->mutex);
    if (!cap->invalidated) cap->invalidated = reason;
    throw InvalidState(reason);
  }
}

void HostEvent::throw_if_faulted(const std::shared_ptr<Task>& task) const {
  if (task) backend_.check_fault(task->device, "Event");
}

bool HostEvent::query() {
  SyncCounters::bump(backend_.sync_counters().event_query);
  backend_.sync_counters().waited_on(waited_);
  check_not_captured("query");
  auto t = last_record();
  if (!t) return true;
  const bool done = t->done.load(std::memory_order_acquire);
  if (done) throw_if_faulted(t);
  return done;
}

void HostEvent::synchronize() {
  SyncCounters::bump(backend_.sync_counters().event_synchronize);
  backend_.sync_counters().waited_on(waited_);
  check_not_captured("synchronize");
  auto t = last_record();
  if (!t) return;
  backend_.scheduler().wait(*t);
  throw_if_faulted(t);
}

bool HostEvent::wait_for(std::chrono::nanoseconds timeout) {
  SyncCounters::bump(backend_.sync_counters().event_wait_for);
  backend_.sync_counters().waited_on(waited_);
  check_not_captured("wait_for");
  auto t = last_record();
  if (!t) return true;
  if (!backend_.scheduler().wait(*t, timeout)) return false;
  throw_if_faulted(t);
  return true;
}

float HostEvent::elapsed_ms(const EventImpl& end_impl) const {
  const auto& end = dynamic_cast<const HostEvent&>(end_impl);
  STEPGRAPH_CHECK(!recorded_in_ended_capture() && !end.recorded_in_ended_capture(), InvalidState,
                  "Event::elapsed_ms: an event was last recorded by a stream capture that has ended "
                  "(cudaErrorCapturedEvent); record both outside capture");
  auto a = last_record();
  auto b = end.last_record();
  STEPGRAPH_CHECK(a && b, InvalidState, "Event::elapsed_ms: both events must have been recorded");
  STEPGRAPH_CHECK(a->done.load() && b->done.load(), InvalidState,
                  "Event::elapsed_ms: both records must have completed (cudaErrorNotReady); synchronize first");
  return std::chrono::duration<float, std::milli>(b->done_at - a->done_at).count();
}

// ------------------------------------------------------------------ streams

HostStream::~HostStream() {
  // A stream destroyed in the middle of a capture ends it (the graph is lost).
  std::shared_ptr<CaptureState> cap;
  {
    std::lock_guard lock(mutex_);
    cap = capture_;
  }
  if (cap) {
    bool origin = false;
    {
      std::lock_guard cl(cap->mutex);
      if (!cap->invalidated) cap->invalidated = "a stream in the capture was destroyed";
      origin = cap->origin == this;
      if (origin) cap->ended = true;
    }
    if (origin) backend_.remove_capture(cap.get());
  }
}

void HostStream::invalidate_and_throw(const std::shared_ptr<CaptureState>& cap, const std::string& message) {
  {
    std::lock_guard cl(cap->mutex);
    if (!cap->invalidated) cap->invalidated = message;
  }
  throw InvalidState(message);
}

void HostStream::enqueue(std::shared_ptr<Task> task, const std::shared_ptr<Task>& extra_dep) {
  std::lock_guard lock(mutex_);
  Scheduler::add_dependency(task, tail_);
  Scheduler::add_dependency(task, extra_dep);
  tail_ = task;
  backend_.scheduler().submit(task);
}

void HostStream::submit(CapturedNode node) {
  if (auto cap = capture()) {
    std::lock_guard cl(cap->mutex);
    if (cap->invalidated)
      throw InvalidState(
          fmt::format("'{}' on a capture that was invalidated earlier ({}); end the capture on its "
                      "origin stream and capture again",
                      node.name, *cap->invalidated));
    auto& g = *cap->graph;
    const auto index = static_cast<std::uint32_t>(g.nodes_.size());
    if (node.priority == 0) node.priority = priority_;
    g.nodes_.push_back(std::move(node));
    std::lock_guard lock(mutex_);
    for (auto dep : frontier_) g.edges_.emplace(dep, index);
    frontier_.assign(1, index);
    return;
  }
  backend_.check_fault(device_, node.name);
  STEPGRAPH_CHECK(node.runnable, InvalidArgument,
                  "launch '{}' on host device {}: the kernel has no host implementation; give Kernel::host", node.name,
                  device_);
  auto task = std::make_shared<Task>();
  task->name = std::move(node.name);
  task->device = device_;
  task->priority = node.priority != 0 ? node.priority : priority_;
  // The closure keeps the declared buffers alive until the work has run.
  if (node.async_start) {
    task->run = [start = std::move(node.async_start), keep = std::move(node.accesses),
                 sched = &backend_.scheduler()](const std::shared_ptr<Task>& self) {
      start([sched, self] { sched->complete(self); });
      return false;  // Note [Asynchronous nodes]
    };
  } else {
    task->run = [fn = std::move(node.fn), keep = std::move(node.accesses)](const std::shared_ptr<Task>&) {
      if (fn) fn();
      return true;
    };
  }
  enqueue(std::move(task));
}

void HostStream::collective(CollectiveCall&& call) {
  STEPGRAPH_CHECK(static_cast<bool>(call.host_start), InvalidArgument,
                  "collective '{}' on host device {}: the call has no host implementation (host_start); use a "
                  "communicator made for the host backend",
                  call.name, device_);
  refuse_in_body(fmt::format("the collective '{}'", call.name), call.name);
  backend_.resolve_accesses(device_, call.name, call.accesses);
  CapturedNode n;
  n.name = std::move(call.name);
  n.kind = NodeKind::kCollective;
  n.device = device_;
  n.bytes = call.bytes;
  n.collective = std::move(call.info);
  n.accesses = std::move(call.accesses);
  // The completion may come after the last handle to the backend is gone
  // (a replay in flight): the start function keeps the backend alive until
  // the communicator has called it back.
  n.async_start = [start = std::move(call.host_start), keep = backend_.shared_from_this()](std::function<void()> done) {
    start([done = std::move(done), keep]() mutable {
      done();
      done = nullptr;
    });
  };
  submit(std::move(n));
}

void HostStream::launch_kernel(KernelParams&& p) {
  backend_.resolve_accesses(device_, p.name, p.accesses);
  CapturedNode n;
  n.name = std::move(p.name);
  n.kind = NodeKind::kKernel;
  n.device = device_;
  n.priority = p.priority;
  n.runnable = static_cast<bool>(p.host);
  n.fn = std::move(p.host);  // the node keeps the declared buffers alive (n.accesses)
  n.accesses = std::move(p.accesses);
  submit(std::move(n));
}

void HostStream::copy(const BufferSlice& dst, const BufferSlice& src, std::string name) {
  backend_.check_slice("Stream::copy (destination)", dst);
  backend_.check_slice("Stream::copy (source)", src);
  STEPGRAPH_CHECK(dst.bytes == src.bytes, InvalidArgument,
                  "Stream::copy: destination has {} bytes and source {}; give equal sizes", dst.bytes, src.bytes);
  CapturedNode n;
  n.kind = NodeKind::kMemcpy;
  n.copy_kind = BackendImpl::stream_copy_kind(fmt::format("Stream::copy '{}' on host device {}", name, device_),
                                              *dst.buffer, *src.buffer);
  n.name = name.empty() ? fmt::format("memcpy {}", to_string(n.copy_kind)) : std::move(name);
  n.device = device_;
  n.src_device = src.buffer->device;
  n.dst_device = dst.buffer->device;
  n.bytes = dst.bytes;
  n.accesses = {BufferAccess{src.buffer, nullptr, src.offset, src.bytes, Access::kRead},
                BufferAccess{dst.buffer, nullptr, dst.offset, dst.bytes, Access::kWrite}};
  n.fn = [d = dst, s = src] {
    std::memmove(static_cast<char*>(d.buffer->device_ptr) + d.offset,
                 static_cast<const char*>(s.buffer->device_ptr) + s.offset, d.bytes);
  };
  submit(std::move(n));
}

void HostStream::memset(const BufferSlice& dst, unsigned char value, std::string name) {
  backend_.check_slice("Stream::memset", dst);
  CapturedNode n;
  n.kind = NodeKind::kMemset;
  n.name = name.empty() ? "memset" : std::move(name);
  n.device = device_;
  n.dst_device = dst.buffer->device;
  n.bytes = dst.bytes;
  n.accesses = {BufferAccess{dst.buffer, nullptr, dst.offset, dst.bytes, Access::kWrite}};
  n.fn = [d = dst, value] { std::memset(static_cast<char*>(d.buffer->device_ptr) + d.offset, value, d.bytes); };
  submit(std::move(n));
}

void HostStream::host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) {
  STEPGRAPH_CHECK(static_cast<bool>(fn), InvalidArgument, "Stream::host_fn '{}': the function is empty", name);
  refuse_in_body(fmt::format("the host function '{}'", name), name);
  backend_.resolve_accesses(device_, name, accesses);
  CapturedNode n;
  n.kind = NodeKind::kHost;
  n.name = name.empty() ? "host function" : std::move(name);
  n.device = device_;
  n.accesses = std::move(accesses);
  n.fn = std::move(fn);
  submit(std::move(n));
}

void HostStream::record(EventImpl& event_impl) {
  auto& ev = dynamic_cast<HostEvent&>(event_impl);
  refuse_in_body("Stream::record of an event", "event record");
  if (auto cap = capture()) {
    {
      std::lock_guard cl(cap->mutex);
      if (cap->invalidated)
        throw InvalidState(fmt::format("Stream::record on an invalidated capture ({})", *cap->invalidated));
    }
    std::lock_guard el(ev.mutex_);
    std::lock_guard lock(mutex_);
    ev.capture_ = cap;
    ev.capture_nodes_ = frontier_;
    ev.captured_ = true;
    return;
  }
  backend_.check_fault(device_, "Stream::record");
  auto task = std::make_shared<Task>();
  task->name = "event record";
  task->device = device_;
  {
    std::lock_guard el(ev.mutex_);
    ev.last_ = task;
    ev.capture_.reset();
    ev.capture_nodes_.clear();
    ev.captured_ = false;
  }
  enqueue(std::move(task));
}

void HostStream::wait(const EventImpl& event_impl) {
  const auto& ev = dynamic_cast<const HostEvent&>(event_impl);
  refuse_in_body("Stream::wait on an event", "event wait");
  std::vector<std::uint32_t> nodes;
  auto ev_cap = ev.live_capture(&nodes);
  auto my_cap = capture();
  if (ev_cap) {
    if (my_cap && my_cap != ev_cap)
      invalidate_and_throw(my_cap,
                           "Stream::wait: the event was recorded in another capture; captures cannot be "
                           "merged (cudaErrorStreamCaptureMerge)");
    {
      std::lock_guard cl(ev_cap->mutex);
      if (ev_cap->invalidated)
        throw InvalidState(fmt::format("Stream::wait on an invalidated capture ({})", *ev_cap->invalidated));
      if (!my_cap) ev_cap->streams.push_back(this);  // fork: this stream joins the capture
    }
    std::lock_guard lock(mutex_);
    if (!my_cap) {
      capture_ = ev_cap;
      frontier_ = nodes;
    } else {
      for (auto n : nodes)
        if (std::find(frontier_.begin(), frontier_.end(), n) == frontier_.end()) frontier_.push_back(n);
    }
    return;
  }
  auto last = ev.last_record();
  if (ev.recorded_in_ended_capture()) {
    const std::string what = fmt::format(
        "Stream::wait on the {}: the event was last recorded by a stream capture that has ended "
        "(cudaErrorCapturedEvent): that record belongs to the captured graph, not to any stream's work; record the "
        "event again outside capture",
        label());
    if (my_cap) invalidate_and_throw(my_cap, what + "; the capture is invalidated");
    throw InvalidState(what);
  }
  if (my_cap) {
    if (!last) return;  // waiting on an event never recorded is a no-op
    invalidate_and_throw(my_cap, fmt::format("Stream::wait on the {}: the event was recorded outside the capture; "
                                             "a capture cannot depend on uncaptured work "
                                             "(cudaErrorStreamCaptureIsolation). The capture is invalidated: "
                                             "end it (it yields no graph), then record the event inside the "
                                             "capture or wait on it before begin_capture",
                                             label()));
  }
  if (!last) return;
  backend_.check_fault(device_, "Stream::wait");
  auto task = std::make_shared<Task>();
  task->name = "event wait";
  task->device = device_;
  enqueue(std::move(task), last);
}

void HostStream::synchronize() {
  SyncCounters::bump(backend_.sync_counters().stream_synchronize);
  if (auto cap = capture())
    invalidate_and_throw(cap, fmt::format("Stream::synchronize on the capturing {} is not permitted "
                                          "(cudaErrorStreamCaptureUnsupported); the capture is invalidated. End the "
                                          "capture first",
                                          label()));
  if (legacy_) backend_.check_unsafe_call("synchronize on the legacy default stream");
  std::shared_ptr<Task> t;
  {
    std::lock_guard lock(mutex_);
    t = tail_;
  }
  if (t) backend_.scheduler().wait(*t);
  backend_.check_fault(device_, "Stream::synchronize");
}

bool HostStream::query() {
  SyncCounters::bump(backend_.sync_counters().stream_query);
  if (auto cap = capture())
    invalidate_and_throw(cap, fmt::format("Stream::query on the capturing {} is not permitted "
                                          "(cudaErrorStreamCaptureUnsupported); the capture is invalidated: end it "
                                          "(it yields no graph) and query outside capture",
                                          label()));
  std::shared_ptr<Task> t;
  {
    std::lock_guard lock(mutex_);
    t = tail_;
  }
  const bool done = !t || t->done.load(std::memory_order_acquire);
  if (done) backend_.check_fault(device_, "Stream::query");
  return done;
}

void HostStream::begin_capture(CaptureMode mode) {
  STEPGRAPH_CHECK(!legacy_, InvalidArgument,
                  "Stream::begin_capture on the legacy default stream of host device {} is not permitted "
                  "(cudaErrorStreamCaptureUnsupported); capture on a stream from Backend::create_stream",
                  device_);
  backend_.check_fault(device_, "Stream::begin_capture");
  auto cap = std::make_shared<CaptureState>();
  cap->mode = mode;
  cap->thread = std::this_thread::get_id();
  cap->origin = this;
  cap->graph = std::make_unique<HostGraph>(backend_);
  cap->streams.push_back(this);
  {
    std::lock_guard lock(mutex_);
    STEPGRAPH_CHECK(capture_ == nullptr, InvalidState,
                    "Stream::begin_capture: the {} is already capturing; end that capture first", label());
    capture_ = cap;
    frontier_.clear();
  }
  backend_.add_capture(cap);
}

std::unique_ptr<GraphImpl> HostStream::end_capture() {
  auto cap = capture();
  STEPGRAPH_CHECK(cap != nullptr, InvalidState,
                  "Stream::end_capture: the {} is not capturing; call begin_capture first", label());
  if (cap->origin != this)
    invalidate_and_throw(cap, fmt::format("Stream::end_capture was called on a {} that joined the capture, not on "
                                          "the stream that began it (cudaErrorStreamCaptureUnmatched); the capture "
                                          "is invalidated: end it on its origin stream",
                                          label()));
  // Only a relaxed capture may be ended by another thread than the one that
  // began it (cudaErrorStreamCaptureWrongThread: "a stream capture sequence
  // not initiated with the cudaStreamCaptureModeRelaxed argument ... was
  // passed to cudaStreamEndCapture in a different thread"). The capture goes on.
  if (cap->mode != CaptureMode::kRelaxed && cap->thread != std::this_thread::get_id())
    throw InvalidState(fmt::format(
        "Stream::end_capture: this {} capture was begun by another thread, and only a relaxed capture may be "
        "ended by another thread (cudaErrorStreamCaptureWrongThread); the capture goes on: end it on the thread "
        "that began it",
        to_string(cap->mode)));
  std::vector<HostStream*> streams;
  std::optional<std::string> invalidated;
  std::unique_ptr<HostGraph> graph;
  {
    std::lock_guard cl(cap->mutex);
    cap->ended = true;
    streams = cap->streams;
    invalidated = cap->invalidated;
    graph = std::move(cap->graph);
  }
  backend_.remove_capture(cap.get());
  std::vector<std::uint32_t> origin_frontier;
  std::vector<std::pair<HostStream*, std::vector<std::uint32_t>>> others;
  for (HostStream* s : streams) {
    std::lock_guard lock(s->mutex_);
    if (s->capture_ != cap) continue;
    if (s == this)
      origin_frontier = s->frontier_;
    else
      others.emplace_back(s, s->frontier_);
    s->capture_.reset();
    s->frontier_.clear();
  }
  if (invalidated)
    throw InvalidState(
        fmt::format("Stream::end_capture: the capture was invalidated and yields no graph: {}", *invalidated));
  // Every joined stream's last work must be an ancestor of (or be) the
  // origin's frontier (cudaErrorStreamCaptureUnjoined).
  std::vector<std::vector<std::size_t>> preds(graph->nodes_.size());
  for (auto [a, b] : graph->edges_) preds[b].push_back(a);
  std::vector<char> joined(graph->nodes_.size(), 0);
  std::vector<std::size_t> stack(origin_frontier.begin(), origin_frontier.end());
  while (!stack.empty()) {
    auto v = stack.back();
    stack.pop_back();
    if (joined[v]) continue;
    joined[v] = 1;
    for (auto p : preds[v]) stack.push_back(p);
  }
  for (const auto& [s, frontier] : others) {
    for (auto n : frontier) {
      if (!joined[n])
        throw InvalidState(fmt::format(
            "Stream::end_capture: a {} forked into the capture was not joined back (its last node '{}' is not "
            "ordered before the end of the origin stream; cudaErrorStreamCaptureUnjoined). Record an event on it "
            "and wait on that event from the origin stream before end_capture",
            s->label(), graph->nodes_[n].name));
    }
  }
  return graph;
}

CaptureStatus HostStream::capture_status() const {
  auto cap = capture();
  if (!cap) return CaptureStatus::kNone;
  std::lock_guard cl(cap->mutex);
  return cap->invalidated ? CaptureStatus::kInvalidated : CaptureStatus::kActive;
}

void HostStream::refuse_in_body(std::string_view what, std::string_view op) const {
  auto cap = capture();
  if (!cap) return;
  std::string node;
  {
    std::lock_guard cl(cap->mutex);
    node = cap->conditional_body;
  }
  if (!node.empty())
    throw_conditional_body(fmt::format("{} on host device {} (conditional node '{}')", what, device_, node), op);
}

ConditionHandle HostStream::create_condition(unsigned default_value) {
  auto cap = capture();
  STEPGRAPH_CHECK(cap != nullptr, InvalidState,
                  "Stream::create_condition on the {}: the stream is not capturing; a condition belongs to a graph: "
                  "make it during capture (or inside run_as_graph)",
                  label());
  std::lock_guard cl(cap->mutex);
  if (cap->invalidated)
    throw InvalidState(fmt::format("Stream::create_condition on an invalidated capture ({})", *cap->invalidated));
  const std::uint64_t id = next_condition_id.fetch_add(1, std::memory_order_relaxed) + 1;
  cap->graph->conditions_.emplace_back(id, default_value);
  return ConditionHandle{id};
}

void HostStream::capture_conditional(ConditionalKind kind, ConditionHandle condition,
                                     const std::function<void(StreamRef)>& body, std::string name) {
  auto cap = capture();
  STEPGRAPH_CHECK(cap != nullptr, InvalidState,
                  "Stream::capture_{} '{}' on the {}: the stream is not capturing; conditional nodes exist only in "
                  "graphs: capture the work, or wrap it in run_as_graph",
                  to_string(kind), name, label());
  std::optional<unsigned> default_value;
  CaptureMode mode = CaptureMode::kThreadLocal;
  {
    std::lock_guard cl(cap->mutex);
    if (cap->invalidated)
      throw InvalidState(fmt::format("Stream::capture_{} '{}' on an invalidated capture ({})", to_string(kind), name,
                                     *cap->invalidated));
    for (const auto& [id, def] : cap->graph->conditions_)
      if (id == condition.value) default_value = def;
    mode = cap->mode;
  }
  // CUDA: the handle must have been created in the graph that holds the
  // node (cudaGraphAddNode, cudaConditionalNodeParams::handle).
  STEPGRAPH_CHECK(default_value.has_value(), InvalidArgument,
                  "Stream::capture_{} '{}' on the {}: condition #{} was not made in the graph this stream captures "
                  "into; make it with create_condition on this stream (in this capture, or in this body)",
                  to_string(kind), name, label(), condition.value);
  // The body: a stream of its own, capturing into a graph of its own
  // (cudaStreamBeginCaptureToGraph on a separate stream, as CUDA's samples do).
  HostStream body_stream(backend_, device_, priority_, false);
  body_stream.begin_capture(mode);
  {
    auto body_cap = body_stream.capture();
    std::lock_guard cl(body_cap->mutex);
    body_cap->conditional_body = name;
  }
  std::unique_ptr<GraphImpl> captured;
  try {
    body(StreamRef(&body_stream));
    captured = body_stream.end_capture();
  } catch (...) {
    if (body_stream.capture()) {
      try {
        (void)body_stream.end_capture();
      } catch (const std::exception&) {
        // the body's own error is the one to report
      }
    }
    throw;
  }
  std::shared_ptr<const HostGraph> graph(static_cast<HostGraph*>(captured.release()));
  check_conditional_body(graph->info(), name);
  STEPGRAPH_CHECK(kind != ConditionalKind::kWhile || !graph->nodes_.empty(), InvalidArgument,
                  "Stream::capture_while '{}' on the {}: the body is empty, so the loop could only never run or "
                  "never end; give it the work that sets the condition",
                  name, label());
  CapturedNode n;
  n.name = std::move(name);
  n.kind = NodeKind::kConditional;
  n.device = device_;
  // The node declares everything its body may touch (introspection,
  // placement); the body graph keeps those buffers alive.
  for (const auto& b : graph->nodes_) n.accesses.insert(n.accesses.end(), b.accesses.begin(), b.accesses.end());
  n.body = std::move(graph);
  n.conditional = kind;
  n.condition = condition.value;
  n.condition_default = *default_value;
  submit(std::move(n));
}

void HostStream::launch_exec(const std::shared_ptr<const ExecPayload>& payload,
                             const std::shared_ptr<const ConditionTable>& conditions, std::shared_ptr<Task>& exec_last,
                             std::mutex& exec_mutex) {
  if (capture()) {
    // A launch during capture becomes one node that runs the child graph
    // (in topological order, on this stream's device). Like the cuda
    // backend's, it is called "graph_launch" and declares everything the
    // child graph touches.
    CapturedNode n;
    n.kind = NodeKind::kOther;
    n.name = "graph_launch";
    n.device = device_;
    n.accesses = payload->accesses;
    for (const auto& node : payload->nodes)
      STEPGRAPH_CHECK(!node.async_start, InvalidArgument,
                      "GraphExec::launch into a capture on host device {}: the graph holds the collective '{}', "
                      "which the host backend cannot run inside a child graph (it would wait on a device "
                      "worker); launch the graph outside the capture",
                      device_, node.name);
    n.fn = [payload] {
      std::vector<std::uint32_t> indeg(payload->nodes.size());
      for (std::size_t i = 0; i < indeg.size(); ++i) indeg[i] = payload->nodes[i].in_degree;
      std::vector<std::uint32_t> ready = payload->roots;
      while (!ready.empty()) {
        auto v = ready.back();
        ready.pop_back();
        if (payload->nodes[v].fn) payload->nodes[v].fn();
        for (auto s : payload->nodes[v].successors)
          if (--indeg[s] == 0) ready.push_back(s);
      }
    };
    submit(std::move(n));
    return;
  }
  backend_.check_fault(device_, "GraphExec::launch");
  auto task = std::make_shared<Task>();
  task->name = "graph launch";
  task->device = device_;
  Scheduler* sched = &backend_.scheduler();
  task->run = [payload, conditions, sched, trace = detail::current_launch_trace()](const std::shared_ptr<Task>& self) {
    if (conditions) conditions->reset();  // cudaGraphCondAssignDefault: at the start of each launch
    if (payload->nodes.empty()) return true;
    auto run = std::make_shared<GraphRun>();
    run->payload = payload;
    run->trace = trace;  // traced replay (trace_launch.h)
    run->launch_task = self;
    sched->start_run(run);
    return false;  // completes when the last node has run
  };
  std::lock_guard exec_lock(exec_mutex);
  // Launches of one executable run one after another (cudaGraphLaunch).
  enqueue(task, exec_last);
  exec_last = task;
}

}  // namespace

void set_condition_on_this_thread(ConditionHandle handle, unsigned value) {
  const ConditionTable* table = tls_conditions;
  std::atomic<unsigned>* slot = table != nullptr ? table->find(handle.value) : nullptr;
  STEPGRAPH_CHECK(slot != nullptr, InvalidState,
                  "set_condition(#{}): the calling kernel is not a node of a graph that holds this condition (a "
                  "condition is set only by kernels of the graph it was made in, at replay; eagerly, use "
                  "run_as_graph)",
                  handle.value);
  slot->store(value, std::memory_order_relaxed);
}

namespace {
/// Deletes backends whose last reference dropped on one of their own
/// workers, on a thread of its own. At exit it waits (up to 5 s) for every
/// host backend to be gone — the last reference to one may still be held by
/// work running after main() returned — and joins its threads, all before the
/// LiveMachine they use is destroyed (that is constructed first, so it is
/// destroyed after this).
class Reaper {
 public:
  static Reaper& get() {
    static Reaper reaper;
    return reaper;
  }
  void born() {
    std::lock_guard lock(mutex_);
    ++live_;
  }
  void reap(HostBackend* p) {
    std::lock_guard lock(mutex_);
    threads_.emplace_back([this, p] {
      delete p;
      died();
    });
  }
  void died() {
    // Notified under the lock: ~Reaper may return (and the static be
    // destroyed) as soon as it sees live_ == 0, so a notify after unlocking
    // could touch a destroyed condition variable (ThreadSanitizer, when a
    // deferred-release thread drops the last backend at exit).
    std::lock_guard lock(mutex_);
    --live_;
    cv_.notify_all();
  }
  ~Reaper() {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, std::chrono::seconds(5), [&] { return live_ == 0; });
    std::vector<std::thread> threads;
    threads.swap(threads_);
    lock.unlock();
    for (auto& t : threads) t.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  int live_ = 0;
};
}  // namespace

std::shared_ptr<BackendImpl> make_host_backend(const BackendOptions& options) {
  (void)topology::LiveMachine::get();  // constructed before the Reaper: destroyed after it
  Reaper& reaper = Reaper::get();
  // The last reference to a backend can drop on one of its own workers (a
  // finished task held the last buffer). Its destructor joins the workers,
  // so it must then run on another thread.
  auto* backend = new HostBackend(options);
  reaper.born();
  return std::shared_ptr<HostBackend>(backend, [&reaper](HostBackend* p) {
    if (host::Scheduler::on_worker_of(p)) {
      reaper.reap(p);
    } else {
      delete p;
      reaper.died();
    }
  });
}

}  // namespace stepgraph::runtime::detail

namespace stepgraph::runtime {
void set_condition(ConditionHandle handle, unsigned value) {
  detail::set_condition_on_this_thread(handle, value);
}
}  // namespace stepgraph::runtime
