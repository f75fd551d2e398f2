#include "conditional_kernels.h"

#include <stepgraph/runtime/condition.h>

namespace sgtest {

void cond_from_value_host(const std::int32_t* value, ConditionHandle condition) {
  stepgraph::runtime::set_condition(condition, *value != 0 ? 1u : 0u);
}
void count_down_host(std::int32_t* left, std::int32_t* iterations, ConditionHandle condition) {
  *left -= 1;
  *iterations += 1;
  stepgraph::runtime::set_condition(condition, *left > 0 ? 1u : 0u);
}
void add_i32_host(std::int32_t* p, std::int32_t v) {
  *p += v;
}

#if !defined(STEPGRAPH_TEST_DEVICE_KERNELS)
const void* cond_from_value_device() {
  return nullptr;
}
const void* count_down_device() {
  return nullptr;
}
const void* add_i32_device() {
  return nullptr;
}
#endif

}  // namespace sgtest
