// stepgraph/demo/mlp.h — the demo: a small MLP trained on synthetic
// regression data, eagerly and by graph replay, from one seed.
//
// The model: `inputs` → `hidden` (ReLU) → 1, mean squared error, plain SGD.
// One training step is seven kernels (forward hidden, forward output, loss,
// two gradient kernels, backward through the ReLU, SGD update), each with a
// host (C++) and a CUDA implementation computing the same IEEE operations in
// the same order, without atomics: eager and replayed training end with
// bit-identical parameters on either backend.
//
// The learning rate is read by the update kernel from the executor's
// device-visible StepScalars, and the demo changes it every step (a linear
// decay): a step that baked the host value into the graph would train
// differently when replayed, and the demo would report a difference.
//
// Used by `stepgraph demo`, tests/demo and bench/bm_executor.
// Thread-safety: the functions are reentrant; each call owns its executors.
// Capture: enqueue_mlp_step may be called during stream capture (it only
// launches); the others may not.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>

namespace stepgraph::demo {

namespace rt = stepgraph::runtime;

/// The MLP's sizes and its parameter layout: one float buffer
/// [ W1 (hidden x inputs, row-major) | b1 (hidden) | W2 (hidden) | b2 ],
/// gradients in the same layout.
struct MlpShape {
  int batch = 64;
  int inputs = 16;
  int hidden = 32;

