// The demo MLP: kernels wrapped for the runtime, the step function, the
// synthetic data, and the two training runs compared by run_demo().
#include <stepgraph/demo/mlp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "mlp_kernels.h"

namespace stepgraph::demo {

namespace {

namespace k = kernels;

k::MlpDims dims_of(const MlpShape& s) {
  return {s.batch, s.inputs, s.hidden};
}

rt::Kernel<const float*, const float*, float*, k::MlpDims> forward_hidden() {
  return {"mlp.forward_hidden", k::forward_hidden_host, k::forward_hidden_device()};
}
rt::Kernel<const float*, const float*, const float*, float*, float*, k::MlpDims> forward_output() {
  return {"mlp.forward_output", k::forward_output_host, k::forward_output_device()};
}
rt::Kernel<const float*, const float*, float*, k::MlpDims> mse_loss() {
  return {"mlp.mse_loss", k::mse_loss_host, k::mse_loss_device()};
}
rt::Kernel<const float*, const float*, float*, k::MlpDims> grad_output() {
  return {"mlp.grad_output", k::grad_output_host, k::grad_output_device()};
}
rt::Kernel<const float*, const float*, const float*, float*, k::MlpDims> backward_hidden() {
  return {"mlp.backward_hidden", k::backward_hidden_host, k::backward_hidden_device()};
}
rt::Kernel<const float*, const float*, float*, k::MlpDims> grad_hidden() {
  return {"mlp.grad_hidden", k::grad_hidden_host, k::grad_hidden_device()};
}
rt::Kernel<float*, const float*, std::size_t, const float*> sgd_update() {
  return {"mlp.sgd_update", k::sgd_update_host, k::sgd_update_device()};
}

// A counter-based generator: the value at (seed, stream, index) does not
// depend on what was drawn before, so a batch is a pure function of its step.
std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/// Uniform in [-1, 1) with 24 random bits (exactly representable floats).
float uniform_pm1(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  const std::uint64_t h = splitmix64(seed ^ splitmix64(stream ^ splitmix64(index)));
  return static_cast<float>(static_cast<double>(h >> 40) / static_cast<double>(1ull << 23) - 1.0);
}

constexpr std::uint64_t kStreamInit = 1;
constexpr std::uint64_t kStreamTeacher = 2;
constexpr std::uint64_t kStreamData = 3;

void check_shape(const MlpShape& s) {
  STEPGRAPH_CHECK(s.batch >= 1 && s.inputs >= 2 && s.hidden >= 1, InvalidArgument,
                  "MLP shape batch {} inputs {} hidden {}: give batch >= 1, inputs >= 2, hidden >= 1", s.batch,
                  s.inputs, s.hidden);
}

}  // namespace

void enqueue_mlp_step(rt::StreamRef stream, const MlpShape& shape, const MlpStepBuffers& b,
                      const MlpStepHooks* hooks) {
  STEPGRAPH_CHECK(b.x && b.y && b.loss && b.params && b.grads && b.act && b.dact && b.out && b.dout && b.scalars,
                  InvalidArgument, "enqueue_mlp_step: every buffer of MlpStepBuffers must be set");
  const auto d = dims_of(shape);
  const std::size_t batch = static_cast<std::size_t>(shape.batch);
  const std::size_t bh = batch * static_cast<std::size_t>(shape.hidden);
  const std::size_t np = shape.param_count();
  const std::size_t f = sizeof(float);
  // The learning rate inside the device-visible StepScalars: the kernel
  // dereferences it at run time, so each replay sees the value the executor
  // wrote for that step (executor.h, Note [Host code runs at warm-up and
  // capture only]).
  constexpr std::size_t kLrOffset = offsetof(rt::StepScalars, learning_rate);
  const auto* lr = reinterpret_cast<const float*>(static_cast<const char*>(b.scalars->data()) + kLrOffset);

  rt::launch(stream, forward_hidden(),
             {.dims = rt::LaunchDims::linear(bh, 128),
              .accesses = {rt::read(*b.x), rt::read(*b.params, 0, shape.b1_offset() * f + shape.hidden * f),
                           rt::write(*b.act)}},
             b.x->data<const float>(), b.params->data<const float>(), b.act->data<float>(), d);
  rt::launch(stream, forward_output(),
             {.dims = rt::LaunchDims::linear(batch, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.params, shape.w2_offset() * f, (shape.hidden + 1) * f),
                           rt::read(*b.y), rt::write(*b.out), rt::write(*b.dout)}},
             b.act->data<const float>(), b.params->data<const float>(), b.y->data<const float>(), b.out->data<float>(),
             b.dout->data<float>(), d);
  rt::launch(
      stream, mse_loss(),
      {.dims = rt::LaunchDims::linear(1, 32), .accesses = {rt::read(*b.out), rt::read(*b.y), rt::write(*b.loss)}},
      b.out->data<const float>(), b.y->data<const float>(), b.loss->data<float>(), d);
  rt::launch(stream, grad_output(),
             {.dims = rt::LaunchDims::linear(static_cast<std::size_t>(shape.hidden) + 1, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.dout),
                           rt::write(*b.grads, shape.w2_offset() * f, (shape.hidden + 1) * f)}},
             b.act->data<const float>(), b.dout->data<const float>(), b.grads->data<float>(), d);
  if (hooks != nullptr && hooks->gradient_ready) hooks->gradient_ready(stream, 0);
  rt::launch(stream, backward_hidden(),
             {.dims = rt::LaunchDims::linear(bh, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.dout),
                           rt::read(*b.params, shape.w2_offset() * f, shape.hidden * f), rt::write(*b.dact)}},
             b.act->data<const float>(), b.dout->data<const float>(), b.params->data<const float>(),
             b.dact->data<float>(), d);
  rt::launch(stream, grad_hidden(),
             {.dims = rt::LaunchDims::linear(shape.w2_offset(), 128),
              .accesses = {rt::read(*b.x), rt::read(*b.dact), rt::write(*b.grads, 0, shape.w2_offset() * f)}},
             b.x->data<const float>(), b.dact->data<const float>(), b.grads->data<float>(), d);
  if (hooks != nullptr && hooks->gradient_ready) hooks->gradient_ready(stream, 1);
  if (hooks != nullptr && hooks->before_update) hooks->before_update(stream);
  rt::launch(stream, sgd_update(),
             {.dims = rt::LaunchDims::linear(np, 128),
              .accesses = {rt::read_write(*b.params, 0, np * f), rt::read(*b.grads, 0, np * f),
                           rt::read(*b.scalars, kLrOffset, sizeof(float))}},
             b.params->data<float>(), b.grads->data<const float>(), np, lr);
}

