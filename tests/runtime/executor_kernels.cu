#include <cstddef>

#include <stepgraph/runtime/step_scalars.h>

namespace sgtest {
using stepgraph::runtime::StepScalars;
namespace {
__global__ void read_scalars_kernel(float* out, const StepScalars* s) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    out[0] = s->learning_rate;
    out[1] = static_cast<float>(s->step);
    out[2] = s->loss_scale;
  }
}
__global__ void sgd_kernel(float* w, const float* g, std::size_t n, const StepScalars* s) {
  const std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  if (i < n) w[i] -= s->learning_rate * g[i];
}
}  // namespace
const void* read_scalars_device() {
  return reinterpret_cast<const void*>(&read_scalars_kernel);
}
const void* sgd_device() {
  return reinterpret_cast<const void*>(&sgd_kernel);
}
}  // namespace sgtest
