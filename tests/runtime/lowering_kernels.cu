// The device versions of the lowering tests' mix kernels
// (tests/runtime/lowering_kernels.h; host versions in lowering_kernels.cpp).
//
// Compiled as C++17 device code, so this file does not include
// lowering_kernels.h (it pulls in the C++20 runtime headers): it declares the
// accessors itself with the same signatures, and repeats the arithmetic,
// which must stay identical to the host version's (uint64 only, so the
// results are bit-equal). Each kernel has exactly the parameter types of its
// Kernel<Args...> declaration (cudaLaunchKernelExC passes pointers to values
// of those types). Grid-stride loops: any LaunchDims work.
#include <cstddef>
#include <cstdint>

namespace sgtest::lowering {
const void* mix_seed_device();
const void* mix_keep_device();
const void* mix_in_device();
}  // namespace sgtest::lowering

namespace {

constexpr std::uint64_t kStride = 0x100000001b3ull;

__device__ std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
__device__ std::uint64_t rotl(std::uint64_t x, unsigned r) {
  return (x << r) | (x >> (64u - r));
}
__device__ std::size_t first_index() {
  return static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ std::size_t grid_stride() {
  return static_cast<std::size_t>(gridDim.x) * blockDim.x;
}

__global__ void mix_seed_kernel(std::uint64_t* dst, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = first_index(); i < n; i += grid_stride()) dst[i] = mix64(seed ^ (i * kStride));
}
__global__ void mix_keep_kernel(std::uint64_t* dst, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = first_index(); i < n; i += grid_stride()) dst[i] = mix64(dst[i] + (seed ^ (i * kStride)));
}
__global__ void mix_in_kernel(std::uint64_t* dst, std::size_t n, const std::uint64_t* src, std::size_t src_n,
                              std::uint64_t salt) {
  for (std::size_t i = first_index(); i < n; i += grid_stride())
    dst[i] = mix64((dst[i] ^ rotl(src[i % src_n], 23)) + salt);
}

}  // namespace

namespace sgtest::lowering {
const void* mix_seed_device() {
  return reinterpret_cast<const void*>(&mix_seed_kernel);
}
const void* mix_keep_device() {
  return reinterpret_cast<const void*>(&mix_keep_kernel);
}
const void* mix_in_device() {
  return reinterpret_cast<const void*>(&mix_in_kernel);
}
}  // namespace sgtest::lowering
