#include "lowering_kernels.h"

namespace sgtest::lowering {

namespace {
constexpr std::uint64_t kStride = 0x100000001b3ull;
constexpr std::uint64_t rotl(std::uint64_t x, unsigned r) {
  return (x << r) | (x >> (64u - r));
}
}  // namespace

void mix_seed_host(std::uint64_t* dst, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = mix64(seed ^ (i * kStride));
}
void mix_keep_host(std::uint64_t* dst, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = mix64(dst[i] + (seed ^ (i * kStride)));
}
void mix_in_host(std::uint64_t* dst, std::size_t n, const std::uint64_t* src, std::size_t src_n, std::uint64_t salt) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = mix64((dst[i] ^ rotl(src[i % src_n], 23)) + salt);
}

#ifndef STEPGRAPH_TEST_DEVICE_KERNELS
const void* mix_seed_device() {
  return nullptr;
}
const void* mix_keep_device() {
  return nullptr;
}
const void* mix_in_device() {
  return nullptr;
}
#endif

}  // namespace sgtest::lowering
