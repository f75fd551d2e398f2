// Host implementations of the demo MLP's kernels (mlp_kernels.h). Each loop
// body is what one device thread computes in mlp_kernels.cu, in the same
// order (Note [Deterministic MLP kernels]).
#include "mlp_kernels.h"

namespace stepgraph::demo::kernels {

void forward_hidden_host(const float* x, const float* params, float* act, MlpDims d) {
  const float* w1 = params + w1_offset(d);
  const float* b1 = params + b1_offset(d);
  for (std::int32_t b = 0; b < d.batch; ++b) {
    for (std::int32_t j = 0; j < d.hidden; ++j) {
      float acc = b1[j];
      for (std::int32_t k = 0; k < d.inputs; ++k) {
        const float p = x[b * d.inputs + k] * w1[j * d.inputs + k];
        acc = acc + p;
      }
      act[b * d.hidden + j] = acc > 0.0f ? acc : 0.0f;
    }
  }
}

void forward_output_host(const float* act, const float* params, const float* y, float* out, float* dout, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  const float b2 = params[b2_offset(d)];
  const auto batch = static_cast<float>(d.batch);
  for (std::int32_t b = 0; b < d.batch; ++b) {
    float acc = b2;
    for (std::int32_t j = 0; j < d.hidden; ++j) {
      const float p = act[b * d.hidden + j] * w2[j];
      acc = acc + p;
    }
    out[b] = acc;
    const float diff = acc - y[b];
    const float twice = 2.0f * diff;
    dout[b] = twice / batch;
  }
}

void mse_loss_host(const float* out, const float* y, float* loss, MlpDims d) {
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) {
    const float diff = out[b] - y[b];
    const float sq = diff * diff;
    acc = acc + sq;
  }
  *loss = acc / static_cast<float>(d.batch);
}

void grad_output_host(const float* act, const float* dout, float* grads, MlpDims d) {
  float* dw2 = grads + w2_offset(d);
  for (std::int32_t j = 0; j < d.hidden; ++j) {
    float acc = 0.0f;
    for (std::int32_t b = 0; b < d.batch; ++b) {
      const float p = dout[b] * act[b * d.hidden + j];
      acc = acc + p;
    }
    dw2[j] = acc;
  }
  float acc = 0.0f;
  for (std::int32_t b = 0; b < d.batch; ++b) acc = acc + dout[b];
  grads[b2_offset(d)] = acc;
}

void backward_hidden_host(const float* act, const float* dout, const float* params, float* dact, MlpDims d) {
  const float* w2 = params + w2_offset(d);
  for (std::int32_t b = 0; b < d.batch; ++b)
    for (std::int32_t j = 0; j < d.hidden; ++j)
      dact[b * d.hidden + j] = act[b * d.hidden + j] > 0.0f ? dout[b] * w2[j] : 0.0f;
}

void grad_hidden_host(const float* x, const float* dact, float* grads, MlpDims d) {
  float* dw1 = grads + w1_offset(d);
  float* db1 = grads + b1_offset(d);
  for (std::int32_t j = 0; j < d.hidden; ++j) {
    for (std::int32_t k = 0; k < d.inputs; ++k) {
      float acc = 0.0f;
      for (std::int32_t b = 0; b < d.batch; ++b) {
        const float p = dact[b * d.hidden + j] * x[b * d.inputs + k];
        acc = acc + p;
      }
      dw1[j * d.inputs + k] = acc;
    }
    float acc = 0.0f;
    for (std::int32_t b = 0; b < d.batch; ++b) acc = acc + dact[b * d.hidden + j];
    db1[j] = acc;
  }
}

void sgd_update_host(float* params, const float* grads, std::size_t n, const float* learning_rate) {
  const float lr = *learning_rate;
  for (std::size_t i = 0; i < n; ++i) {
    const float step = lr * grads[i];
    params[i] = params[i] - step;
  }
}

#ifndef STEPGRAPH_DEMO_DEVICE_KERNELS
// A build without CUDA: no device code; the cuda backend is absent too.
const void* forward_hidden_device() {
  return nullptr;
}
const void* forward_output_device() {
  return nullptr;
}
const void* mse_loss_device() {
  return nullptr;
}
const void* grad_output_device() {
  return nullptr;
}
const void* backward_hidden_device() {
  return nullptr;
}
const void* grad_hidden_device() {
  return nullptr;
}
const void* sgd_update_device() {
  return nullptr;
}
#endif

}  // namespace stepgraph::demo::kernels
