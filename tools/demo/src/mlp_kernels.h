// tools/demo/src/mlp_kernels.h — the demo MLP's kernels, declared once for
// the host implementation (mlp_kernels.cpp) and the device one
// (mlp_kernels.cu).
//
// This header is plain C++17 with no stepgraph include, because the .cu is
// compiled as C++17 (CMake 3.25 does not know nvcc 13 accepts C++20) and the
// runtime headers are C++20. mlp.cpp wraps each pair into an
// rt::Kernel<Args...> with exactly these parameter types: the cuda backend
// passes the arguments as pointers to values of those types
// (cudaLaunchKernelExC, CUDA Runtime API "Execution Control").
//
// Note [Deterministic MLP kernels]
// Eager and replayed training must end with bit-identical parameters, so
// every output element is computed by exactly one thread, summing in index
// order from a fixed start value: no atomics, no tree reductions, no
// dependence on the launch dimensions. The device versions use the _rn
// intrinsics so that nvcc cannot contract a multiply and an add into an FMA
// (it does by default, --fmad=true); the host versions are built with
// -ffp-contract=off for the same reason. Host and device then compute the
// same IEEE operations in the same order.
//
// Parameter layout (one buffer, gradients in the same layout):
//   [ W1: hidden x inputs (row j = hidden unit j) | b1: hidden | W2: hidden | b2: 1 ]
#pragma once

#include <cstddef>
#include <cstdint>

// The layout helpers run on both sides; nvcc needs them marked.
#ifdef __CUDACC__
#define STEPGRAPH_DEMO_HD __host__ __device__
#else
#define STEPGRAPH_DEMO_HD
#endif

namespace stepgraph::demo::kernels {

/// The sizes every kernel needs, passed by value.
struct MlpDims {
  std::int32_t batch;
  std::int32_t inputs;
  std::int32_t hidden;
};

STEPGRAPH_DEMO_HD inline std::size_t w1_offset(const MlpDims&) {
  return 0;
}
STEPGRAPH_DEMO_HD inline std::size_t b1_offset(const MlpDims& d) {
  return static_cast<std::size_t>(d.hidden) * d.inputs;
}
STEPGRAPH_DEMO_HD inline std::size_t w2_offset(const MlpDims& d) {
  return b1_offset(d) + static_cast<std::size_t>(d.hidden);
}
STEPGRAPH_DEMO_HD inline std::size_t b2_offset(const MlpDims& d) {
  return w2_offset(d) + static_cast<std::size_t>(d.hidden);
}
STEPGRAPH_DEMO_HD inline std::size_t param_count(const MlpDims& d) {
  return b2_offset(d) + 1;
}

// act[b,j] = relu(b1[j] + sum_k x[b,k] * W1[j,k])          one thread per (b, j)
void forward_hidden_host(const float* x, const float* params, float* act, MlpDims d);
// out[b] = b2 + sum_j act[b,j] * W2[j];
// dout[b] = (2 * (out[b] - y[b])) / batch                    one thread per b
void forward_output_host(const float* act, const float* params, const float* y, float* out, float* dout, MlpDims d);
// loss[0] = (sum_b (out[b] - y[b])^2) / batch                one thread
void mse_loss_host(const float* out, const float* y, float* loss, MlpDims d);
// dW2[j] = sum_b dout[b] * act[b,j]; db2 = sum_b dout[b]    one thread per j (and one for b2)
void grad_output_host(const float* act, const float* dout, float* grads, MlpDims d);
// dact[b,j] = act[b,j] > 0 ? dout[b] * W2[j] : 0            one thread per (b, j)
void backward_hidden_host(const float* act, const float* dout, const float* params, float* dact, MlpDims d);
// dW1[j,k] = sum_b dact[b,j] * x[b,k]; db1[j] = sum_b dact[b,j]
void grad_hidden_host(const float* x, const float* dact, float* grads, MlpDims d);
// params[i] = params[i] - (*learning_rate) * grads[i]. The learning rate is
// read from the executor's device-visible StepScalars at run time, never
// baked into the graph (executor.h, Note [Host code runs at warm-up and
// capture only]).
void sgd_update_host(float* params, const float* grads, std::size_t n, const float* learning_rate);

// The __global__ twins' addresses; null in a build without CUDA.
const void* forward_hidden_device();
const void* forward_output_device();
const void* mse_loss_device();
const void* grad_output_device();
const void* backward_hidden_device();
const void* grad_hidden_device();
const void* sgd_update_device();

}  // namespace stepgraph::demo::kernels
