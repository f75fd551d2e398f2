// stepgraph/collectives/data_parallel.h — a data-parallel step executor: the
// step replicated on several devices of one process, each replica a
// StepExecutor with its rank of one communicator (DESIGN.md 1.4, replicated
// mode; one GPU per process is the recommended layout for captured NCCL, so
// this in-process form is for the host backend and, with that warning,
// single-process multi-GPU).
//
// Note [Data-parallel replicas]
// Every replica runs the same step function on its own shard of the batch
// (the StepSpec's inputs are one replica's shard); ctx.collectives() is the
// replica's communicator, through which the step AllReduces its gradients
// (directly, or with a GradientBucketer per rank). The replicas are prepared
// (warm-ups with eager collectives, then capture) concurrently, one thread
// each: a replica's eager collective waits for its peers. A failure of one
// replica (a device fault, a watchdog timeout) aborts the communicator, so
// the collectives of every other replica fail too and each replica's
// executor fails with a StepError of kind kCollective naming the step:
// nothing hangs.
//
// Ownership: owns its replicas' executors and the communicators it made;
// shares the backend. Thread-safety: as StepExecutor (every member is
// thread-safe). Capture: no member may be called from inside a step.
#pragma once

#include <memory>
#include <vector>

#include <stepgraph/collectives/communicator.h>
#include <stepgraph/runtime/executor.h>

namespace stepgraph::collectives {

struct DataParallelOptions {
  std::vector<int> devices = {0, 1};  // replica r runs on devices[r]
  /// Options of every replica's executor; `device` and `collectives` are set
  /// per replica, `backend_instance` is made if empty (from `backend`, with
  /// enough host devices).
  runtime::ExecutorOptions executor;
  CommunicatorOptions communicator;
  /// Communicators to use instead of making a group (rank r for replica r).
  std::vector<std::shared_ptr<Communicator>> communicators;
};

/// One replay of every replica.
class DataParallelReplay {
 public:
  [[nodiscard]] const std::vector<runtime::ReplayHandle>& replicas() const noexcept { return handles_; }
  /// Waits for every replica; kDone only if every replica is done.
  runtime::ReplayStatus wait() const;
  /// The first replica's error, if any failed.
  [[nodiscard]] std::optional<runtime::StepError> error() const;
  void release() const;

 private:
  friend class DataParallelExecutor;
  std::vector<runtime::ReplayHandle> handles_;
};

class DataParallelExecutor {
 public:
  DataParallelExecutor(runtime::StepSpec replica_spec, runtime::StepFunction step, DataParallelOptions options);
  DataParallelExecutor(const DataParallelExecutor&) = delete;
  DataParallelExecutor& operator=(const DataParallelExecutor&) = delete;
  ~DataParallelExecutor();

  [[nodiscard]] int replicas() const noexcept { return static_cast<int>(executors_.size()); }
  [[nodiscard]] runtime::StepExecutor& replica(int r) const;
  [[nodiscard]] Communicator& communicator(int r) const;
  [[nodiscard]] const std::shared_ptr<runtime::Backend>& backend() const noexcept { return backend_; }

  /// Warm-ups and capture of every replica, concurrently (Note above).
  void prepare(std::uint64_t shape_key = 0);
  /// One free slot per replica (blocks as the replicas' OnBusy says).
  [[nodiscard]] std::vector<runtime::InputSlot> acquire_inputs();
  /// Starts one step on every replica with its slot's inputs.
  DataParallelReplay replay(std::vector<runtime::InputSlot> slots, std::uint64_t shape_key = 0);
  void synchronize();
  void set_learning_rate(float lr);
  /// Writes the same state (parameters) into every replica.
  void write_state(std::string_view name, const void* data, std::size_t bytes);
  void read_state(int replica, std::string_view name, void* data, std::size_t bytes);
  /// The first replica failure, if any.
  [[nodiscard]] std::optional<runtime::StepError> failure() const;
  void close();

 private:
  std::shared_ptr<runtime::Backend> backend_;
  std::vector<std::shared_ptr<Communicator>> comms_;
  std::vector<std::unique_ptr<runtime::StepExecutor>> executors_;
};

}  // namespace stepgraph::collectives
