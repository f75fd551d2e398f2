// Host implementations of the AMP demo's kernels (amp_kernels.h; device
// twins in amp_kernels.cu): _Float16 for binary16 storage, float32
// arithmetic, sums in index order (Note [AMP step arithmetic]). Built with
// -ffp-contract=off like mlp_kernels.cpp.
#include "amp_kernels.h"

#include <cmath>
#include <cstring>

namespace stepgraph::demo::kernels {
namespace {

// Only conversions are used (arithmetic is float32), so clang 14 — the
// fuzz build's compiler, which has no _Float16 on x86 — gets __fp16, its
// storage-only binary16 with the same round-to-nearest-even conversions.
#if defined(__FLT16_MAX__)
using Half = _Float16;  // GCC; clang >= 15
#else
using Half = __fp16;
#endif
static_assert(sizeof(Half) == sizeof(F16));

// memcpy, not std::bit_cast: __fp16 cannot be a function's return type.
float load(F16 v) {
  Half x;
  std::memcpy(&x, &v.bits, sizeof x);
  return static_cast<float>(x);
}
F16 store(float v) {
  const Half x = static_cast<Half>(v);  // round to nearest even
  F16 out{};
  std::memcpy(&out.bits, &x, sizeof x);
  return out;
}
float h(float v) {
  return static_cast<float>(static_cast<Half>(v));
}

}  // namespace

void amp_forward_hidden_host(const float* x, const float* params, F16* act, MlpDims d) {
  const float* w1 = params + w1_offset(d);
  const float* b1 = params + b1_offset(d);
  for (std::int32_t b = 0; b < d.batch; ++b) {
    for (std::int32_t j = 0; j < d.hidden; ++j) {
      float acc = h(b1[j]);
      for (std::int32_t k = 0; k < d.inputs; ++k) {
        const float p = h(x[b * d.inputs + k]) * h(w1[j * d.inputs + k]);
        acc = acc + p;
      }
      act[b * d.hidden + j] = store(acc > 0.0f ? acc : 0.0f);
    }
  }
}

void amp_forward_output_host(const F16* act, const float* params, const float* y, const AmpState* amp, F16* out,
                             F16* dout, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const float b2 = h(params[b2_offset(d)]);
  const float scale = amp->scale;
  const auto batch = static_cast<float>(d.batch);
  for (std::int32_t b = 0; b < d.batch; ++b) {
    float acc = b2;
    for (std::int32_t j = 0; j < d.hidden; ++j) {
      const float p = load(act[b * d.hidden + j]) * h(w2[j]);
      acc = acc + p;
    }
    const F16 o = store(acc);
    out[b] = o;
    const float diff = load(o) - y[b];
    const float g = (2.0f * diff) / batch;
    dout[b] = store(g * scale);
  }
}

void amp_mse_loss_host(const F16* out, const float* y, float* loss, MlpDims d) {
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) {
    const float diff = load(out[b]) - y[b];
    const float sq = diff * diff;
    acc = acc + sq;
  }
  *loss = acc / static_cast<float>(d.batch);
}

void amp_grad_output_host(const F16* act, const F16* dout, F16* grads, MlpDims d) {
  for (std::int32_t j = 0; j < d.hidden; ++j) {
    float acc = 0.0f;
    for (std::int32_t b = 0; b < d.batch; ++b) {
      const float p = load(dout[b]) * load(act[b * d.hidden + j]);
      acc = acc + p;
    }
    grads[w2_offset(d) + static_cast<std::size_t>(j)] = store(acc);
  }
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) acc = acc + load(dout[b]);
  grads[b2_offset(d)] = store(acc);
}

void amp_backward_hidden_host(const F16* act, const F16* dout, const float* params, F16* dact, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  for (std::int32_t b = 0; b < d.batch; ++b)
    for (std::int32_t j = 0; j < d.hidden; ++j)
      dact[b * d.hidden + j] = load(act[b * d.hidden + j]) > 0.0f ? store(load(dout[b]) * h(w2[j])) : store(0.0f);
}

void amp_grad_hidden_host(const float* x, const F16* dact, F16* grads, MlpDims d) {
  for (std::int32_t j = 0; j < d.hidden; ++j) {
    for (std::int32_t k = 0; k < d.inputs; ++k) {
      float acc = 0.0f;
      for (std::int32_t b = 0; b < d.batch; ++b) {
        const float p = load(dact[b * d.hidden + j]) * h(x[b * d.inputs + k]);
        acc = acc + p;
      }
      grads[w1_offset(d) + static_cast<std::size_t>(j) * d.inputs + k] = store(acc);
    }
    float acc = 0.0f;
    for (std::int32_t b = 0; b < d.batch; ++b) acc = acc + load(dact[b * d.hidden + j]);
    grads[b1_offset(d) + static_cast<std::size_t>(j)] = store(acc);
  }
}

void amp_unscale_check_host(const F16* grads, float* grads32, std::size_t n, AmpState* amp) {
  const float inv = 1.0f / amp->scale;
  for (std::size_t i = 0; i < n; ++i) {
    const float g = load(grads[i]);
    if (!std::isfinite(g)) amp->found_inf = 1;
    grads32[i] = g * inv;
  }
}

void amp_decide_step_host(const AmpState* amp, stepgraph::runtime::ConditionHandle condition) {
  stepgraph::runtime::set_condition(condition, amp->found_inf == 0 ? 1u : 0u);
}

void amp_update_scale_host(AmpState* amp, AmpState* report) {
  amp->steps += 1;
  if (amp->found_inf != 0) {
    amp->scale = amp->scale * amp->backoff_factor;
    amp->growth_tracker = 0;
    amp->skipped_steps += 1;
  } else {
    const std::int32_t successful = amp->growth_tracker + 1;
    if (successful == amp->growth_interval) {
      const float grown = amp->scale * amp->growth_factor;
      if (std::isfinite(grown)) amp->scale = grown;
      amp->growth_tracker = 0;
    } else {
      amp->growth_tracker = successful;
    }
  }
  *report = *amp;
}

#ifndef STEPGRAPH_DEMO_DEVICE_KERNELS
const void* amp_forward_hidden_device() {
  return nullptr;
}
const void* amp_forward_output_device() {
  return nullptr;
}
const void* amp_mse_loss_device() {
  return nullptr;
}
const void* amp_grad_output_device() {
  return nullptr;
}
const void* amp_backward_hidden_device() {
  return nullptr;
}
const void* amp_grad_hidden_device() {
  return nullptr;
}
const void* amp_unscale_check_device() {
  return nullptr;
}
const void* amp_decide_step_device() {
  return nullptr;
}
const void* amp_update_scale_device() {
  return nullptr;
}
#endif

}  // namespace stepgraph::demo::kernels
