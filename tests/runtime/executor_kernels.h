// Kernels of the executor tests that read the executor's StepScalars from
// device-visible memory (host versions in executor_kernels.cpp, device
// versions in executor_kernels.cu).
#pragma once

#include <cstddef>

#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>

namespace sgtest {

using stepgraph::runtime::Kernel;
using stepgraph::runtime::StepScalars;

// out[0] = learning rate, out[1] = step, out[2] = loss scale, as floats
void read_scalars_host(float* out, const StepScalars* s);
const void* read_scalars_device();
inline Kernel<float*, const StepScalars*> read_scalars() {
  return {"read_scalars", read_scalars_host, read_scalars_device()};
}

// w[i] -= lr * g[i], lr read from the scalars
void sgd_host(float* w, const float* g, std::size_t n, const StepScalars* s);
const void* sgd_device();
inline Kernel<float*, const float*, std::size_t, const StepScalars*> sgd() {
  return {"sgd", sgd_host, sgd_device()};
}

}  // namespace sgtest
