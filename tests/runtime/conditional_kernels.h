// tests/runtime/conditional_kernels.h — kernels that decide conditional
// nodes on the device (Note [Conditional nodes], condition.h), for the
// conditional-node suite on both backends. Host versions in
// conditional_kernels.cpp, device versions in conditional_kernels.cu (null
// accessors in a build without CUDA). Each acts once (global thread 0), as
// its host version runs once.
#pragma once

#include <cstdint>

#include <stepgraph/runtime/backend.h>

namespace sgtest {

using stepgraph::runtime::ConditionHandle;
using stepgraph::runtime::Kernel;

// condition = (*value != 0)
void cond_from_value_host(const std::int32_t* value, ConditionHandle condition);
const void* cond_from_value_device();
inline Kernel<const std::int32_t*, ConditionHandle> cond_from_value() {
  return {"cond_from_value", cond_from_value_host, cond_from_value_device()};
}

// *left -= 1; *iterations += 1; condition = (*left > 0): one WHILE iteration
void count_down_host(std::int32_t* left, std::int32_t* iterations, ConditionHandle condition);
const void* count_down_device();
inline Kernel<std::int32_t*, std::int32_t*, ConditionHandle> count_down() {
  return {"count_down", count_down_host, count_down_device()};
}

// *p += v
void add_i32_host(std::int32_t* p, std::int32_t v);
const void* add_i32_device();
inline Kernel<std::int32_t*, std::int32_t> add_i32() {
  return {"add_i32", add_i32_host, add_i32_device()};
}

}  // namespace sgtest
