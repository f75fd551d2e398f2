// stepgraph/demo/amp.h — the demo MLP in mixed precision with a GradScaler
// inside the captured step (docs/amp.md): binary16 storage for activations
// and gradients, float32 master weights, dynamic loss scaling decided on the
// device, the optimizer step in an IF node that runs only when no gradient
// overflowed. No host synchronisation per step: the host never reads the
// overflow flag or the scale to decide anything.
//
// Used by `stepgraph demo --amp` and tests/demo/amp_test.cpp.
// Thread-safety: the functions are reentrant; each call owns its executors.
// Capture: enqueue_amp_step may be called during stream capture (it only
// launches; on a stream that is not capturing it runs its conditional part
// through run_as_graph); the others may not.
#pragma once

#include <cstdint>
#include <vector>

#include <stepgraph/demo/mlp.h>

namespace stepgraph::demo {

/// PyTorch's GradScaler defaults (torch.amp.GradScaler: init_scale 2**16,
/// growth_factor 2.0, backoff_factor 0.5, growth_interval 2000).
struct GradScalerOptions {
  float init_scale = 65536.0f;
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  int growth_interval = 2000;
};

/// What the scaler's device state held after one step (read from the
/// step's pinned "scaler" output after the step finished).
struct ScalerStep {
  float scale = 0;  // after the update
  std::int32_t growth_tracker = 0;
  bool found_inf = false;  // this step's gradients overflowed: its optimizer step was skipped
  std::int32_t skipped_steps = 0;
};

/// The buffers of one AMP step (non-owning; as MlpStepBuffers).
struct AmpStepBuffers {
  const rt::Buffer* x = nullptr;        // batch x inputs float32, read
  const rt::Buffer* y = nullptr;        // batch float32, read
  const rt::Buffer* loss = nullptr;     // 1 float32, written (unscaled)
  const rt::Buffer* scaler = nullptr;   // pinned output: the scaler state after the step
  const rt::Buffer* params = nullptr;   // float32 master weights, read and updated
  const rt::Buffer* amp = nullptr;      // the scaler's device state and configuration
  const rt::Buffer* grads = nullptr;    // float32 unscaled gradients, scratch
  const rt::Buffer* grads_h = nullptr;  // binary16 gradients, scratch
  const rt::Buffer* act = nullptr;      // binary16 batch x hidden, scratch
  const rt::Buffer* dact = nullptr;     // binary16 batch x hidden, scratch
  const rt::Buffer* out = nullptr;      // binary16 batch, scratch
  const rt::Buffer* dout = nullptr;     // binary16 batch, scratch
  const rt::Buffer* scalars = nullptr;  // rt::StepScalars (the learning rate)
};

/// Enqueues one AMP training step: forward and backward (six kernels), the
/// found_inf memset, the unscale-and-check kernel, the kernel that sets the
/// IF node's condition, the IF node holding the SGD update, and the scale
/// update. During capture these are graph nodes; eagerly, the condition,
/// the IF node and its body run as a graph of their own (run_as_graph).
void enqueue_amp_step(rt::StreamRef stream, const MlpShape& shape, const AmpStepBuffers& buffers);

[[nodiscard]] rt::StepSpec amp_step_spec(const MlpShape& shape);
[[nodiscard]] rt::StepFunction amp_step_function(const MlpShape& shape);
[[nodiscard]] AmpStepBuffers amp_step_buffers(const rt::StepContext& ctx);

struct AmpDemoOptions {
  DemoOptions base;
  GradScalerOptions scaler;
  /// Steps whose batch gets one huge input (1e6, beyond binary16's 65504):
  /// their gradients overflow, so their optimizer step must be skipped.
  std::vector<int> overflow_steps;
};

struct AmpRun {
  std::vector<float> params;  // after the last step
  std::vector<float> losses;  // per step (unscaled; inf or NaN on an overflowing step)
  std::vector<ScalerStep> scaler;
  std::size_t graph_nodes = 0;  // top-level nodes of the captured step (graph mode)
  /// The host waits made during the replayed steps (after the capture
  /// step, to the last step's end): docs/amp.md, "Counting host
  /// synchronisations".
  rt::SyncCounts replay_waits;
  /// Distinct events the host waited on or polled during the whole run,
  /// warm-up included: at most one per slot (the executor's completion
  /// events) when the step itself needs no host wait.
  std::uint64_t events_waited_on = 0;
  int replayed_steps = 0;
  int slots = 0;  // the executor's slots, each with one completion event
};

/// Trains with the AMP step in `mode` (as train_mlp).
[[nodiscard]] AmpRun train_mlp_amp(const AmpDemoOptions& options, rt::ExecutionMode mode);

struct AmpReport {
  std::string backend;
  int steps = 0;
  int skipped_steps = 0;
  float final_scale = 0;
  double max_abs_param_diff = 0;  // eager vs replay: must be exactly 0
  bool scaler_identical = false;  // eager and replay scaler states equal at every step
  std::size_t graph_nodes = 0;
  rt::SyncCounts replay_waits;         // the replay run's (AmpRun::replay_waits)
  std::uint64_t events_waited_on = 0;  // the replay run's (AmpRun::events_waited_on)
  int replayed_steps = 0;
  int slots = 0;
  float first_loss = 0, last_loss = 0;
  /// Eager and replay equal bit for bit, and no host wait but the
  /// executor's own completion waits during the replayed steps.
  [[nodiscard]] bool ok() const {
    return max_abs_param_diff == 0.0 && scaler_identical && replay_waits.stream_synchronize == 0 &&
           replay_waits.device_synchronize == 0 && events_waited_on <= static_cast<std::uint64_t>(slots);
  }
};

[[nodiscard]] AmpReport run_amp_demo(const AmpDemoOptions& options);

}  // namespace stepgraph::demo
