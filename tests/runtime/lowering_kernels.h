// tests/runtime/lowering_kernels.h — the deterministic integer "mix"
// kernels the lowering tests emit for every IR node. uint64 arithmetic only
// (splitmix64 steps), so a result is exact and equal on every backend and in
// every correct order; a wrong or missing copy changes it.
//
// Host implementations in lowering_kernels.cpp, device ones in
// lowering_kernels.cu (built only with CUDA; the accessors return null in a
// build without CUDA).
#pragma once

#include <cstddef>
#include <cstdint>

#include <stepgraph/runtime/backend.h>

namespace sgtest::lowering {

using stepgraph::runtime::Kernel;

/// splitmix64's finaliser (Steele, Lea & Flood, OOPSLA 2014).
constexpr std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// dst[i] = mix64(seed ^ (i * 0x100000001b3))
void mix_seed_host(std::uint64_t* dst, std::size_t n, std::uint64_t seed);
const void* mix_seed_device();
inline Kernel<std::uint64_t*, std::size_t, std::uint64_t> mix_seed() {
  return {"mix_seed", mix_seed_host, mix_seed_device()};
}

// dst[i] = mix64(dst[i] + (seed ^ (i * 0x100000001b3)))
void mix_keep_host(std::uint64_t* dst, std::size_t n, std::uint64_t seed);
const void* mix_keep_device();
inline Kernel<std::uint64_t*, std::size_t, std::uint64_t> mix_keep() {
  return {"mix_keep", mix_keep_host, mix_keep_device()};
}

// dst[i] = mix64((dst[i] ^ rotl(src[i % src_n], 23)) + salt); src does not overlap dst
void mix_in_host(std::uint64_t* dst, std::size_t n, const std::uint64_t* src, std::size_t src_n, std::uint64_t salt);
const void* mix_in_device();
inline Kernel<std::uint64_t*, std::size_t, const std::uint64_t*, std::size_t, std::uint64_t> mix_in() {
  return {"mix_in", mix_in_host, mix_in_device()};
}

}  // namespace sgtest::lowering
