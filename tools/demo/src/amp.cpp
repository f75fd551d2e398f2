// The demo MLP in mixed precision with the GradScaler inside the captured
// step (stepgraph/demo/amp.h; docs/amp.md).
#include <stepgraph/demo/amp.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "amp_kernels.h"

namespace stepgraph::demo {

namespace {

namespace k = kernels;
using k::AmpState;
using k::F16;

k::MlpDims dims_of(const MlpShape& s) {
  return {s.batch, s.inputs, s.hidden};
}

rt::Kernel<const float*, const float*, F16*, k::MlpDims> forward_hidden() {
  return {"amp.forward_hidden", k::amp_forward_hidden_host, k::amp_forward_hidden_device()};
}
rt::Kernel<const F16*, const float*, const float*, const AmpState*, F16*, F16*, k::MlpDims> forward_output() {
  return {"amp.forward_output", k::amp_forward_output_host, k::amp_forward_output_device()};
}
rt::Kernel<const F16*, const float*, float*, k::MlpDims> mse_loss() {
  return {"amp.mse_loss", k::amp_mse_loss_host, k::amp_mse_loss_device()};
}
rt::Kernel<const F16*, const F16*, F16*, k::MlpDims> grad_output() {
  return {"amp.grad_output", k::amp_grad_output_host, k::amp_grad_output_device()};
}
rt::Kernel<const F16*, const F16*, const float*, F16*, k::MlpDims> backward_hidden() {
  return {"amp.backward_hidden", k::amp_backward_hidden_host, k::amp_backward_hidden_device()};
}
rt::Kernel<const float*, const F16*, F16*, k::MlpDims> grad_hidden() {
  return {"amp.grad_hidden", k::amp_grad_hidden_host, k::amp_grad_hidden_device()};
}
rt::Kernel<const F16*, float*, std::size_t, AmpState*> unscale_check() {
  return {"amp.unscale_check", k::amp_unscale_check_host, k::amp_unscale_check_device()};
}
rt::Kernel<const AmpState*, rt::ConditionHandle> decide_step() {
  return {"amp.decide_step", k::amp_decide_step_host, k::amp_decide_step_device()};
}
rt::Kernel<AmpState*, AmpState*> update_scale() {
  return {"amp.update_scale", k::amp_update_scale_host, k::amp_update_scale_device()};
}
rt::Kernel<float*, const float*, std::size_t, const float*> sgd_update() {
  return {"amp.sgd_update", k::sgd_update_host, k::sgd_update_device()};
}

rt::SyncCounts minus(const rt::SyncCounts& b, const rt::SyncCounts& a) {
  rt::SyncCounts d;
  d.stream_synchronize = b.stream_synchronize - a.stream_synchronize;
  d.device_synchronize = b.device_synchronize - a.device_synchronize;
  d.event_synchronize = b.event_synchronize - a.event_synchronize;
  d.event_wait_for = b.event_wait_for - a.event_wait_for;
  d.stream_query = b.stream_query - a.stream_query;
  d.event_query = b.event_query - a.event_query;
  d.events_waited_on = b.events_waited_on - a.events_waited_on;
  return d;
}

constexpr float kOverflowInput = 1e6f;  // beyond binary16's largest finite value, 65504

}  // namespace

void enqueue_amp_step(rt::StreamRef stream, const MlpShape& shape, const AmpStepBuffers& b) {
  STEPGRAPH_CHECK(b.x && b.y && b.loss && b.scaler && b.params && b.amp && b.grads && b.grads_h && b.act && b.dact &&
                      b.out && b.dout && b.scalars,
                  InvalidArgument, "enqueue_amp_step: every buffer of AmpStepBuffers must be set");
  const auto d = dims_of(shape);
  const std::size_t batch = static_cast<std::size_t>(shape.batch);
  const std::size_t bh = batch * static_cast<std::size_t>(shape.hidden);
  const std::size_t np = shape.param_count();
  const std::size_t f = sizeof(float);
  const std::size_t h = sizeof(F16);
  constexpr std::size_t kLrOffset = offsetof(rt::StepScalars, learning_rate);
  const auto* lr = reinterpret_cast<const float*>(static_cast<const char*>(b.scalars->data()) + kLrOffset);
  auto* amp = b.amp->data<AmpState>();

  // Forward and backward in binary16 storage, the loss gradient scaled by
  // the device-side scale (Note [AMP step arithmetic], amp_kernels.h).
  rt::launch(stream, forward_hidden(),
             {.dims = rt::LaunchDims::linear(bh, 128),
              .accesses = {rt::read(*b.x), rt::read(*b.params, 0, shape.w2_offset() * f), rt::write(*b.act)}},
             b.x->data<const float>(), b.params->data<const float>(), b.act->data<F16>(), d);
  rt::launch(stream, forward_output(),
             {.dims = rt::LaunchDims::linear(batch, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.params, shape.w2_offset() * f, (shape.hidden + 1) * f),
                           rt::read(*b.y), rt::read(*b.amp, offsetof(AmpState, scale), sizeof(float)),
                           rt::write(*b.out), rt::write(*b.dout)}},
             b.act->data<const F16>(), b.params->data<const float>(), b.y->data<const float>(),
             static_cast<const AmpState*>(amp), b.out->data<F16>(), b.dout->data<F16>(), d);
  rt::launch(
      stream, mse_loss(),
      {.dims = rt::LaunchDims::linear(1, 32), .accesses = {rt::read(*b.out), rt::read(*b.y), rt::write(*b.loss)}},
      b.out->data<const F16>(), b.y->data<const float>(), b.loss->data<float>(), d);
  rt::launch(stream, grad_output(),
             {.dims = rt::LaunchDims::linear(static_cast<std::size_t>(shape.hidden) + 1, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.dout),
                           rt::write(*b.grads_h, shape.w2_offset() * h, (shape.hidden + 1) * h)}},
             b.act->data<const F16>(), b.dout->data<const F16>(), b.grads_h->data<F16>(), d);
  rt::launch(stream, backward_hidden(),
             {.dims = rt::LaunchDims::linear(bh, 128),
              .accesses = {rt::read(*b.act), rt::read(*b.dout),
                           rt::read(*b.params, shape.w2_offset() * f, shape.hidden * f), rt::write(*b.dact)}},
             b.act->data<const F16>(), b.dout->data<const F16>(), b.params->data<const float>(), b.dact->data<F16>(),
             d);
  rt::launch(stream, grad_hidden(),
             {.dims = rt::LaunchDims::linear(shape.w2_offset(), 128),
              .accesses = {rt::read(*b.x), rt::read(*b.dact), rt::write(*b.grads_h, 0, shape.w2_offset() * h)}},
             b.x->data<const float>(), b.dact->data<const F16>(), b.grads_h->data<F16>(), d);

  // The overflow check over all gradients (inf/NaN) into a device flag,
  // fused with unscaling into the float32 gradients the optimizer reads.
  stream.memset(b.amp->slice(offsetof(AmpState, found_inf), sizeof(std::int32_t)), 0, "amp.clear_found_inf");
  rt::launch(stream, unscale_check(),
             {.dims = rt::LaunchDims::linear(np, 128),
              .accesses = {rt::read(*b.grads_h, 0, np * h), rt::write(*b.grads, 0, np * f), rt::read_write(*b.amp)}},
             b.grads_h->data<const F16>(), b.grads->data<float>(), np, amp);

  // The optimizer step inside an IF node whose condition a kernel sets
  // from the flag: the decision is the device's, never the host's.
  rt::run_as_graph(stream, [&](rt::StreamRef s) {
    const rt::ConditionHandle no_overflow = s.create_condition(0);
    rt::launch(s, decide_step(), {.accesses = {rt::read(*b.amp)}}, static_cast<const AmpState*>(amp), no_overflow);
    s.capture_if(
        no_overflow,
        [&](rt::StreamRef body) {
          rt::launch(body, sgd_update(),
                     {.dims = rt::LaunchDims::linear(np, 128),
                      .accesses = {rt::read_write(*b.params, 0, np * f), rt::read(*b.grads, 0, np * f),
                                   rt::read(*b.scalars, kLrOffset, sizeof(float))}},
                     b.params->data<float>(), b.grads->data<const float>(), np, lr);
        },
        "amp.optimizer_if_finite");
  });

  // PyTorch's scale update, on the device; a copy for the host to read
  // after the step (it decides nothing).
  rt::launch(stream, update_scale(), {.accesses = {rt::read_write(*b.amp), rt::write(*b.scaler)}}, amp,
             b.scaler->data<AmpState>());
}

