// tests/runtime/raw_graph_kernels.h — the raw CUDA capture of
// raw_graph_kernels.cu, behind an interface without CUDA types (the .cu file
// is C++17 device code; the test is C++20).
#pragma once

#include <cstddef>

namespace sgtest::raw {

inline constexpr std::size_t kRawBytes = 4096;

/// What capture_raw_graph made; release() frees all of it. `graph` is the
/// cudaGraph_t (null if the capture failed: then `error` and `failed_call`
/// say why). Streams, events and memory are kept until release().
struct RawCapture {
  void* graph = nullptr;
  const char* error = nullptr;
  const char* failed_call = nullptr;
  void* host = nullptr;
  void* device[3] = {nullptr, nullptr, nullptr};
  void* stream[2] = {nullptr, nullptr};
  void* event[2] = {nullptr, nullptr};
};

/// The capture described in raw_graph_kernels.cu.
[[nodiscard]] RawCapture capture_raw_graph();
void release(RawCapture& capture);

}  // namespace sgtest::raw