rt::StepSpec mlp_step_spec(const MlpShape& shape) {
  check_shape(shape);
  const std::size_t f = sizeof(float);
  const std::size_t batch = static_cast<std::size_t>(shape.batch);
  const std::size_t bh = batch * static_cast<std::size_t>(shape.hidden);
  rt::StepSpec spec;
  spec.inputs = {{.name = "x", .bytes = batch * static_cast<std::size_t>(shape.inputs) * f},
                 {.name = "y", .bytes = batch * f}};
  spec.outputs = {{.name = "loss", .bytes = f}};
  spec.state = {{.name = "params", .bytes = shape.param_count() * f}};
  spec.scratch = {{.name = "grads", .bytes = shape.param_count() * f},
                  {.name = "act", .bytes = bh * f},
                  {.name = "dact", .bytes = bh * f},
                  {.name = "out", .bytes = batch * f},
                  {.name = "dout", .bytes = batch * f}};
  return spec;
}

rt::StepFunction mlp_step_function(const MlpShape& shape) {
  check_shape(shape);
  return [shape](rt::StepContext& ctx) { enqueue_mlp_step(ctx.stream(), shape, mlp_step_buffers(ctx)); };
}

MlpStepBuffers mlp_step_buffers(const rt::StepContext& ctx) {
  MlpStepBuffers b;
  b.x = &ctx.input("x");
  b.y = &ctx.input("y");
  b.loss = &ctx.output("loss");
  b.params = &ctx.state("params");
  b.grads = &ctx.scratch("grads");
  b.act = &ctx.scratch("act");
  b.dact = &ctx.scratch("dact");
  b.out = &ctx.scratch("out");
  b.dout = &ctx.scratch("dout");
  b.scalars = &ctx.scalars();
  return b;
}

