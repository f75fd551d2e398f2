// stepgraph/torch/executor.h — libtorch's training step run by the
// StepExecutor: TorchStepExecutor takes the user's module, optimizer and a
// step closure (forward and loss), and runs forward, backward, the gradient
// AllReduce (data-parallel) and the optimizer step as one step graph.
//
// Note [Torch steps on the CPU]
// Debian's libtorch runs its kernels on the CPU, which nothing can capture:
// the step's torch work runs as host-function nodes of the captured graph
// (runtime/backend.h, StreamRef::host_fn), in this order:
//   1. "zero gradients": a memset node over the gradient storage;
//   2. "torch forward+backward": the closure (forward, loss) on tensors over
//      the slot's registered pinned inputs (torch::from_blob: no copy), then
//      loss.backward(); the loss is written to the slot's pinned output
//      "loss", and the closure may write its own outputs;
//   3. one AllReduce collective node per gradient bucket (collectives/
//      bucketer.h plan, average), when a communicator is given: every
//      parameter's .grad is a view into one gradient storage buffer laid out
//      by the bucket plan, so autograd accumulates straight into bucket
//      memory and the collective reads it there (no copy);
//   4. "torch optimizer step": optimizer.step().
// What is captured on CPU: the graph's structure — its nodes, their order
// and dependencies, the collectives, the buffers they read and write — and
// it is replayed by the host backend with CUDA's semantics (slots,
// asynchronous replay, error callbacks, watchdog, data-parallel
// collectives). What is not: torch's own kernels. Each replay calls the
// closure again, and torch dispatches its operators as in eager mode; a
// replay is an eager torch step scheduled by the graph. So, unlike CUDA
// graphs, a closure that branches on data or on a host counter does what
// eager would, and replayed training equals the plain libtorch loop bit for
// bit (same operators in the same order).
// On a CUDA libtorch the same API would capture torch's kernels (private
// memory pool, RNG registration, capturable optimizer): not built here —
// this build and its tests are CPU only (docs/embedding.md).
//
// Errors: a torch exception inside a step (a shape error in the closure, a
// NaN check that throws) faults the node that ran it: the replay's
// StepError is kDeviceFault naming the step and the node ("torch
// forward+backward" or "torch optimizer step") with torch's message, and
// the executor is failed, as a device fault fails a CUDA executor. Inputs
// given as tensors to replay() are checked against the declared specs
// (name, shape, dtype) before anything is queued: InvalidArgument naming
// the input, what was declared and what was given.
//
// Ownership: the TorchStepExecutor shares the module and the optimizer with
// the caller (shared_ptr) and owns its StepExecutor. It re-points every
// parameter's .grad at its gradient storage for its life; do not replace
// .grad (optimizer.zero_grad(set_to_none) included) while it lives.
// Thread-safety: replay/acquire/wait as StepExecutor (thread-safe); the
// module and optimizer are used by the executor's device worker during a
// replay: do not touch them from another thread until the replay is done.
// Capture: no member may be called from inside the closure.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/collectives/communicator.h>
#include <stepgraph/runtime/executor.h>

namespace stepgraph::torchstep {

/// A step input or output: its name, shape and dtype (float32, float64,
/// int64, int32 or uint8).
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  ::torch::Dtype dtype = ::torch::kFloat32;
  runtime::InputMode mode = runtime::InputMode::kZeroCopy;  // inputs only
};

/// What the closure sees during a step.
class TorchStep {
 public:
  /// The input `name` as a tensor over the slot's buffer (no copy).
  [[nodiscard]] ::torch::Tensor input(const std::string& name) const;
  /// The output `name` as a tensor over the slot's pinned output buffer:
  /// copy_ into it. "loss" is written by the executor.
  [[nodiscard]] ::torch::Tensor output(const std::string& name) const;

 private:
  friend class TorchStepExecutor;
  std::map<std::string, ::torch::Tensor> inputs_, outputs_;
};

/// Forward and loss: returns the scalar loss the executor backpropagates.
using TorchStepFn = std::function<::torch::Tensor(TorchStep&)>;

struct TorchExecutorOptions {
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;    // "loss" (float32 scalar) is added
  runtime::ExecutorOptions executor;  // backend "host" (the default here), slots, deadline, callbacks, ...
  /// Data-parallel: this rank's communicator (MPI or in-process); the
  /// gradients are averaged across its ranks in buckets.
  std::shared_ptr<collectives::Communicator> communicator;
  std::size_t bucket_cap_bytes = 25u << 20;
  std::size_t first_bucket_cap_bytes = 1u << 20;
};

/// The largest |difference| per parameter and buffer between k replayed and
/// k eager steps from the same start (check_against_eager).
struct EagerComparison {
  std::map<std::string, double> max_abs_diff;
  double worst = 0;
  [[nodiscard]] bool identical() const { return worst == 0.0; }
};

class TorchStepExecutor {
 public:
  TorchStepExecutor(std::shared_ptr<::torch::nn::Module> module, std::shared_ptr<::torch::optim::Optimizer> optimizer,
                    TorchStepFn step, TorchExecutorOptions options);
  ~TorchStepExecutor();
  TorchStepExecutor(const TorchStepExecutor&) = delete;
  TorchStepExecutor& operator=(const TorchStepExecutor&) = delete;

  /// Warm-ups and capture (done by the first replay otherwise).
  void prepare();
  /// Copies `inputs` (checked against the specs: every declared input, the
  /// declared shape and dtype) into a free slot and replays the step.
  runtime::ReplayHandle replay(const std::map<std::string, ::torch::Tensor>& inputs);
  /// Zero copy: a free slot whose inputs the caller fills through
  /// slot_input(); then replay(std::move(slot)).
  runtime::InputSlot acquire_inputs();
  [[nodiscard]] ::torch::Tensor slot_input(const runtime::InputSlot& slot, const std::string& name) const;
  runtime::ReplayHandle replay(runtime::InputSlot slot);
  /// The replay's output `name` as a tensor over its pinned buffer (valid
  /// until the handle is released).
  [[nodiscard]] ::torch::Tensor output(const runtime::ReplayHandle& handle, const std::string& name) const;

  /// k replays and k eager steps (closure, backward, optimizer step called
  /// directly, no executor) from the same module and optimizer state, on the
  /// inputs `make_inputs(i)` gives for step i; the largest |difference| per
  /// parameter and buffer. The module and optimizer end as the replays left
  /// them. Single process only (no communicator).
  EagerComparison check_against_eager(int k,
                                      const std::function<std::map<std::string, ::torch::Tensor>(int)>& make_inputs);

  [[nodiscard]] runtime::StepExecutor& executor() { return *executor_; }
  [[nodiscard]] std::size_t buckets() const noexcept { return buckets_; }

 private:
  struct Shared;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<runtime::StepExecutor> executor_;
  std::size_t buckets_ = 0;
};

}  // namespace stepgraph::torchstep