rt::StepSpec amp_step_spec(const MlpShape& shape) {
  auto base = mlp_step_spec(shape);  // checks the shape
  const std::size_t f = sizeof(float);
  const std::size_t h = sizeof(F16);
  const std::size_t batch = static_cast<std::size_t>(shape.batch);
  const std::size_t bh = batch * static_cast<std::size_t>(shape.hidden);
  const std::size_t np = shape.param_count();
  rt::StepSpec spec;
  spec.inputs = base.inputs;
  spec.outputs = {{.name = "loss", .bytes = f}, {.name = "scaler", .bytes = sizeof(AmpState)}};
  spec.state = {{.name = "params", .bytes = np * f}, {.name = "amp", .bytes = sizeof(AmpState)}};
  spec.scratch = {{.name = "grads", .bytes = np * f},  {.name = "grads_h", .bytes = np * h},
                  {.name = "act", .bytes = bh * h},    {.name = "dact", .bytes = bh * h},
                  {.name = "out", .bytes = batch * h}, {.name = "dout", .bytes = batch * h}};
  return spec;
}

AmpStepBuffers amp_step_buffers(const rt::StepContext& ctx) {
  AmpStepBuffers b;
  b.x = &ctx.input("x");
  b.y = &ctx.input("y");
  b.loss = &ctx.output("loss");
  b.scaler = &ctx.output("scaler");
  b.params = &ctx.state("params");
  b.amp = &ctx.state("amp");
  b.grads = &ctx.scratch("grads");
  b.grads_h = &ctx.scratch("grads_h");
  b.act = &ctx.scratch("act");
  b.dact = &ctx.scratch("dact");
  b.out = &ctx.scratch("out");
  b.dout = &ctx.scratch("dout");
  b.scalars = &ctx.scalars();
  return b;
}