std::vector<float> mlp_init_params(const MlpShape& shape, std::uint64_t seed) {
  check_shape(shape);
  std::vector<float> p(shape.param_count(), 0.0f);
  // He-uniform for the ReLU layer, fan-in scaled for the output layer.
  const float bound1 = std::sqrt(6.0f / static_cast<float>(shape.inputs));
  const float bound2 = 1.0f / std::sqrt(static_cast<float>(shape.hidden));
  for (std::size_t i = 0; i < shape.b1_offset(); ++i) p[i] = bound1 * uniform_pm1(seed, kStreamInit, i);
  for (std::size_t j = 0; j < static_cast<std::size_t>(shape.hidden); ++j)
    p[shape.w2_offset() + j] = bound2 * uniform_pm1(seed, kStreamInit, shape.w2_offset() + j);
  return p;
}

void mlp_make_batch(const MlpShape& shape, std::uint64_t seed, std::int64_t step, std::span<float> x,
                    std::span<float> y) {
  check_shape(shape);
  const auto n = static_cast<std::size_t>(shape.inputs);
  const auto batch = static_cast<std::size_t>(shape.batch);
  STEPGRAPH_CHECK(x.size() >= batch * n && y.size() >= batch, InvalidArgument,
                  "mlp_make_batch: x has {} and y {} elements; a batch needs {} and {}", x.size(), y.size(), batch * n,
                  batch);
  // The teacher: y = tanh(a . x) + 0.5 * x0 * x1, with a fixed by the seed.
  std::vector<float> a(n);
  const float scale = 2.0f / std::sqrt(static_cast<float>(n));
  for (std::size_t k = 0; k < n; ++k) a[k] = scale * uniform_pm1(seed, kStreamTeacher, k);
  const auto base = static_cast<std::uint64_t>(step) * batch * n;
  for (std::size_t b = 0; b < batch; ++b) {
    double dot = 0;
    for (std::size_t k = 0; k < n; ++k) {
      const float v = uniform_pm1(seed, kStreamData, base + b * n + k);
      x[b * n + k] = v;
      dot += static_cast<double>(a[k]) * v;
    }
    y[b] = static_cast<float>(std::tanh(dot) + 0.5 * static_cast<double>(x[b * n]) * x[b * n + 1]);
  }
}

float mlp_learning_rate(float base, std::int64_t step, int steps) {
  const double t = steps > 1 ? static_cast<double>(step) / static_cast<double>(steps - 1) : 0.0;
  return static_cast<float>(static_cast<double>(base) * (1.0 - 0.9 * std::clamp(t, 0.0, 1.0)));
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool na = std::isnan(a[i]), nb = std::isnan(b[i]);
    if (na || nb) {
      if (na != nb) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  }
  return worst;
}

double median(std::span<const double> v) {
  if (v.empty()) return 0;
  std::vector<double> s(v.begin(), v.end());
  std::sort(s.begin(), s.end());
  const std::size_t m = s.size() / 2;
  return s.size() % 2 == 1 ? s[m] : 0.5 * (s[m - 1] + s[m]);
}

