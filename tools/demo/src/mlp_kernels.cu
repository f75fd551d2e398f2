// Device implementations of the demo MLP's kernels (mlp_kernels.h; host
// twins in mlp_kernels.cpp). One thread per output element, grid-stride
// loops (any LaunchDims work), sums in index order, and only _rn intrinsics
// for arithmetic so that nvcc does not fuse multiply-adds: the results are
// bit-identical run to run and equal the host versions'
// (Note [Deterministic MLP kernels]). Compiled as C++17.
#include "mlp_kernels.h"

namespace stepgraph::demo::kernels {
namespace {

__device__ std::size_t first_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ std::size_t grid_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}

__global__ void forward_hidden_kernel(const float* x, const float* params, float* act, MlpDims d) {
  const float* w1 = params + w1_offset(d);
  const float* b1 = params + b1_offset(d);
  const std::size_t n = static_cast<std::size_t>(d.batch) * d.hidden;
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i / d.hidden);
    const auto j = static_cast<std::int32_t>(i % d.hidden);
    float acc = b1[j];
    for (std::int32_t k = 0; k < d.inputs; ++k)
      acc = __fadd_rn(acc, __fmul_rn(x[b * d.inputs + k], w1[j * d.inputs + k]));
    act[i] = acc > 0.0f ? acc : 0.0f;
  }
}

__global__ void forward_output_kernel(const float* act, const float* params, const float* y, float* out, float* dout,
                                      MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const float b2 = params[b2_offset(d)];
  const auto batch = static_cast<float>(d.batch);
  for (std::size_t i = first_index(); i < static_cast<std::size_t>(d.batch); i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i);
    float acc = b2;
    for (std::int32_t j = 0; j < d.hidden; ++j) acc = __fadd_rn(acc, __fmul_rn(act[b * d.hidden + j], w2[j]));
    out[b] = acc;
    const float diff = __fsub_rn(acc, y[b]);
    dout[b] = __fdiv_rn(__fmul_rn(2.0f, diff), batch);
  }
}

__global__ void mse_loss_kernel(const float* out, const float* y, float* loss, MlpDims d) {
  if (first_index() != 0) return;
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) {
    const float diff = __fsub_rn(out[b], y[b]);
    acc = __fadd_rn(acc, __fmul_rn(diff, diff));
  }
  *loss = __fdiv_rn(acc, static_cast<float>(d.batch));
  __threadfence_system();  // the loss is pinned host memory the host reads after the step
}

__global__ void grad_output_kernel(const float* act, const float* dout, float* grads, MlpDims d) {
  float* dw2 = grads + w2_offset(d);
  const std::size_t n = static_cast<std::size_t>(d.hidden) + 1;  // dW2[j] for each j, then db2
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    float acc = 0.0f;
    if (i < static_cast<std::size_t>(d.hidden)) {
      const auto j = static_cast<std::int32_t>(i);
      for (std::int32_t b = 0; b < d.batch; ++b) acc = __fadd_rn(acc, __fmul_rn(dout[b], act[b * d.hidden + j]));
      dw2[j] = acc;
    } else {
      for (std::int32_t b = 0; b < d.batch; ++b) acc = __fadd_rn(acc, dout[b]);
      grads[b2_offset(d)] = acc;
    }
  }
}

__global__ void backward_hidden_kernel(const float* act, const float* dout, const float* params, float* dact,
                                       MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const std::size_t n = static_cast<std::size_t>(d.batch) * d.hidden;
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const auto b = static_cast<std::int32_t>(i / d.hidden);
    const auto j = static_cast<std::int32_t>(i % d.hidden);
    dact[i] = act[i] > 0.0f ? __fmul_rn(dout[b], w2[j]) : 0.0f;
  }
}

__global__ void grad_hidden_kernel(const float* x, const float* dact, float* grads, MlpDims d) {
  float* dw1 = grads + w1_offset(d);
  float* db1 = grads + b1_offset(d);
  // dW1[j,k] for every (j, k), then db1[j] for every j.
  const std::size_t nw = static_cast<std::size_t>(d.hidden) * d.inputs;
  const std::size_t n = nw + static_cast<std::size_t>(d.hidden);
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    float acc = 0.0f;
    if (i < nw) {
      const auto j = static_cast<std::int32_t>(i / d.inputs);
      const auto k = static_cast<std::int32_t>(i % d.inputs);
      for (std::int32_t b = 0; b < d.batch; ++b)
        acc = __fadd_rn(acc, __fmul_rn(dact[b * d.hidden + j], x[b * d.inputs + k]));
      dw1[i] = acc;
    } else {
      const auto j = static_cast<std::int32_t>(i - nw);
      for (std::int32_t b = 0; b < d.batch; ++b) acc = __fadd_rn(acc, dact[b * d.hidden + j]);
      db1[j] = acc;
    }
  }
}

__global__ void sgd_update_kernel(float* params, const float* grads, std::size_t n, const float* learning_rate) {
  const float lr = *learning_rate;
  for (std::size_t i = first_index(); i < n; i += grid_stride())
    params[i] = __fsub_rn(params[i], __fmul_rn(lr, grads[i]));
}

}  // namespace

const void* forward_hidden_device() {
  return reinterpret_cast<const void*>(&forward_hidden_kernel);
}
const void* forward_output_device() {
  return reinterpret_cast<const void*>(&forward_output_kernel);
}
const void* mse_loss_device() {
  return reinterpret_cast<const void*>(&mse_loss_kernel);
}
const void* grad_output_device() {
  return reinterpret_cast<const void*>(&grad_output_kernel);
}
const void* backward_hidden_device() {
  return reinterpret_cast<const void*>(&backward_hidden_kernel);
}
const void* grad_hidden_device() {
  return reinterpret_cast<const void*>(&grad_hidden_kernel);
}
const void* sgd_update_device() {
  return reinterpret_cast<const void*>(&sgd_update_kernel);
}

}  // namespace stepgraph::demo::kernels