rt::StepFunction amp_step_function(const MlpShape& shape) {
  (void)amp_step_spec(shape);  // checks the shape now, not at the first step
  return [shape](rt::StepContext& ctx) { enqueue_amp_step(ctx.stream(), shape, amp_step_buffers(ctx)); };
}

AmpRun train_mlp_amp(const AmpDemoOptions& options, rt::ExecutionMode mode) {
  const DemoOptions& o = options.base;
  STEPGRAPH_CHECK(o.steps >= 1, InvalidArgument, "demo --amp: steps is {}; give at least 1", o.steps);
  STEPGRAPH_CHECK(o.warmup >= 0 && o.warmup < o.steps, InvalidArgument,
                  "demo --amp: warmup is {} with {} steps; give 0 <= warmup < steps", o.warmup, o.steps);
  const GradScalerOptions& sc = options.scaler;
  STEPGRAPH_CHECK(sc.init_scale > 0 && sc.growth_factor > 1 && sc.backoff_factor > 0 && sc.backoff_factor < 1 &&
                      sc.growth_interval >= 1,
                  InvalidArgument,
                  "demo --amp: scaler init {} growth {} backoff {} interval {}: give init > 0, growth > 1, "
                  "0 < backoff < 1, interval >= 1 (as torch.amp.GradScaler requires)",
                  sc.init_scale, sc.growth_factor, sc.backoff_factor, sc.growth_interval);
  const MlpShape& shape = o.shape;

  rt::ExecutorOptions eo;
  eo.backend = o.backend;
  eo.backend_instance = o.backend_instance;
  eo.device = o.device;
  eo.warmup = o.warmup;
  eo.max_in_flight = o.max_in_flight;
  eo.mode = mode;
  rt::StepExecutor executor(amp_step_spec(shape), amp_step_function(shape), eo);
  rt::Backend& backend = executor.backend();

  const auto init = mlp_init_params(shape, o.seed);
  executor.write_state("params", init.data(), init.size() * sizeof(float));
  const AmpState state{sc.init_scale, 0, 0, 0, sc.growth_factor, sc.backoff_factor, sc.growth_interval, 0};
  executor.write_state("amp", &state, sizeof state);

  AmpRun run;
  run.slots = o.max_in_flight;
  run.losses.reserve(static_cast<std::size_t>(o.steps));
  std::vector<float> x(static_cast<std::size_t>(shape.batch) * static_cast<std::size_t>(shape.inputs));
  std::vector<float> y(static_cast<std::size_t>(shape.batch));
  const rt::SyncCounts at_start = backend.sync_counts();
  rt::SyncCounts window_start = at_start;
  const int first_replayed = o.warmup + 1;  // step `warmup` captures
  for (int step = 0; step < o.steps; ++step) {
    mlp_make_batch(shape, o.seed, step, x, y);
    if (std::find(options.overflow_steps.begin(), options.overflow_steps.end(), step) != options.overflow_steps.end())
      x[0] = kOverflowInput;
    executor.set_learning_rate(mlp_learning_rate(o.learning_rate, step, o.steps));
    if (step == first_replayed) window_start = backend.sync_counts();

    rt::InputSlot slot = executor.acquire_inputs();
    std::memcpy(slot.input("x").host_data(), x.data(), x.size() * sizeof(float));
    std::memcpy(slot.input("y").host_data(), y.data(), y.size() * sizeof(float));
    rt::ReplayHandle hd = executor.replay(std::move(slot));
    const rt::ReplayStatus status = hd.wait();  // the executor's per-step completion
    if (status != rt::ReplayStatus::kDone) {
      const auto err = hd.error();
      throw Error(fmt::format("demo --amp: {} step {} ended {}: {}",
                              mode == rt::ExecutionMode::kEager ? "eager" : "replay", step, rt::to_string(status),
                              err ? err->message : std::string("no error reported")));
    }
    run.losses.push_back(hd.output_span<const float>("loss")[0]);
    AmpState after{};
    std::memcpy(&after, hd.output("scaler").host_data(), sizeof after);
    run.scaler.push_back(ScalerStep{after.scale, after.growth_tracker, after.found_inf != 0, after.skipped_steps});
    hd.release();
  }
  const rt::SyncCounts at_end = backend.sync_counts();
  if (o.steps > first_replayed) {
    run.replay_waits = minus(at_end, window_start);
    run.replayed_steps = o.steps - first_replayed;
  }
  run.events_waited_on = at_end.events_waited_on - at_start.events_waited_on;
  executor.synchronize();
  run.params.resize(shape.param_count());
  executor.read_state("params", run.params.data(), run.params.size() * sizeof(float));
  if (mode == rt::ExecutionMode::kGraph) run.graph_nodes = executor.graph_info().nodes.size();
  executor.close();
  return run;
}

