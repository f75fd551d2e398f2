// Device implementations of the AMP demo's kernels (amp_kernels.h; host
// twins in amp_kernels.cpp): __half storage, float32 arithmetic with the _rn
// intrinsics only, one thread per output element, sums in index order
// (Note [AMP step arithmetic]), so that they compute what the host versions
// compute. The scaler kernels act in global thread 0 only: the condition
// must be set by one thread (cudaGraphSetConditional), and the state is one
// struct. Compiled as C++17.
#include <cuda_fp16.h>

#include <stepgraph/runtime/condition_device.h>

#include "amp_kernels.h"

namespace stepgraph::demo::kernels {
namespace {

__device__ std::size_t first_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ std::size_t grid_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}
__device__ float load(F16 v) {
  return __half2float(__ushort_as_half(v.bits));
}
__device__ F16 store(float v) {
  return F16{__half_as_ushort(__float2half_rn(v))};
}
__device__ float h(float v) {
  return __half2float(__float2half_rn(v));
}

__global__ void amp_forward_hidden_kernel(const float* x, const float* params, F16* act, MlpDims d) {
  const float* w1 = params + w1_offset(d);
  const float* b1 = params + b1_offset(d);
  const std::size_t n = static_cast<std::size_t>(d.batch) * d.hidden;
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i / d.hidden);
    const auto j = static_cast<std::int32_t>(i % d.hidden);
    float acc = h(b1[j]);
    for (std::int32_t k = 0; k < d.inputs; ++k)
      acc = __fadd_rn(acc, __fmul_rn(h(x[b * d.inputs + k]), h(w1[j * d.inputs + k])));
    act[i] = store(acc > 0.0f ? acc : 0.0f);
  }
}

__global__ void amp_forward_output_kernel(const F16* act, const float* params, const float* y, const AmpState* amp,
                                          F16* out, F16* dout, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const float b2 = h(params[b2_offset(d)]);
  const float scale = amp->scale;
  const auto batch = static_cast<float>(d.batch);
  for (std::size_t i = first_index(); i < static_cast<std::size_t>(d.batch); i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i);
    float acc = b2;
    for (std::int32_t j = 0; j < d.hidden; ++j) acc = __fadd_rn(acc, __fmul_rn(load(act[b * d.hidden + j]), h(w2[j])));
    const F16 o = store(acc);
    out[b] = o;
    const float diff = __fsub_rn(load(o), y[b]);
    const float g = __fdiv_rn(__fmul_rn(2.0f, diff), batch);
    dout[b] = store(__fmul_rn(g, scale));
  }
}

__global__ void amp_mse_loss_kernel(const F16* out, const float* y, float* loss, MlpDims d) {
  if (first_index() != 0) return;
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) {
    const float diff = __fsub_rn(load(out[b]), y[b]);
    acc = __fadd_rn(acc, __fmul_rn(diff, diff));
  }
  *loss = __fdiv_rn(acc, static_cast<float>(d.batch));
  __threadfence_system();  // the loss is pinned host memory the host reads after the step
}

__global__ void amp_grad_output_kernel(const F16* act, const F16* dout, F16* grads, MlpDims d) {
  const std::size_t n = static_cast<std::size_t>(d.hidden) + 1;  // gW2[j] for each j, then gb2
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    float acc = 0.0f;
    if (i < static_cast<std::size_t>(d.hidden)) {
      const auto j = static_cast<std::int32_t>(i);
      for (std::int32_t b = 0; b < d.batch; ++b)
        acc = __fadd_rn(acc, __fmul_rn(load(dout[b]), load(act[b * d.hidden + j])));
      grads[w2_offset(d) + i] = store(acc);
    } else {
      for (std::int32_t b = 0; b < d.batch; ++b) acc = __fadd_rn(acc, load(dout[b]));
      grads[b2_offset(d)] = store(acc);
    }
  }
}

