// stepgraph/runtime/condition_device.h — device_set_condition, for CUDA
// kernels (.cu files) that decide a conditional node (Note [Conditional
// nodes] in condition.h). C++17; without nvcc it only declares what
// condition.h declares.
//
// Thread-safety: concurrent calls on one handle from several threads are
// undefined, as for cudaGraphSetConditional (CUDA Runtime API, "Graph
// Management"): let one thread set it.
#pragma once

#include <stepgraph/runtime/condition.h>

#if defined(__CUDACC__)
#include <cuda_runtime.h>

namespace stepgraph::runtime {

/// Sets the condition of the executable graph running this kernel
/// (cudaGraphSetConditional; CUDA 12.4 or later).
__device__ inline void device_set_condition(ConditionHandle handle, unsigned value) {
  cudaGraphSetConditional(static_cast<cudaGraphConditionalHandle>(handle.value), value);
}

}  // namespace stepgraph::runtime
#endif