AmpReport run_amp_demo(const AmpDemoOptions& options) {
  AmpDemoOptions o = options;
  if (!o.base.backend_instance) o.base.backend_instance = rt::Backend::create(o.base.backend);
  const auto& backend = *o.base.backend_instance;
  AmpReport r;
  r.backend = std::string(backend.name());
  r.steps = o.base.steps;
  STEPGRAPH_INFO(kTools, "demo --amp: eager run of {} steps on {}", o.base.steps, r.backend);
  const AmpRun eager = train_mlp_amp(o, rt::ExecutionMode::kEager);
  STEPGRAPH_INFO(kTools, "demo --amp: replay run: {} warm-up(s), capture, {} replay(s)", o.base.warmup,
                 o.base.steps - o.base.warmup);
  const AmpRun replay = train_mlp_amp(o, rt::ExecutionMode::kGraph);
  r.max_abs_param_diff = max_abs_diff(eager.params, replay.params);
  bool same = eager.scaler.size() == replay.scaler.size() && eager.losses.size() == replay.losses.size();
  for (std::size_t i = 0; same && i < eager.scaler.size(); ++i) {
    const auto& a = eager.scaler[i];
    const auto& b = replay.scaler[i];
    same = std::memcmp(&a.scale, &b.scale, sizeof(float)) == 0 && a.growth_tracker == b.growth_tracker &&
           a.found_inf == b.found_inf && a.skipped_steps == b.skipped_steps &&
           std::memcmp(&eager.losses[i], &replay.losses[i], sizeof(float)) == 0;
  }
  r.scaler_identical = same;
  r.skipped_steps = replay.scaler.empty() ? 0 : replay.scaler.back().skipped_steps;
  r.final_scale = replay.scaler.empty() ? 0.0f : replay.scaler.back().scale;
  r.graph_nodes = replay.graph_nodes;
  r.replay_waits = replay.replay_waits;
  r.events_waited_on = replay.events_waited_on;
  r.replayed_steps = replay.replayed_steps;
  r.slots = replay.slots;
  r.first_loss = replay.losses.front();
  r.last_loss = replay.losses.back();
  return r;
}

}  // namespace stepgraph::demo