__global__ void amp_backward_hidden_kernel(const F16* act, const F16* dout, const float* params, F16* dact, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const std::size_t n = static_cast<std::size_t>(d.batch) * d.hidden;
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i / d.hidden);
    const auto j = static_cast<std::int32_t>(i % d.hidden);
    dact[i] = load(act[i]) > 0.0f ? store(__fmul_rn(load(dout[b]), h(w2[j]))) : store(0.0f);
  }
}

__global__ void amp_grad_hidden_kernel(const float* x, const F16* dact, F16* grads, MlpDims d) {
  // gW1[j,k] for every (j, k), then gb1[j] for every j.
  const std::size_t nw = static_cast<std::size_t>(d.hidden) * d.inputs;
  const std::size_t n = nw + static_cast<std::size_t>(d.hidden);
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    float acc = 0.0f;
    if (i < nw) {
      const auto j = static_cast<std::int32_t>(i / d.inputs);
      const auto k = static_cast<std::int32_t>(i % d.inputs);
      for (std::int32_t b = 0; b < d.batch; ++b)
        acc = __fadd_rn(acc, __fmul_rn(load(dact[b * d.hidden + j]), h(x[b * d.inputs + k])));
      grads[w1_offset(d) + i] = store(acc);
    } else {
      const auto j = static_cast<std::int32_t>(i - nw);
      for (std::int32_t b = 0; b < d.batch; ++b) acc = __fadd_rn(acc, load(dact[b * d.hidden + j]));
      grads[b1_offset(d) + static_cast<std::size_t>(j)] = store(acc);
    }
  }
}

__global__ void amp_unscale_check_kernel(const F16* grads, float* grads32, std::size_t n, AmpState* amp) {
  const float inv = __fdiv_rn(1.0f, amp->scale);
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const float g = load(grads[i]);
    // Every thread that sees a non-finite value writes the same 1 (the
    // memset node before this kernel wrote 0): no ordering is needed.
    if (!isfinite(g)) amp->found_inf = 1;
    grads32[i] = __fmul_rn(g, inv);
  }
}

__global__ void amp_decide_step_kernel(const AmpState* amp, stepgraph::runtime::ConditionHandle condition) {
  if (first_index() != 0) return;
  stepgraph::runtime::device_set_condition(condition, amp->found_inf == 0 ? 1u : 0u);
}

__global__ void amp_update_scale_kernel(AmpState* amp, AmpState* report) {
  if (first_index() != 0) return;
  amp->steps += 1;
  if (amp->found_inf != 0) {
    amp->scale = __fmul_rn(amp->scale, amp->backoff_factor);
    amp->growth_tracker = 0;
    amp->skipped_steps += 1;
  } else {
    const std::int32_t successful = amp->growth_tracker + 1;
    if (successful == amp->growth_interval) {
      const float grown = __fmul_rn(amp->scale, amp->growth_factor);
      if (isfinite(grown)) amp->scale = grown;
      amp->growth_tracker = 0;
    } else {
      amp->growth_tracker = successful;
    }
  }
  *report = *amp;
  __threadfence_system();  // `report` is pinned host memory the host reads after the step
}

}  // namespace

const void* amp_forward_hidden_device() {
  return reinterpret_cast<const void*>(&amp_forward_hidden_kernel);
}
const void* amp_forward_output_device() {
  return reinterpret_cast<const void*>(&amp_forward_output_kernel);
}
const void* amp_mse_loss_device() {
  return reinterpret_cast<const void*>(&amp_mse_loss_kernel);
}
const void* amp_grad_output_device() {
  return reinterpret_cast<const void*>(&amp_grad_output_kernel);
}
const void* amp_backward_hidden_device() {
  return reinterpret_cast<const void*>(&amp_backward_hidden_kernel);
}
const void* amp_grad_hidden_device() {
  return reinterpret_cast<const void*>(&amp_grad_hidden_kernel);
}
const void* amp_unscale_check_device() {
  return reinterpret_cast<const void*>(&amp_unscale_check_kernel);
}
const void* amp_decide_step_device() {
  return reinterpret_cast<const void*>(&amp_decide_step_kernel);
}
const void* amp_update_scale_device() {
  return reinterpret_cast<const void*>(&amp_update_scale_kernel);
}

}  // namespace stepgraph::demo::kernels
