#include "host/scheduler.h"

#include <algorithm>
#include <exception>

#include <stepgraph/core/log.h>
#include <stepgraph/topology/live.h>

namespace stepgraph::runtime::host {

struct DeviceQueue {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<WorkItem> items;
  std::atomic<std::size_t> size{0};
  std::atomic<std::int64_t> inflight{0};  // submitted tasks not yet done
  bool stop = false;
  std::mt19937_64 rng;
  bool shuffle = false;
  mutable std::mutex fault_mutex;
  std::optional<Scheduler::Fault> fault;
  std::atomic<bool> faulted{false};
};

namespace {
thread_local const void* tls_worker_owner = nullptr;

// Spin budgets. Short on purpose: on a machine with few cores an idle thread
// that spins takes the core from the worker running the chain (measured with
// bm_backend on 2 cores: 50 µs budgets cost ~50 µs per replay).
constexpr std::chrono::microseconds kWorkerSpin{50};

// Set while a worker runs a task: a graph launch task hands its root nodes
// back to that worker (which may run a single root inline) instead of
// queueing them for another thread to wake up for.
thread_local std::vector<WorkItem>* tls_ready = nullptr;
constexpr std::chrono::microseconds kWaiterSpin{5};

/// Spins until `ready()` or `budget` has passed: a hand-off between threads
/// then costs no futex wake-up. Bounded in time, not iterations, so that a
/// loaded machine (where each iteration may be preempted) does not spin long.
template <class Ready>
bool spin_until(Ready ready, std::chrono::microseconds budget) {
  const auto end = std::chrono::steady_clock::now() + budget;
  for (int i = 0;; ++i) {
    if (ready()) return true;
    if ((i & 63) == 63) {
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::yield();
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}
}  // namespace

bool Scheduler::on_worker_of(const void* owner) noexcept {
  return owner != nullptr && tls_worker_owner == owner;
}

Scheduler::Scheduler(const Options& options) {
  for (int d = 0; d < options.devices; ++d) {
    auto q = std::make_unique<DeviceQueue>();
    q->shuffle = options.shuffle_seed != 0;
    q->rng.seed(options.shuffle_seed + static_cast<std::uint64_t>(d) * 0x9e3779b97f4a7c15ull);
    queues_.push_back(std::move(q));
  }
  for (int d = 0; d < options.devices; ++d) {
    for (int w = 0; w < options.workers_per_device; ++w) {
      std::vector<int> cpus;
      if (static_cast<std::size_t>(d) < options.device_cpus.size())
        cpus = options.device_cpus[static_cast<std::size_t>(d)];
      threads_.emplace_back([this, d, w, cpus, owner = options.owner] {
        tls_worker_owner = owner;
        if (!cpus.empty()) {
          try {
            topology::LiveMachine::get().bind(topology::CpuSet{cpus});
          } catch (const std::exception& e) {
            STEPGRAPH_WARN(kRuntime, "host device {} worker {}: could not bind to its NUMA node's cpus: {}", d, w,
                           e.what());
          }
        }
        worker_loop(d, w);
      });
    }
  }
}

Scheduler::~Scheduler() {
  for (auto& q : queues_) {
    std::lock_guard lock(q->mutex);
    q->stop = true;
    q->cv.notify_all();
  }
  for (auto& t : threads_) t.join();
}

void Scheduler::add_dependency(const std::shared_ptr<Task>& task, const std::shared_ptr<Task>& dep) {
  if (!dep || dep == task) return;
  std::lock_guard lock(dep->mutex);
  if (dep->done.load(std::memory_order_acquire)) return;
  task->pending.fetch_add(1, std::memory_order_relaxed);
  // The successor list owns a reference: the task stays alive until it runs.
  dep->successors.push_back(task);
}

void Scheduler::submit(const std::shared_ptr<Task>& task) {
  queues_[static_cast<std::size_t>(task->device)]->inflight.fetch_add(1, std::memory_order_relaxed);
  if (task->pending.fetch_sub(1, std::memory_order_acq_rel) == 1)
    push(task->device, WorkItem{task, nullptr, 0, task->priority});
}

void Scheduler::push_all(std::vector<WorkItem>& items) {
  // Items of one device go in under one lock, so that a worker sees them all
  // at once and the shuffle chooses among them (not the order of pushes).
  for (std::size_t d = 0; d < queues_.size(); ++d) {
    auto& q = *queues_[d];
    std::size_t added = 0;
    {
      std::unique_lock<std::mutex> lock(q.mutex, std::defer_lock);
      for (auto& it : items) {
        if (!it.task && !it.run) continue;
        const int dev = it.task ? it.task->device : it.run->payload->nodes[it.node].device;
        if (dev != static_cast<int>(d)) continue;
        if (!lock.owns_lock()) lock.lock();
        q.items.push_back(std::move(it));
        it = WorkItem{};
        ++added;
      }
      if (added) q.size.store(q.items.size(), std::memory_order_release);
    }
    if (added == 1)
      q.cv.notify_one();
    else if (added > 1)
      q.cv.notify_all();
  }
  items.clear();
}

void Scheduler::push(int device, WorkItem item) {
  auto& q = *queues_[static_cast<std::size_t>(device)];
  {
    std::lock_guard lock(q.mutex);
    q.items.push_back(std::move(item));
    q.size.store(q.items.size(), std::memory_order_release);
  }
  q.cv.notify_one();
}

void Scheduler::worker_loop(int device, int) {
  auto& q = *queues_[static_cast<std::size_t>(device)];
  for (;;) {
    // Spin briefly before sleeping: a chain of short launches otherwise pays a
    // futex wake-up per hand-off.
    spin_until([&] { return q.size.load(std::memory_order_acquire) != 0; }, kWorkerSpin);
    WorkItem item;
    {
      std::unique_lock lock(q.mutex);
      q.cv.wait(lock, [&] { return q.stop || !q.items.empty(); });
      if (q.items.empty()) return;  // stop requested and nothing left
      // Highest priority first; among equals FIFO, or a seeded random pick.
      int best = q.items.front().priority;
      for (const auto& it : q.items) best = std::max(best, it.priority);
      std::vector<std::size_t> candidates;
      for (std::size_t i = 0; i < q.items.size(); ++i)
        if (q.items[i].priority == best) candidates.push_back(i);
      std::size_t pick = candidates.front();
      if (q.shuffle && candidates.size() > 1)
        pick = candidates[std::uniform_int_distribution<std::size_t>(0, candidates.size() - 1)(q.rng)];
      item = std::move(q.items[pick]);
      q.items.erase(q.items.begin() + static_cast<std::ptrdiff_t>(pick));
      q.size.store(q.items.size(), std::memory_order_release);
    }
    execute(std::move(item), device);
  }
}

void Scheduler::execute(WorkItem item, int device) {
  std::vector<WorkItem> ready;
  std::vector<std::uint32_t> ready_nodes;
  auto& q = *queues_[static_cast<std::size_t>(device)];
  for (;;) {
    ready.clear();
    ready_nodes.clear();
    if (item.task) {
      bool completed = true;
      if (!faulted(item.task->device) && item.task->run) {
        try {
          tls_ready = &ready;
          completed = item.task->run(item.task);
          tls_ready = nullptr;
        } catch (const std::exception& e) {
          tls_ready = nullptr;
          set_fault(item.task->device, item.task->name,
                    fmt::format("'{}' on host device {} faulted: {}", item.task->name, item.task->device, e.what()));
        } catch (...) {
          tls_ready = nullptr;
          set_fault(
              item.task->device, item.task->name,
              fmt::format("'{}' on host device {} faulted (unknown exception)", item.task->name, item.task->device));
        }
      }
      if (completed) finish_task(item.task, ready);
    } else {
      if (item.run->payload->nodes[item.node].async_start && !faulted(item.run->payload->nodes[item.node].device)) {
        start_async_node(item.run, item.node);  // completes later, on the communicator's thread
        return;
      }
      if (item.run->trace) [[unlikely]]
        run_traced_node(*item.run, item.node);
      else
        run_node(*item.run, item.node);
      finish_node(item.run, item.node, ready_nodes, ready);
      // Continue inline with a single ready node of this device while
      // nothing else waits (Note [Host execution model]): no hand-off, no
      // reference-count traffic.
      if (ready.empty() && ready_nodes.size() == 1 && item.run->payload->nodes[ready_nodes[0]].device == device &&
          q.size.load(std::memory_order_acquire) == 0) {
        item.node = ready_nodes[0];
        continue;
      }
      for (auto n : ready_nodes) ready.push_back(WorkItem{nullptr, item.run, n, item.run->payload->nodes[n].priority});
    }
    if (ready.size() == 1 &&
        (ready[0].task ? ready[0].task->device : ready[0].run->payload->nodes[ready[0].node].device) == device &&
        q.size.load(std::memory_order_acquire) == 0) {
      item = std::move(ready[0]);
      continue;
    }
    push_all(ready);
    return;
  }
}

void Scheduler::run_node(GraphRun& run, std::uint32_t node) {
  const ExecNode& n = run.payload->nodes[node];
  if (!n.fn || faulted(n.device)) return;
  try {
    n.fn();
  } catch (const std::exception& e) {
    set_fault(n.device, n.name,
              fmt::format("graph node '{}' on host device {} faulted: {}", n.name, n.device, e.what()));
  } catch (...) {
    set_fault(n.device, n.name,
              fmt::format("graph node '{}' on host device {} faulted (unknown exception)", n.name, n.device));
  }
}

void Scheduler::run_traced_node(GraphRun& run, std::uint32_t node) {
  if (!run.trace->recorder) {  // metrics only: they time collective nodes alone
    run_node(run, node);
    return;
  }
  const auto begin = std::chrono::steady_clock::now();
  run_node(run, node);
  const ExecNode& n = run.payload->nodes[node];
  run.trace->recorder->span(run.trace->track, n.name, "node", begin, std::chrono::steady_clock::now(),
                            {{"step", run.trace->step}, {"node", node}, {"device", n.device}});
}

void Scheduler::start_async_node(const std::shared_ptr<GraphRun>& run, std::uint32_t node) {
  const ExecNode& n = run->payload->nodes[node];
  const auto begin = run->trace ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  auto done = [this, run, node, begin] {
    if (run->trace) {
      const auto end = std::chrono::steady_clock::now();
      const ExecNode& an = run->payload->nodes[node];
      if (run->trace->recorder)
        run->trace->recorder->span(run->trace->track, an.name, "node", begin, end,
                                   {{"step", run->trace->step}, {"node", node}, {"device", an.device}});
      if (const auto& cs = run->trace->collective_seconds; cs && node < cs->size() && (*cs)[node] != nullptr)
        (*cs)[node]->inc(std::chrono::duration<double>(end - begin).count());
    }
    std::vector<std::uint32_t> ready_nodes;
    std::vector<WorkItem> ready;
    finish_node(run, node, ready_nodes, ready);
    for (auto r : ready_nodes) ready.push_back(WorkItem{nullptr, run, r, run->payload->nodes[r].priority});
    push_all(ready);
  };
  try {
    n.async_start(done);
  } catch (const std::exception& e) {
    set_fault(n.device, n.name,
              fmt::format("graph node '{}' on host device {} faulted: {}", n.name, n.device, e.what()));
    done();
  }
}

void Scheduler::finish_node(const std::shared_ptr<GraphRun>& run, std::uint32_t node,
                            std::vector<std::uint32_t>& ready_nodes, std::vector<WorkItem>& ready) {
  const auto& nodes = run->payload->nodes;
  const ExecNode& n = nodes[node];
  for (std::uint32_t s : n.successors) {
    // A node with one in-edge is made ready by its only predecessor: no
    // atomic needed (a chain replays without read-modify-writes).
    if (nodes[s].in_degree == 1 || run->pending[s].fetch_sub(1, std::memory_order_acq_rel) == 1)
      ready_nodes.push_back(s);
  }
  // Only sinks count towards the end of the run.
  if (n.successors.empty() && run->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    if (run->trace && run->trace->recorder)  // recorded before the launch completes: a waiter then finds it
      run->trace->recorder->span(run->trace->track, fmt::format("replay {}", run->trace->step), "replay", run->started,
                                 std::chrono::steady_clock::now(), {{"step", run->trace->step}});
    finish_task(run->launch_task, ready);
  }
}

void Scheduler::start_run(const std::shared_ptr<GraphRun>& run) {
  if (run->trace) run->started = std::chrono::steady_clock::now();
  const auto& nodes = run->payload->nodes;
  run->pending = std::make_unique<std::atomic<std::uint32_t>[]>(nodes.size());
  std::size_t sinks = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    run->pending[i].store(nodes[i].in_degree, std::memory_order_relaxed);
    if (nodes[i].successors.empty()) ++sinks;
  }
  run->remaining.store(sinks, std::memory_order_release);
  std::vector<WorkItem> roots;
  roots.reserve(run->payload->roots.size());
  for (std::uint32_t r : run->payload->roots) roots.push_back(WorkItem{nullptr, run, r, nodes[r].priority});
  if (tls_ready != nullptr) {
    for (auto& r : roots) tls_ready->push_back(std::move(r));
    return;
  }
  push_all(roots);
}

void Scheduler::complete(const std::shared_ptr<Task>& task) {
  std::vector<WorkItem> ready;
  finish_task(task, ready);
  push_all(ready);
}

void Scheduler::finish_task(const std::shared_ptr<Task>& task, std::vector<WorkItem>& ready) {
  std::vector<std::shared_ptr<Task>> successors;
  {
    std::lock_guard lock(task->mutex);
    task->done_at = std::chrono::steady_clock::now();
    task->done.store(true, std::memory_order_seq_cst);
    successors.swap(task->successors);
  }
  task->run = nullptr;  // release captured state (buffers, graph payloads) early
  for (auto& s : successors) {
    if (s->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      ready.push_back(WorkItem{s, nullptr, 0, s->priority});
    }
  }
  auto& q = *queues_[static_cast<std::size_t>(task->device)];
  q.inflight.fetch_sub(1, std::memory_order_seq_cst);
  // Dekker-style: the waiter bumps waiters_ before it re-checks under the
  // lock, so either it sees done or we see it waiting (both seq_cst).
  if (waiters_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard lock(done_mutex_);
    done_cv_.notify_all();
  }
}

bool Scheduler::wait(Task& task, std::optional<std::chrono::nanoseconds> timeout) {
  if (spin_until([&] { return task.done.load(std::memory_order_acquire); }, kWaiterSpin)) return true;
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock lock(done_mutex_);
  bool ok = true;
  if (timeout) {
    ok = done_cv_.wait_for(lock, *timeout, [&] { return task.done.load(std::memory_order_acquire); });
  } else {
    done_cv_.wait(lock, [&] { return task.done.load(std::memory_order_acquire); });
  }
  waiters_.fetch_sub(1, std::memory_order_seq_cst);
  return ok;
}

void Scheduler::wait_idle(int device) {
  auto& q = *queues_[static_cast<std::size_t>(device)];
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  std::unique_lock lock(done_mutex_);
  done_cv_.wait(lock, [&] { return q.inflight.load(std::memory_order_seq_cst) <= 0; });
  waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

std::optional<Scheduler::Fault> Scheduler::fault(int device) const {
  auto& q = *queues_[static_cast<std::size_t>(device)];
  std::lock_guard lock(q.fault_mutex);
  return q.fault;
}

void Scheduler::set_fault(int device, const std::string& node, const std::string& message) {
  auto& q = *queues_[static_cast<std::size_t>(device)];
  std::lock_guard lock(q.fault_mutex);
  if (!q.fault) {
    q.fault = Fault{message, node};  // first error wins
    q.faulted.store(true, std::memory_order_release);
    STEPGRAPH_DEBUG(kRuntime, "host device {} faulted: {}", device, message);
  }
}

bool Scheduler::faulted(int device) const noexcept {
  return queues_[static_cast<std::size_t>(device)]->faulted.load(std::memory_order_acquire);
}

}  // namespace stepgraph::runtime::host
