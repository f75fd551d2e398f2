#include "test_kernels.h"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

namespace sgtest {

void fill_f32_host(float* p, std::size_t n, float v) {
  for (std::size_t i = 0; i < n; ++i) p[i] = v;
}
void axpy_f32_host(float* y, const float* x, std::size_t n, float a) {
  for (std::size_t i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}
// Relaxed atomic accesses (as cheap as plain ones on x86): the
// AMissing...ShowsUpUnderTheShuffle tests run two of these deliberately
// unordered on one buffer, and plain accesses would make that a data race
// (undefined behaviour, and a ThreadSanitizer report) rather than the
// interleaving the tests look for.
void affine_i64_host(std::int64_t* dst, const std::int64_t* src, std::size_t n, std::int64_t mul, std::int64_t add) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t v =
        std::atomic_ref<std::int64_t>(*const_cast<std::int64_t*>(src + i)).load(std::memory_order_relaxed);
    std::atomic_ref<std::int64_t>(dst[i]).store(v * mul + add, std::memory_order_relaxed);
  }
}
void wait_flag_host(volatile std::int32_t* flag, std::int32_t* out) {
  while (std::atomic_ref<std::int32_t>(*const_cast<std::int32_t*>(flag)).load() == 0) std::this_thread::yield();
  // Atomic: the test reads `out` while the kernel may still be spinning.
  std::atomic_ref<std::int32_t>(*out).store(std::atomic_ref<std::int32_t>(*const_cast<std::int32_t*>(flag)).load());
}
void fault_host(std::int32_t*) {
  throw std::runtime_error("test kernel 'fault' failed on purpose");
}
void spin_ns_host(std::int64_t* counter, std::int64_t ns) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (std::chrono::steady_clock::now() < end) {
  }
  *counter += 1;
}

#ifndef STEPGRAPH_TEST_DEVICE_KERNELS
const void* fill_f32_device() {
  return nullptr;
}
const void* axpy_f32_device() {
  return nullptr;
}
const void* affine_i64_device() {
  return nullptr;
}
const void* wait_flag_device() {
  return nullptr;
}
const void* fault_device() {
  return nullptr;
}
const void* spin_ns_device() {
  return nullptr;
}
#endif

}  // namespace sgtest
