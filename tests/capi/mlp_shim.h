/* tests/capi/mlp_shim.h — C-callable access to the C++ demo (stepgraph::demo)
 * for the pure-C test: the demo's data, its reference training run, and its
 * host kernels wrapped in the C kernel form (stepgraph/c/stepgraph.h, Note [C
 * kernels]). The reference is computed by the C++ demo code, never by C. */
#ifndef STEPGRAPH_TESTS_CAPI_MLP_SHIM_H
#define STEPGRAPH_TESTS_CAPI_MLP_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include <stepgraph/c/stepgraph.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sgt_mlp_dims {
  int32_t batch;
  int32_t inputs;
  int32_t hidden;
} sgt_mlp_dims;

size_t sgt_mlp_param_count(const sgt_mlp_dims* d);
size_t sgt_mlp_w2_offset(const sgt_mlp_dims* d);
size_t sgt_mlp_b1_offset(const sgt_mlp_dims* d);
/* Each returns 0, or -1 after printing the C++ exception to stderr. */
int sgt_mlp_init_params(const sgt_mlp_dims* d, uint64_t seed, float* params);
int sgt_mlp_make_batch(const sgt_mlp_dims* d, uint64_t seed, int64_t step, float* x, float* y);
float sgt_mlp_learning_rate(float base, int64_t step, int steps);
/* stepgraph::demo::train_mlp on the host backend, graph mode: the C++
 * demo's parameters (param_count floats) and losses (steps floats). */
int sgt_mlp_reference(const sgt_mlp_dims* d, int steps, int warmup, uint64_t seed, float learning_rate, float* params,
                      float* losses);

/* The demo's host kernels (tools/demo/src/mlp_kernels.h) as C kernels;
 * user_data is a const sgt_mlp_dims*. args follow the demo's access lists. */
int sgt_forward_hidden(void* const* args, size_t nargs, void* user_data);
int sgt_forward_output(void* const* args, size_t nargs, void* user_data);
int sgt_mse_loss(void* const* args, size_t nargs, void* user_data);
int sgt_grad_output(void* const* args, size_t nargs, void* user_data);
int sgt_backward_hidden(void* const* args, size_t nargs, void* user_data);
int sgt_grad_hidden(void* const* args, size_t nargs, void* user_data);
/* args: params (read-write), grads, the executor's scalars (learning rate). */
int sgt_sgd_update(void* const* args, size_t nargs, void* user_data);

/* mlp_step.c (C11, through the C ABI). Registers the kernels above under
 * "mlp.<name>" with user_data `d` (which must outlive the executors); a
 * second registration is SG_INVALID_ARGUMENT. */
sg_status sgt_mlp_register_kernels(const sgt_mlp_dims* d);
/* One declared access (an sg_access by value). */
sg_access sgt_acc(const char* buffer, size_t offset, size_t bytes, sg_access_mode mode);
sg_status sgt_mlp_unregister_kernels(void);
/* The demo's step (buffers x, y, loss, params, grads, act, dact, out, dout;
 * seven launches). The caller owns *out. */
sg_status sgt_mlp_step_desc(const sgt_mlp_dims* d, sg_step_desc** out);

#ifdef __cplusplus
}
#endif

#endif