TrainingRun train_mlp(const DemoOptions& options, rt::ExecutionMode mode) {
  STEPGRAPH_CHECK(options.steps >= 1, InvalidArgument, "demo: steps is {}; give at least 1", options.steps);
  STEPGRAPH_CHECK(options.warmup >= 0 && options.warmup < options.steps, InvalidArgument,
                  "demo: warmup is {} with {} steps; give 0 <= warmup < steps so that at least one step is replayed",
                  options.warmup, options.steps);
  const MlpShape& shape = options.shape;
  check_shape(shape);

  rt::ExecutorOptions eo;
  eo.backend = options.backend;
  eo.backend_instance = options.backend_instance;
  eo.device = options.device;
  eo.warmup = options.warmup;
  eo.max_in_flight = options.max_in_flight;
  eo.mode = mode;
  eo.metrics = options.metrics;
  eo.trace = options.trace;
  rt::StepExecutor executor(mlp_step_spec(shape), mlp_step_function(shape), eo);
  rt::Gauge* loss_gauge = nullptr;
  rt::Gauge* throughput_gauge = nullptr;
  if (options.metrics) {
    loss_gauge = &options.metrics->gauge("stepgraph_demo_loss", "Mean squared error of the demo's latest step");
    throughput_gauge = &options.metrics->gauge("stepgraph_demo_samples_per_second",
                                               "Training samples per second of the demo's latest step");
  }

  const auto init = mlp_init_params(shape, options.seed);
  executor.write_state("params", init.data(), init.size() * sizeof(float));

  TrainingRun run;
  run.losses.reserve(static_cast<std::size_t>(options.steps));
  run.step_us.reserve(static_cast<std::size_t>(options.steps));
  std::vector<float> x(static_cast<std::size_t>(shape.batch) * static_cast<std::size_t>(shape.inputs));
  std::vector<float> y(static_cast<std::size_t>(shape.batch));
  for (int step = 0; step < options.steps; ++step) {
    // Data and learning rate are made outside the timed region: they cost
    // the same in both runs and are not what the demo measures.
    mlp_make_batch(shape, options.seed, step, x, y);
    executor.set_learning_rate(mlp_learning_rate(options.learning_rate, step, options.steps));

    const auto t0 = std::chrono::steady_clock::now();
    rt::InputSlot slot = executor.acquire_inputs();
    // Zero copy: the graph reads these pinned buffers in place.
    std::memcpy(slot.input("x").host_data(), x.data(), x.size() * sizeof(float));
    std::memcpy(slot.input("y").host_data(), y.data(), y.size() * sizeof(float));
    rt::ReplayHandle h = executor.replay(std::move(slot));
    const rt::ReplayStatus status = h.wait();
    if (status != rt::ReplayStatus::kDone) {
      const auto err = h.error();
      throw Error(fmt::format("demo: {} step {} ended {}: {}", mode == rt::ExecutionMode::kEager ? "eager" : "replay",
                              step, rt::to_string(status), err ? err->message : std::string("no error reported")));
    }
    const float loss = h.output_span<const float>("loss")[0];
    h.release();
    const auto t1 = std::chrono::steady_clock::now();
    run.losses.push_back(loss);
    run.step_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    if (loss_gauge != nullptr) {
      loss_gauge->set(loss);
      throughput_gauge->set(shape.batch / std::chrono::duration<double>(t1 - t0).count());
    }
  }
  executor.synchronize();
  run.params.resize(shape.param_count());
  executor.read_state("params", run.params.data(), run.params.size() * sizeof(float));
  if (mode == rt::ExecutionMode::kGraph) run.graph_nodes = executor.graph_info().nodes.size();
  executor.close();
  return run;
}

DemoReport run_demo(const DemoOptions& options) {
  DemoOptions o = options;
  // One backend for both runs: the same device, the same worker threads.
  if (!o.backend_instance) o.backend_instance = rt::Backend::create(o.backend);
  const auto& backend = *o.backend_instance;
  STEPGRAPH_CHECK(o.device >= 0 && o.device < backend.device_count(), InvalidArgument,
                  "demo: device {} does not exist on the {} backend ({} device(s))", o.device, backend.name(),
                  backend.device_count());

  DemoReport r;
  r.backend = std::string(backend.name());
  r.device = backend.device(o.device).name;
  r.steps = o.steps;
  r.warmup = o.warmup;
  r.shape = o.shape;
  r.learning_rate = o.learning_rate;
  r.seed = o.seed;

  STEPGRAPH_INFO(kTools, "demo: eager run of {} steps on {} ({})", o.steps, r.backend, r.device);
  DemoOptions eager_options = o;  // metrics and traces describe the replay run only
  eager_options.metrics.reset();
  eager_options.trace.reset();
  const TrainingRun eager = train_mlp(eager_options, rt::ExecutionMode::kEager);
  STEPGRAPH_INFO(kTools, "demo: replay run: {} warm-up(s), capture, {} replay(s)", o.warmup, o.steps - o.warmup);
  const TrainingRun replay = train_mlp(o, rt::ExecutionMode::kGraph);

  r.eager_median_us = median(eager.step_us);
  // Replayed steps only: the warm-ups are eager and step `warmup` also
  // captures and instantiates (reported apart, as a one-off cost).
  const auto first_replayed = static_cast<std::size_t>(o.warmup) + 1;
  if (replay.step_us.size() > first_replayed)
    r.replay_median_us = median(std::span(replay.step_us).subspan(first_replayed));
  else
    r.replay_median_us = replay.step_us.back();
  r.capture_step_us = replay.step_us[static_cast<std::size_t>(o.warmup)];
  r.speedup = r.replay_median_us > 0 ? r.eager_median_us / r.replay_median_us : 0;
  r.graph_nodes = replay.graph_nodes;
  r.losses = replay.losses;
  r.first_loss = replay.losses.front();
  r.last_loss = replay.losses.back();
  r.max_abs_param_diff = max_abs_diff(eager.params, replay.params);
  r.max_abs_loss_diff = max_abs_diff(eager.losses, replay.losses);
  return r;
}

}  // namespace stepgraph::demo
