// Device versions of tests/runtime/conditional_kernels.h (C++17: this file
// includes only the C++17 headers condition.h / condition_device.h and
// declares the accessors itself, as test_kernels.cu does). Each kernel acts
// in global thread 0 only: cudaGraphSetConditional must not be called
// concurrently on one handle.
#include <cstdint>

#include <stepgraph/runtime/condition_device.h>

namespace sgtest {
const void* cond_from_value_device();
const void* count_down_device();
const void* add_i32_device();
}  // namespace sgtest

namespace {

using stepgraph::runtime::ConditionHandle;
using stepgraph::runtime::device_set_condition;

__device__ bool first_thread() {
  return blockIdx.x == 0 && threadIdx.x == 0;
}

__global__ void cond_from_value_kernel(const std::int32_t* value, ConditionHandle condition) {
  if (!first_thread()) return;
  device_set_condition(condition, *value != 0 ? 1u : 0u);
}

__global__ void count_down_kernel(std::int32_t* left, std::int32_t* iterations, ConditionHandle condition) {
  if (!first_thread()) return;
  *left -= 1;
  *iterations += 1;
  device_set_condition(condition, *left > 0 ? 1u : 0u);
}

__global__ void add_i32_kernel(std::int32_t* p, std::int32_t v) {
  if (!first_thread()) return;
  *p += v;
}

}  // namespace

namespace sgtest {
const void* cond_from_value_device() {
  return reinterpret_cast<const void*>(&cond_from_value_kernel);
}
const void* count_down_device() {
  return reinterpret_cast<const void*>(&count_down_kernel);
}
const void* add_i32_device() {
  return reinterpret_cast<const void*>(&add_i32_kernel);
}
}  // namespace sgtest
