// runtime/src/host/scheduler.h — the host backend's execution engine.
//
// Note [Host execution model]
// Each host device owns W worker threads and one ready queue. Work reaches a
// queue only when every dependency has completed: a stream operation depends
// on the previous operation of its stream and on the event records it waits
// for; a graph node depends on its in-edges. Ready work is picked by priority
// and, with a shuffle seed, in a random order among equals, so that work
// left unordered by mistake really runs in different orders (and in
// parallel, with W >= 2) and a missing dependency shows up in a test.
//
// A worker that completes an item whose completion makes exactly one item of
// its own device ready, while its queue is empty, runs that item itself
// instead of queueing it: a chain of graph nodes then runs back to back on
// one thread, with no hand-off between threads, which is what keeps a replay
// within a few per cent of a plain loop over the same callables.
//
// Note [Asynchronous nodes]
// A collective waits for its peers, which may be on this device's own
// workers' queue behind it: if it waited on a worker, two devices whose
// workers all wait on each other would deadlock. So a collective is an
// asynchronous node (ExecNode::async_start) or task (Task::run returns
// false): the worker only hands it to a thread of the communicator and moves
// on; the communicator's thread completes it (Scheduler::complete, or the
// node's completion function), which releases its successors.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/runtime/types.h>

#include "trace_launch.h"

namespace stepgraph::runtime::host {

class Scheduler;
struct GraphRun;

/// A unit of stream work (an operation, an event record, a graph launch).
struct Task {
  std::string name;
  int device = 0;
  int priority = 0;
  /// Runs the operation. Returns true if the task completed; false if it
  /// completes later through Scheduler::complete (a graph launch).
  std::function<bool(const std::shared_ptr<Task>&)> run;

  std::atomic<int> pending{1};  // unresolved dependencies + the submission hold
  std::atomic<bool> done{false};
  std::mutex mutex;
  std::vector<std::shared_ptr<Task>> successors;
  std::chrono::steady_clock::time_point done_at;
};

/// An item in a device's ready queue: a task, or node `node` of a graph run.
struct WorkItem {
  std::shared_ptr<Task> task;
  std::shared_ptr<GraphRun> run;
  std::uint32_t node = 0;
  int priority = 0;
};

/// One executable-graph node, as the scheduler runs it.
struct ExecNode {
  std::string name;
  int device = 0;
  int priority = 0;
  std::function<void()> fn;          // empty for empty nodes
  /// Set for an asynchronous node (a collective): started on a worker, it
  /// returns at once and calls its argument when the node has finished, from
  /// any thread (Note [Asynchronous nodes]).
  std::function<void(std::function<void()>)> async_start;
  std::shared_ptr<const void> keep;  // what fn needs alive (declared buffers)
  std::vector<std::uint32_t> successors;
  std::uint32_t in_degree = 0;
};

/// The immutable payload of an executable graph at one launch.
struct ExecPayload {
  std::vector<ExecNode> nodes;
  std::vector<std::uint32_t> roots;
  /// Every node's declared accesses: what the graph touches when it is
  /// launched into a capture as one child-graph node (reported like the cuda
  /// backend's "graph_launch" node).
  std::vector<BufferAccess> accesses;
};

/// One launch of an executable graph in flight.
struct GraphRun {
  std::shared_ptr<const ExecPayload> payload;
  std::unique_ptr<std::atomic<std::uint32_t>[]> pending;
  std::atomic<std::size_t> remaining{0};  // sinks not yet run
  std::shared_ptr<Task> launch_task;      // completes when every node has run
  /// Set for a traced replay (trace_launch.h): nodes and the run are
  /// recorded on its track, before the run completes.
  std::shared_ptr<const detail::LaunchTrace> trace;
  std::chrono::steady_clock::time_point started;  // traced runs only
};

struct DeviceQueue;

class Scheduler {
 public:
  struct Options {
    int devices = 1;
    int workers_per_device = 2;
    std::uint64_t shuffle_seed = 0;
    std::vector<std::vector<int>> device_cpus;  // empty: no binding
    const void* owner = nullptr;                // tag for on_worker_of()
  };
  /// True if the calling thread is a worker of the scheduler whose owner is `owner`.
  static bool on_worker_of(const void* owner) noexcept;
  explicit Scheduler(const Options& options);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  ~Scheduler();

  /// Makes `task` depend on `dep` (no-op if dep is null or done).
  static void add_dependency(const std::shared_ptr<Task>& task, const std::shared_ptr<Task>& dep);
  /// Drops the submission hold: the task runs once its dependencies are done.
  void submit(const std::shared_ptr<Task>& task);
  /// Completes an asynchronous task (see Task::run).
  void complete(const std::shared_ptr<Task>& task);
  /// Starts a graph run (called from the launch task's run()).
  void start_run(const std::shared_ptr<GraphRun>& run);

  /// Blocks until the task is done; false if `timeout` passed first.
  bool wait(Task& task, std::optional<std::chrono::nanoseconds> timeout = std::nullopt);
  /// Blocks until device `device` has no unfinished task.
  void wait_idle(int device);

  /// The sticky fault of a device (first error wins).
  struct Fault {
    std::string message;
    std::string node;  // the faulting node or operation
  };
  std::optional<Fault> fault(int device) const;
  void set_fault(int device, const std::string& node, const std::string& message);
  [[nodiscard]] bool faulted(int device) const noexcept;

  [[nodiscard]] int device_count() const noexcept { return static_cast<int>(queues_.size()); }

 private:
  void worker_loop(int device, int worker);
  void push(int device, WorkItem item);
  void push_all(std::vector<WorkItem>& items);
  void execute(WorkItem item, int device);
  void finish_task(const std::shared_ptr<Task>& task, std::vector<WorkItem>& ready);
  void finish_node(const std::shared_ptr<GraphRun>& run, std::uint32_t node, std::vector<std::uint32_t>& ready_nodes,
                   std::vector<WorkItem>& ready);
  void run_node(GraphRun& run, std::uint32_t node);
  void run_traced_node(GraphRun& run, std::uint32_t node);
  void start_async_node(const std::shared_ptr<GraphRun>& run, std::uint32_t node);

  std::vector<std::unique_ptr<DeviceQueue>> queues_;
  std::vector<std::thread> threads_;
  std::atomic<int> waiters_{0};
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
};

}  // namespace stepgraph::runtime::host
