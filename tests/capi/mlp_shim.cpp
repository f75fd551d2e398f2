// The C-callable shim over the C++ demo (mlp_shim.h).
#include "mlp_shim.h"

#include <cstddef>
#include <cstdio>
#include <exception>
#include <span>

#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/step_scalars.h>

#include "mlp_kernels.h"

namespace demo = stepgraph::demo;
namespace k = stepgraph::demo::kernels;

namespace {

demo::MlpShape shape_of(const sgt_mlp_dims* d) {
  return {.batch = d->batch, .inputs = d->inputs, .hidden = d->hidden};
}
k::MlpDims dims_of(void* user_data) {
  const auto* d = static_cast<const sgt_mlp_dims*>(user_data);
  return {d->batch, d->inputs, d->hidden};
}
template <class F>
int report(F&& f) noexcept {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mlp_shim: %s\n", e.what());
    return -1;
  }
}
template <class T>
T* arg(void* const* args, std::size_t i) {
  return static_cast<T*>(args[i]);
}

}  // namespace

extern "C" {

size_t sgt_mlp_param_count(const sgt_mlp_dims* d) {
  return shape_of(d).param_count();
}
size_t sgt_mlp_w2_offset(const sgt_mlp_dims* d) {
  return shape_of(d).w2_offset();
}
size_t sgt_mlp_b1_offset(const sgt_mlp_dims* d) {
  return shape_of(d).b1_offset();
}

int sgt_mlp_init_params(const sgt_mlp_dims* d, uint64_t seed, float* params) {
  return report([&] {
    const auto p = demo::mlp_init_params(shape_of(d), seed);
    std::copy(p.begin(), p.end(), params);
  });
}

int sgt_mlp_make_batch(const sgt_mlp_dims* d, uint64_t seed, int64_t step, float* x, float* y) {
  return report([&] {
    const auto s = shape_of(d);
    const auto b = static_cast<std::size_t>(s.batch);
    demo::mlp_make_batch(s, seed, step, std::span(x, b * static_cast<std::size_t>(s.inputs)), std::span(y, b));
  });
}

float sgt_mlp_learning_rate(float base, int64_t step, int steps) {
  return demo::mlp_learning_rate(base, step, steps);
}

int sgt_mlp_reference(const sgt_mlp_dims* d, int steps, int warmup, uint64_t seed, float learning_rate, float* params,
                      float* losses) {
  return report([&] {
    demo::DemoOptions o;
    o.backend = "host";
    o.steps = steps;
    o.warmup = warmup;
    o.seed = seed;
    o.shape = shape_of(d);
    o.learning_rate = learning_rate;
    const auto run = demo::train_mlp(o, stepgraph::runtime::ExecutionMode::kGraph);
    std::copy(run.params.begin(), run.params.end(), params);
    std::copy(run.losses.begin(), run.losses.end(), losses);
  });
}

int sgt_forward_hidden(void* const* a, size_t, void* u) {
  k::forward_hidden_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<float>(a, 2), dims_of(u));
  return 0;
}
int sgt_forward_output(void* const* a, size_t, void* u) {
  k::forward_output_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<const float>(a, 2), arg<float>(a, 3),
                         arg<float>(a, 4), dims_of(u));
  return 0;
}
int sgt_mse_loss(void* const* a, size_t, void* u) {
  k::mse_loss_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<float>(a, 2), dims_of(u));
  return 0;
}
int sgt_grad_output(void* const* a, size_t, void* u) {
  k::grad_output_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<float>(a, 2), dims_of(u));
  return 0;
}
int sgt_backward_hidden(void* const* a, size_t, void* u) {
  k::backward_hidden_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<const float>(a, 2), arg<float>(a, 3),
                          dims_of(u));
  return 0;
}
int sgt_grad_hidden(void* const* a, size_t, void* u) {
  k::grad_hidden_host(arg<const float>(a, 0), arg<const float>(a, 1), arg<float>(a, 2), dims_of(u));
  return 0;
}
int sgt_sgd_update(void* const* a, size_t, void* u) {
  const auto* scalars = arg<const stepgraph::runtime::StepScalars>(a, 2);
  k::sgd_update_host(arg<float>(a, 0), arg<const float>(a, 1), k::param_count(dims_of(u)), &scalars->learning_rate);
  return 0;
}

}  // extern "C"
