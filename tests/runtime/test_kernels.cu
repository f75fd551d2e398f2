// The device versions of the conformance suite's test kernels
// (tests/runtime/test_kernels.h; host versions in test_kernels.cpp).
//
// Compiled as C++17 device code (CMake 3.25 does not know nvcc 13 accepts
// C++20), so this file does not include test_kernels.h, which pulls in the
// C++20 runtime headers: it declares the accessors itself, with the same
// signatures. Each kernel has exactly the parameter types of its
// Kernel<Args...> declaration, because cudaLaunchKernelExC passes the
// arguments as pointers to values of those types (CUDA Runtime API,
// "Execution Control").
//
// The data-parallel kernels use grid-stride loops, so any LaunchDims work
// (the suite launches some with the default 1x1); the latch, fault and spin
// kernels act in global thread 0 only, as their host versions run once.
#include <cstddef>
#include <cstdint>

namespace sgtest {
const void* fill_f32_device();
const void* axpy_f32_device();
const void* affine_i64_device();
const void* wait_flag_device();
const void* fault_device();
const void* spin_ns_device();
}  // namespace sgtest

namespace {

__device__ std::size_t first_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ std::size_t grid_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}
__device__ bool is_first_thread() {
  return first_index() == 0 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}

/// The device's nanosecond clock (PTX ISA, "Special Registers":
/// %globaltimer).
__device__ std::uint64_t global_timer_ns() {
  std::uint64_t t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// p[i] = v for i < n
__global__ void fill_f32_kernel(float* p, std::size_t n, float v) {
  for (std::size_t i = first_index(); i < n; i += grid_stride()) p[i] = v;
}

// y[i] = a * x[i] + y[i], rounded after the multiply and after the add
// (no fused multiply-add), so that the result equals the host version's.
__global__ void axpy_f32_kernel(float* y, const float* x, std::size_t n, float a) {
  for (std::size_t i = first_index(); i < n; i += grid_stride()) y[i] = __fadd_rn(__fmul_rn(a, x[i]), y[i]);
}

// dst[i] = src[i] * mul + add (dst may equal src: each element is read,
// then written, by one thread).
__global__ void affine_i64_kernel(std::int64_t* dst, const std::int64_t* src, std::size_t n, std::int64_t mul,
                                  std::int64_t add) {
  for (std::size_t i = first_index(); i < n; i += grid_stride()) {
    const std::int64_t v = src[i];
    dst[i] = v * mul + add;
  }
}

// Waits until *flag != 0, reading the pinned host word in place through the
// volatile pointer (each read goes to memory), then writes *out = *flag.
__global__ void wait_flag_kernel(volatile std::int32_t* flag, std::int32_t* out) {
  if (!is_first_thread()) return;
  std::int32_t v = 0;
  while ((v = *flag) == 0) __nanosleep(1000);
  *out = v;
  __threadfence_system();  // make the write visible to the host before the kernel ends
}

// Traps: the launch fails with cudaErrorLaunchFailure, a sticky error
// (CUDA Runtime API, enum cudaError).
__global__ void fault_kernel(std::int32_t* p) {
  (void)p;
  if (is_first_thread()) __trap();
}

// Spins for about `ns` nanoseconds on %globaltimer, sleeping in short
// steps, then adds 1 to *counter.
__global__ void spin_ns_kernel(std::int64_t* counter, std::int64_t ns) {
  if (!is_first_thread()) return;
  const std::uint64_t start = global_timer_ns();
  const std::uint64_t wait = ns > 0 ? static_cast<std::uint64_t>(ns) : 0;
  while (global_timer_ns() - start < wait) __nanosleep(256);
  *counter += 1;
}

}  // namespace

namespace sgtest {
const void* fill_f32_device() {
  return reinterpret_cast<const void*>(&fill_f32_kernel);
}
const void* axpy_f32_device() {
  return reinterpret_cast<const void*>(&axpy_f32_kernel);
}
const void* affine_i64_device() {
  return reinterpret_cast<const void*>(&affine_i64_kernel);
}
const void* wait_flag_device() {
  return reinterpret_cast<const void*>(&wait_flag_kernel);
}
const void* fault_device() {
  return reinterpret_cast<const void*>(&fault_kernel);
}
const void* spin_ns_device() {
  return reinterpret_cast<const void*>(&spin_ns_kernel);
}
}  // namespace sgtest
