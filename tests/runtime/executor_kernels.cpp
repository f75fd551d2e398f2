#include "executor_kernels.h"

namespace sgtest {

void read_scalars_host(float* out, const StepScalars* s) {
  out[0] = s->learning_rate;
  out[1] = static_cast<float>(s->step);
  out[2] = s->loss_scale;
}
void sgd_host(float* w, const float* g, std::size_t n, const StepScalars* s) {
  for (std::size_t i = 0; i < n; ++i) w[i] -= s->learning_rate * g[i];
}

#ifndef STEPGRAPH_TEST_DEVICE_KERNELS
const void* read_scalars_device() {
  return nullptr;
}
const void* sgd_device() {
  return nullptr;
}
#endif

}  // namespace sgtest
