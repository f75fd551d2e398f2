// A raw CUDA graph for the import test (raw_graph_import_cuda_test.cpp):
// captured with cudaStreamBeginCapture on raw cudaStream_t's, with raw
// __global__ kernels and no stepgraph annotation at all.
//
//   s0: cudaMemcpyAsync  d_x <- h_x (H2D, kRawBytes)
//   s0: record fork; s1: wait fork
//   s0: raw_scale   a = 2 x
//   s1: raw_shift   b = x + 1
//   s1: record join; s0: wait join
//   s0: raw_combine a = a + b
//
// Expected structure: memcpy -> raw_scale, memcpy -> raw_shift,
// raw_scale -> raw_combine, raw_shift -> raw_combine.
//
// Compiled as C++17 device code; the interface (raw_graph_kernels.h) is
// plain C++ and includes no CUDA header.
#include <cuda_runtime_api.h>

#include <cstddef>

#include "raw_graph_kernels.h"

__global__ void raw_scale(float* a, const float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) a[i] = 2.0F * x[i];
}
__global__ void raw_shift(float* b, const float* x, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) b[i] = x[i] + 1.0F;
}
__global__ void raw_combine(float* a, const float* b, std::size_t n) {
  for (std::size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) a[i] += b[i];
}

namespace sgtest::raw {

#define SG_RAW_TRY(expr)                  \
  do {                                    \
    const cudaError_t e_ = (expr);        \
    if (e_ != cudaSuccess) {              \
      out.error = cudaGetErrorString(e_); \
      out.failed_call = #expr;            \
      return out;                         \
    }                                     \
  } while (0)

RawCapture capture_raw_graph() {
  RawCapture out;
  constexpr std::size_t n = kRawBytes / sizeof(float);
  float* h_x = nullptr;
  SG_RAW_TRY(cudaMallocHost(&h_x, kRawBytes));
  out.host = h_x;
  float *x = nullptr, *a = nullptr, *b = nullptr;
  SG_RAW_TRY(cudaMalloc(&x, kRawBytes));
  out.device[0] = x;
  SG_RAW_TRY(cudaMalloc(&a, kRawBytes));
  out.device[1] = a;
  SG_RAW_TRY(cudaMalloc(&b, kRawBytes));
  out.device[2] = b;
  cudaStream_t s0 = nullptr, s1 = nullptr;
  SG_RAW_TRY(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking));
  out.stream[0] = s0;
  SG_RAW_TRY(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  out.stream[1] = s1;
  cudaEvent_t fork = nullptr, join = nullptr;
  SG_RAW_TRY(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  out.event[0] = fork;
  SG_RAW_TRY(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  out.event[1] = join;

  SG_RAW_TRY(cudaStreamBeginCapture(s0, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  auto fail = [&](cudaError_t e, const char* call) {
    (void)cudaStreamEndCapture(s0, &graph);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    out.error = cudaGetErrorString(e);
    out.failed_call = call;
    return out;
  };
#define SG_RAW_CAPTURE(expr)                       \
  do {                                             \
    const cudaError_t e_ = (expr);                 \
    if (e_ != cudaSuccess) return fail(e_, #expr); \
  } while (0)
  SG_RAW_CAPTURE(cudaMemcpyAsync(x, h_x, kRawBytes, cudaMemcpyHostToDevice, s0));
  SG_RAW_CAPTURE(cudaEventRecord(fork, s0));
  SG_RAW_CAPTURE(cudaStreamWaitEvent(s1, fork, 0));
  raw_scale<<<4, 128, 0, s0>>>(a, x, n);
  SG_RAW_CAPTURE(cudaGetLastError());
  raw_shift<<<4, 128, 0, s1>>>(b, x, n);
  SG_RAW_CAPTURE(cudaGetLastError());
  SG_RAW_CAPTURE(cudaEventRecord(join, s1));
  SG_RAW_CAPTURE(cudaStreamWaitEvent(s0, join, 0));
  raw_combine<<<4, 128, 0, s0>>>(a, b, n);
  SG_RAW_CAPTURE(cudaGetLastError());
#undef SG_RAW_CAPTURE
  SG_RAW_TRY(cudaStreamEndCapture(s0, &graph));
  out.graph = graph;
  return out;
}

void release(RawCapture& c) {
  if (c.graph != nullptr) (void)cudaGraphDestroy(static_cast<cudaGraph_t>(c.graph));
  for (void* e : c.event)
    if (e != nullptr) (void)cudaEventDestroy(static_cast<cudaEvent_t>(e));
  for (void* s : c.stream)
    if (s != nullptr) (void)cudaStreamDestroy(static_cast<cudaStream_t>(s));
  for (void* d : c.device)
    if (d != nullptr) (void)cudaFree(d);
  if (c.host != nullptr) (void)cudaFreeHost(c.host);
  c = RawCapture{};
}

}  // namespace sgtest::raw