  [[nodiscard]] std::size_t w1_offset() const { return 0; }
  [[nodiscard]] std::size_t b1_offset() const { return static_cast<std::size_t>(hidden) * inputs; }
  [[nodiscard]] std::size_t w2_offset() const { return b1_offset() + static_cast<std::size_t>(hidden); }
  [[nodiscard]] std::size_t b2_offset() const { return w2_offset() + static_cast<std::size_t>(hidden); }
  [[nodiscard]] std::size_t param_count() const { return b2_offset() + 1; }
};

/// The buffers one step touches (non-owning; each must outlive the call,
/// and any graph captured from it keeps them alive itself).
struct MlpStepBuffers {
  const rt::Buffer* x = nullptr;        // batch x inputs, read (zero copy when pinned)
  const rt::Buffer* y = nullptr;        // batch targets, read
  const rt::Buffer* loss = nullptr;     // 1 float, written (pinned output)
  const rt::Buffer* params = nullptr;   // param_count floats, read and updated
  const rt::Buffer* grads = nullptr;    // param_count floats, scratch
  const rt::Buffer* act = nullptr;      // batch x hidden, scratch
  const rt::Buffer* dact = nullptr;     // batch x hidden, scratch
  const rt::Buffer* out = nullptr;      // batch, scratch
  const rt::Buffer* dout = nullptr;     // batch, scratch
  const rt::Buffer* scalars = nullptr;  // rt::StepScalars, device-visible; the learning rate is read from it
};

/// The step's buffers as a StepExecutor hands them to the step function of
/// mlp_step_spec() (valid during the call).
[[nodiscard]] MlpStepBuffers mlp_step_buffers(const rt::StepContext& ctx);

/// Where a data-parallel step hooks its gradient AllReduce into the step
/// (collectives/bucketer.h). Gradient 0 is [W2 | b2] (complete after the
/// output-layer gradient kernel), gradient 1 is [W1 | b1] (after the hidden
/// layer's): backward produces them in that order.
struct MlpStepHooks {
  std::function<void(rt::StreamRef, int gradient)> gradient_ready;
  std::function<void(rt::StreamRef)> before_update;  // the optimizer waits for what this enqueues
};

/// Enqueues one training step (seven annotated kernel launches) on `stream`.
void enqueue_mlp_step(rt::StreamRef stream, const MlpShape& shape, const MlpStepBuffers& buffers,
                      const MlpStepHooks* hooks = nullptr);

/// The StepSpec of the MLP step: inputs x, y (zero copy); output loss;
/// state params; scratch grads, act, dact, out, dout.
[[nodiscard]] rt::StepSpec mlp_step_spec(const MlpShape& shape);
/// The step function for a StepExecutor built from mlp_step_spec(shape).
[[nodiscard]] rt::StepFunction mlp_step_function(const MlpShape& shape);

/// Initial parameters drawn from `seed` (uniform, fan-in scaled; biases 0).
[[nodiscard]] std::vector<float> mlp_init_params(const MlpShape& shape, std::uint64_t seed);
/// The batch of step `step`: x uniform in [-1, 1), y = a smooth nonlinear
/// function of x fixed by `seed`. A pure function of (seed, step), so that
/// both runs (and a test's reference) see the same data.
void mlp_make_batch(const MlpShape& shape, std::uint64_t seed, std::int64_t step, std::span<float> x,
                    std::span<float> y);
/// The learning rate of step `step` of `steps`: linear decay from `base` to
/// base/10.
[[nodiscard]] float mlp_learning_rate(float base, std::int64_t step, int steps);

struct DemoOptions {
  std::string backend = "auto";  // auto | host | cuda (ignored if backend_instance is set)
  std::shared_ptr<rt::Backend> backend_instance;
  int device = 0;
  int steps = 200;
  int warmup = 3;  // eager warm-ups of the replay run (they update the parameters)
  std::uint64_t seed = 1;
  MlpShape shape;
  float learning_rate = 0.05f;
  int max_in_flight = 2;
  /// Observability of the replay run (run_demo gives them to the graph run
  /// only): the executor's metrics go to `metrics`, plus the user gauges
  /// stepgraph_demo_loss and stepgraph_demo_samples_per_second; replays are
  /// traced into `trace` (docs/observability.md). Null: off.
  std::shared_ptr<rt::MetricsRegistry> metrics;
  std::shared_ptr<rt::TraceRecorder> trace;
};

/// One training run of `options.steps` steps.
struct TrainingRun {
  std::vector<float> params;    // after the last step
  std::vector<float> losses;    // per step, read from the pinned output
  std::vector<double> step_us;  // per step: acquire, fill inputs, replay, wait, read loss, release
  std::size_t graph_nodes = 0;  // nodes of the captured step (graph mode)
};

/// Trains with a StepExecutor in `mode` (kEager: the step function launches
/// every step; kGraph: options.warmup eager warm-ups, one capture, then
/// replays), feeding each step's batch through acquire_inputs().
[[nodiscard]] TrainingRun train_mlp(const DemoOptions& options, rt::ExecutionMode mode);

struct DemoReport {
  std::string backend;
  std::string device;
  int steps = 0;
  int warmup = 0;
  MlpShape shape;
  float learning_rate = 0;
  std::uint64_t seed = 0;
  double eager_median_us = 0;   // median step time of the eager run
  double replay_median_us = 0;  // median step time of the replayed steps (after warm-up and capture)
  double speedup = 0;           // eager_median_us / replay_median_us
  double capture_step_us = 0;   // the first graph step: capture, instantiate, launch
  std::size_t graph_nodes = 0;
  float first_loss = 0;
  float last_loss = 0;
  std::vector<float> losses;      // the replay run's loss curve
  double max_abs_param_diff = 0;  // eager vs replay after the last step; must be exactly 0
  double max_abs_loss_diff = 0;   // eager vs replay, over every step
  [[nodiscard]] bool identical() const { return max_abs_param_diff == 0.0 && max_abs_loss_diff == 0.0; }
};

/// The demo: an eager run and a replay run from one seed, compared.
/// Throws stepgraph::Error if a run fails (the message names the step).
[[nodiscard]] DemoReport run_demo(const DemoOptions& options);

/// Largest |a[i] - b[i]|; infinity where exactly one of the two is NaN or
/// the sizes differ.
[[nodiscard]] double max_abs_diff(std::span<const float> a, std::span<const float> b);

/// The median of `v` (0 for an empty span).
[[nodiscard]] double median(std::span<const double> v);

}  // namespace stepgraph::demo
