// tests/runtime/test_kernels.h — kernels the conformance suite launches on
// both backends. Each has a host implementation (here, in test_kernels.cpp)
// and a device one (test_kernels.cu, built only with CUDA; the accessors
// return null in a build without CUDA).
#pragma once

#include <cstddef>
#include <cstdint>

#include <stepgraph/runtime/backend.h>

namespace sgtest {

using stepgraph::runtime::Kernel;

// p[i] = v for i < n
void fill_f32_host(float* p, std::size_t n, float v);
const void* fill_f32_device();
inline Kernel<float*, std::size_t, float> fill_f32() {
  return {"fill_f32", fill_f32_host, fill_f32_device()};
}

// y[i] = a * x[i] + y[i]
void axpy_f32_host(float* y, const float* x, std::size_t n, float a);
const void* axpy_f32_device();
inline Kernel<float*, const float*, std::size_t, float> axpy_f32() {
  return {"axpy_f32", axpy_f32_host, axpy_f32_device()};
}

// dst[i] = src[i] * mul + add  (dst may equal src)
void affine_i64_host(std::int64_t* dst, const std::int64_t* src, std::size_t n, std::int64_t mul, std::int64_t add);
const void* affine_i64_device();
inline Kernel<std::int64_t*, const std::int64_t*, std::size_t, std::int64_t, std::int64_t> affine_i64() {
  return {"affine_i64", affine_i64_host, affine_i64_device()};
}

// Waits until *flag != 0 (flag in pinned host memory, read in place by the
// device), then writes *out = *flag. A latch a test opens from the host.
void wait_flag_host(volatile std::int32_t* flag, std::int32_t* out);
const void* wait_flag_device();
inline Kernel<volatile std::int32_t*, std::int32_t*> wait_flag() {
  return {"wait_flag", wait_flag_host, wait_flag_device()};
}

// A kernel that faults: the host version throws; the device version traps.
void fault_host(std::int32_t* p);
const void* fault_device();
inline Kernel<std::int32_t*> fault() {
  return {"fault", fault_host, fault_device()};
}

// Spins for about `ns` nanoseconds (host: a busy loop on the steady clock;
// device: __nanosleep), then adds 1 to *counter.
void spin_ns_host(std::int64_t* counter, std::int64_t ns);
const void* spin_ns_device();
inline Kernel<std::int64_t*, std::int64_t> spin_ns() {
  return {"spin_ns", spin_ns_host, spin_ns_device()};
}

}  // namespace sgtest
