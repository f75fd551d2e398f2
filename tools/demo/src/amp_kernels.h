// tools/demo/src/amp_kernels.h — the mixed-precision (AMP) demo step's
// kernels and the in-graph GradScaler's (docs/amp.md), declared once for the
// host implementation (amp_kernels.cpp, GCC's _Float16) and the device one
// (amp_kernels.cu, __half). Plain C++17, no stepgraph include, like
// mlp_kernels.h.
//
// Note [AMP step arithmetic]
// Storage: activations (act, out), their gradients (dout, dact) and the
// parameter gradients are IEEE binary16 (F16); master weights, the unscaled
// gradients the optimizer reads, the loss and every sum are float32. H(v)
// below is "round v to binary16 (nearest even) and back". Each output
// element is computed by one thread, summing in index order from a fixed
// start (Note [Deterministic MLP kernels]): host and device compute the same
// IEEE operations, and the products of two binary16 values are exact in
// float32, so eager and replayed runs are bit-identical.
//   act[b,j]  = H(relu(H(b1[j]) + sum_k H(x[b,k]) * H(W1[j,k])))
//   out[b]    = H(H(b2) + sum_j act[b,j] * H(W2[j]))
//   loss      = (sum_b (out[b] - y[b])^2) / batch               (float32, unscaled)
//   dout[b]   = H(((2 * (out[b] - y[b])) / batch) * scale)      (the scaled loss's gradient)
//   gW2[j]    = H(sum_b dout[b] * act[b,j]);  gb2 = H(sum_b dout[b])
//   dact[b,j] = act[b,j] > 0 ? H(dout[b] * H(W2[j])) : 0
//   gW1[j,k]  = H(sum_b dact[b,j] * H(x[b,k]));  gb1[j] = H(sum_b dact[b,j])
//   grads[i]  = float(g[i]) * (1 / scale);  found_inf = any g[i] not finite
// then the optimizer (SGD, mlp_kernels.h) runs inside an IF node only when
// found_inf is 0, and the scale is updated by PyTorch's GradScaler rules
// (amp_update_scale).
#pragma once

#include <cstddef>
#include <cstdint>

#include <stepgraph/runtime/condition.h>

#include "mlp_kernels.h"

namespace stepgraph::demo::kernels {

/// IEEE binary16 storage (host: _Float16, device: __half; both 2 bytes).
struct F16 {
  std::uint16_t bits;
};

/// The GradScaler's device state (one state buffer, read and written only
/// by the step's kernels) and its configuration (written once by the host
/// before the first step; device-visible, so a change needs no recapture).
/// Also the layout of the step's pinned "scaler" output, a copy the update
/// kernel writes for the host to read after the step.
struct AmpState {
  float scale;                   // the current loss scale
  std::int32_t growth_tracker;   // consecutive steps without overflow since the last change
  std::int32_t found_inf;        // this step's gradients held an inf or NaN
  std::int32_t skipped_steps;    // optimizer steps skipped so far
  float growth_factor;           // PyTorch default 2.0
  float backoff_factor;          // PyTorch default 0.5
  std::int32_t growth_interval;  // PyTorch default 2000
  std::int32_t steps;            // steps taken so far
};

void amp_forward_hidden_host(const float* x, const float* params, F16* act, MlpDims d);
void amp_forward_output_host(const F16* act, const float* params, const float* y, const AmpState* amp, F16* out,
                             F16* dout, MlpDims d);
void amp_mse_loss_host(const F16* out, const float* y, float* loss, MlpDims d);
void amp_grad_output_host(const F16* act, const F16* dout, F16* grads, MlpDims d);
void amp_backward_hidden_host(const F16* act, const F16* dout, const float* params, F16* dact, MlpDims d);
void amp_grad_hidden_host(const float* x, const F16* dact, F16* grads, MlpDims d);
// grads32[i] = float(grads[i]) / scale; amp->found_inf = 1 if any grads[i]
// is not finite (found_inf is zeroed by a memset node before).
void amp_unscale_check_host(const F16* grads, float* grads32, std::size_t n, AmpState* amp);
// condition = (amp->found_inf == 0): the IF node around the optimizer.
void amp_decide_step_host(const AmpState* amp, stepgraph::runtime::ConditionHandle condition);
// PyTorch's _amp_update_scale_: on overflow scale *= backoff and the
// tracker resets; else the tracker counts, and at growth_interval the scale
// grows (if the grown scale is finite) and the tracker resets. Then copies
// the state to `report` (pinned) for the host to read after the step.
void amp_update_scale_host(AmpState* amp, AmpState* report);

const void* amp_forward_hidden_device();
const void* amp_forward_output_device();
const void* amp_mse_loss_device();
const void* amp_grad_output_device();
const void* amp_backward_hidden_device();
const void* amp_grad_hidden_device();
const void* amp_unscale_check_device();
const void* amp_decide_step_device();
const void* amp_update_scale_device();

}  // namespace stepgraph::demo::kernels
