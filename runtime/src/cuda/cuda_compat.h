// runtime/src/cuda/cuda_compat.h — the one place that knows CUDA versions,
// and the check macros every CUDA runtime call goes through.
//
// Private to the cuda backend (runtime/src/cuda). STYLE.md: "version
// differences of CUDA live in one compatibility header per dependency, not in
// #if inside function bodies".
//
// Note [CUDA error classes]
// A failed CUDA call becomes one of three typed exceptions:
//  - DeviceFault for the sticky errors (cudaErrorIllegalAddress,
//    cudaErrorLaunchFailure, ...; CUDA Runtime API, "Data types used by CUDA
//    Runtime", enum cudaError: "This leaves the process in an inconsistent
//    state and any further CUDA work will return the same error"). The device
//    is recorded as faulted (fault_registry()) so every later call on it
//    throws DeviceFault before touching CUDA (DESIGN 1.6, 2.5).
//  - InvalidState for the stream-capture legality errors
//    (cudaErrorStreamCapture*, cudaErrorCapturedEvent): the caller made a
//    call that is illegal during capture (DESIGN 2.2); CUDA has already
//    invalidated the capture where it does so.
//  - CudaError(message, code) for everything else.
// Every message names the call, the device and what to do next.
#pragma once

#include <cudaTypedefs.h>  // the driver's function types (PFN_*), header only: no driver library is linked
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#if !defined(CUDART_VERSION) || CUDART_VERSION < 12000
#error \
    "the stepgraph cuda backend needs the CUDA 12 or 13 runtime (cudaGraphInstantiateWithParams, cudaLaunchKernelExC)"
#endif

namespace stepgraph::runtime::cuda {

// ---------------------------------------------------------------- errors

/// True for the errors CUDA documents as leaving the context unusable
/// (driver_types.h, enum cudaError: "This leaves the process in an
/// inconsistent state ..." or "the process must be terminated and
/// relaunched"). cudaErrorTensorMemoryLeak exists from CUDA 12.8 (tensor
/// memory of sm_100).
[[nodiscard]] constexpr bool is_sticky(cudaError_t e) noexcept {
#if CUDART_VERSION >= 12080
  if (e == cudaErrorTensorMemoryLeak) return true;
#endif
  switch (e) {
    case cudaErrorMpsClientTerminated:
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable:
    case cudaErrorExternalDevice:
    case cudaErrorContained:
      return true;
    default:
      return false;
  }
}

/// True for the errors of an illegal call during stream capture (CUDA
/// Programming Guide, "CUDA Graphs" > "Stream Capture" > "Prohibited and
/// Unhandled Operations" and "Invalidation").
[[nodiscard]] constexpr bool is_capture_error(cudaError_t e) noexcept {
  switch (e) {
    case cudaErrorStreamCaptureUnsupported:
    case cudaErrorStreamCaptureInvalidated:
    case cudaErrorStreamCaptureMerge:
    case cudaErrorStreamCaptureUnmatched:
    case cudaErrorStreamCaptureUnjoined:
    case cudaErrorStreamCaptureIsolation:
    case cudaErrorStreamCaptureImplicit:
    case cudaErrorCapturedEvent:
    case cudaErrorStreamCaptureWrongThread:
      return true;
    default:
      return false;
  }
}

/// The sticky faults seen in this process, per device. Process-wide because
/// a sticky CUDA error corrupts the device's primary context, which every
/// Backend object of the process shares. Thread-safe.
class FaultRegistry {
 public:
  /// Records the first fault of `device` (first error wins).
  void record(int device, std::string message);
  [[nodiscard]] std::optional<std::string> fault(int device) const;
  /// Throws DeviceFault if `device` faulted; `call` names the refused call.
  void throw_if_faulted(int device, std::string_view call) const;

 private:
  std::atomic<bool> any_{false};  // fast path: every enqueue asks, almost always "no"
  mutable std::mutex mutex_;
  std::vector<std::optional<std::string>> faults_;
};
FaultRegistry& fault_registry();

/// What the caller can do about `e` (the "what to do" part of a message).
[[nodiscard]] std::string_view advice(cudaError_t e) noexcept;

/// Throws the exception of Note [CUDA error classes] for a failed `expr`,
/// naming the current device (the call sites set it with a DeviceGuard).
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);
/// The cleanup-path twin: logs a warning (and records a sticky fault).
void warn_cuda_error(cudaError_t e, const char* expr, const char* file, int line) noexcept;

// ---------------------------------------------------------------- version differences

/// cudaStreamGetCaptureInfo: CUDA 13 returns the edge data array beside the
/// dependencies (12.3+ had that as cudaStreamGetCaptureInfo_v3; 12.0-12.2
/// only the v2 form without it). `deps` may be null. Edge data is asked for
/// whenever dependencies are, as CUDA 13 returns cudaErrorLossyQuery
/// otherwise for annotated edges.
inline cudaError_t stream_get_capture_info(cudaStream_t stream, cudaStreamCaptureStatus* status, unsigned long long* id,
                                           cudaGraph_t* graph, const cudaGraphNode_t** deps, std::size_t* num_deps) {
#if CUDART_VERSION >= 13000
  const cudaGraphEdgeData* edge_data = nullptr;
  return cudaStreamGetCaptureInfo(stream, status, id, graph, deps, deps != nullptr ? &edge_data : nullptr, num_deps);
#elif CUDART_VERSION >= 12030
  const cudaGraphEdgeData* edge_data = nullptr;
  return cudaStreamGetCaptureInfo_v3(stream, status, id, graph, deps, deps != nullptr ? &edge_data : nullptr, num_deps);
#else
  return cudaStreamGetCaptureInfo(stream, status, id, graph, deps, num_deps);
#endif
}

/// The graph a capturing stream captures into and its current dependencies
/// (cudaStreamGetCaptureInfo: "the next node to be captured in the stream
/// will depend on this set of nodes"), to add a node by hand. `plain_edges`
/// is false when an edge to a dependency carries data (a programmatic edge,
/// CUDA 12.3+), which a node added with cudaGraphAdd*Node would lose.
inline cudaError_t stream_capture_frontier(cudaStream_t stream, cudaStreamCaptureStatus* status, cudaGraph_t* graph,
                                           const cudaGraphNode_t** deps, std::size_t* num_deps, bool* plain_edges) {
  *plain_edges = true;
#if CUDART_VERSION >= 12030
  const cudaGraphEdgeData* edge_data = nullptr;
#if CUDART_VERSION >= 13000
  const cudaError_t e = cudaStreamGetCaptureInfo(stream, status, nullptr, graph, deps, &edge_data, num_deps);
#else
  const cudaError_t e = cudaStreamGetCaptureInfo_v3(stream, status, nullptr, graph, deps, &edge_data, num_deps);
#endif
  if (e == cudaSuccess && edge_data != nullptr) {
    for (std::size_t i = 0; i < *num_deps; ++i) {
      const cudaGraphEdgeData& d = edge_data[i];
      if (d.from_port != 0 || d.to_port != 0 || d.type != cudaGraphDependencyTypeDefault) *plain_edges = false;
    }
  }
  return e;
#else
  return cudaStreamGetCaptureInfo(stream, status, nullptr, graph, deps, num_deps);
#endif
}

/// Replaces a capturing stream's dependencies with `deps`
/// (cudaStreamUpdateCaptureDependencies with cudaStreamSetCaptureDependencies;
/// CUDA 13 takes an edge data array, which 12.3+ had as the _v2 form; null
/// means default edges).
inline cudaError_t stream_set_capture_dependencies(cudaStream_t stream, cudaGraphNode_t* deps, std::size_t num_deps) {
#if CUDART_VERSION >= 13000
  return cudaStreamUpdateCaptureDependencies(stream, deps, nullptr, num_deps, cudaStreamSetCaptureDependencies);
#elif CUDART_VERSION >= 12030
  return cudaStreamUpdateCaptureDependencies_v2(stream, deps, nullptr, num_deps, cudaStreamSetCaptureDependencies);
#else
  return cudaStreamUpdateCaptureDependencies(stream, deps, num_deps, cudaStreamSetCaptureDependencies);
#endif
}

/// cudaGraphGetEdges: CUDA 13 takes an edge data array (12.3+ had it as
/// cudaGraphGetEdges_v2). With `from`/`to` null it returns the count; else
/// it fills *count edges, and an edge data array of that size is passed
/// along, since CUDA returns cudaErrorLossyQuery without one when an edge
/// carries data.
inline cudaError_t graph_get_edges(cudaGraph_t graph, cudaGraphNode_t* from, cudaGraphNode_t* to, std::size_t* count) {
#if CUDART_VERSION >= 12030
  std::vector<cudaGraphEdgeData> edge_data(from != nullptr ? *count : 0);
#if CUDART_VERSION >= 13000
  return cudaGraphGetEdges(graph, from, to, from != nullptr ? edge_data.data() : nullptr, count);
#else
  return cudaGraphGetEdges_v2(graph, from, to, from != nullptr ? edge_data.data() : nullptr, count);
#endif
#else
  return cudaGraphGetEdges(graph, from, to, count);
#endif
}

/// The name of a device entry function (cudaFuncGetName, CUDA 12.3+; may be
/// mangled), or null where CUDA cannot name it or the runtime is older. A
/// failure is cleared from the thread's last error (it is not sticky).
inline const char* func_name(const void* func) {
#if CUDART_VERSION >= 12030
  const char* name = nullptr;
  if (cudaFuncGetName(&name, func) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  return name;
#else
  (void)func;
  return nullptr;
#endif
}

/// cudaGraphNodeTypeConditional exists from CUDA 12.3.
[[nodiscard]] constexpr bool is_conditional_node(cudaGraphNodeType type) noexcept {
#if CUDART_VERSION >= 12030
  return type == cudaGraphNodeTypeConditional;
#else
  (void)type;
  return false;
#endif
}

// ---------------------------------------------------------------- conditional nodes (CUDA 12.4+)

/// Whether this runtime builds conditional nodes from stream capture:
/// cudaGraphConditionalHandleCreate and cudaStreamBeginCaptureToGraph exist
/// from 12.3, cudaGraphAddNode of a conditional node from 12.4 (CUDA
/// Programming Guide, "Conditional Graph Nodes").
inline constexpr bool kHaveConditionalNodes = CUDART_VERSION >= 12040;

/// A condition of `graph`, reset to `default_value` at every launch
/// (cudaGraphCondAssignDefault); cudaErrorNotSupported before 12.4.
inline cudaError_t conditional_handle_create(unsigned long long* handle, cudaGraph_t graph, unsigned default_value) {
#if CUDART_VERSION >= 12040
  cudaGraphConditionalHandle h = 0;
  const cudaError_t e = cudaGraphConditionalHandleCreate(&h, graph, default_value, cudaGraphCondAssignDefault);
  *handle = static_cast<unsigned long long>(h);
  return e;
#else
  (void)handle, (void)graph, (void)default_value;
  return cudaErrorNotSupported;
#endif
}

/// Adds an IF (`loop` false) or WHILE node on `handle` to `graph` after
/// `deps` and returns its body graph (owned by the node). CUDA 13 takes an
/// edge data array (12.4-12.9: cudaGraphAddNode_v2 takes it, the plain form
/// does not); null means default edges.
inline cudaError_t add_conditional_node(cudaGraphNode_t* node, cudaGraph_t graph, const cudaGraphNode_t* deps,
                                        std::size_t num_deps, unsigned long long handle, bool loop, cudaGraph_t* body) {
#if CUDART_VERSION >= 12040
  cudaGraphNodeParams p{};
  p.type = cudaGraphNodeTypeConditional;
  p.conditional.handle = static_cast<cudaGraphConditionalHandle>(handle);
  p.conditional.type = loop ? cudaGraphCondTypeWhile : cudaGraphCondTypeIf;
  p.conditional.size = 1;
#if CUDART_VERSION >= 13000
  const cudaError_t e = cudaGraphAddNode(node, graph, deps, nullptr, num_deps, &p);
#else
  const cudaError_t e = cudaGraphAddNode(node, graph, deps, num_deps, &p);
#endif
  if (e == cudaSuccess) *body = p.conditional.phGraph_out[0];
  return e;
#else
  (void)node, (void)graph, (void)deps, (void)num_deps, (void)handle, (void)loop, (void)body;
  return cudaErrorNotSupported;
#endif
}

/// Begins a capture of `stream` into the existing `graph` with no initial
/// dependencies (cudaStreamBeginCaptureToGraph, 12.3+).
inline cudaError_t stream_begin_capture_to_graph(cudaStream_t stream, cudaGraph_t graph, cudaStreamCaptureMode mode) {
#if CUDART_VERSION >= 12030
  return cudaStreamBeginCaptureToGraph(stream, graph, nullptr, nullptr, 0, mode);
#else
  (void)stream, (void)graph, (void)mode;
  return cudaErrorNotSupported;
#endif
}

/// Whether `device`'s primary context is active (cuDevicePrimaryCtxGetState,
/// CUDA Driver API "Primary Context Management"), reached through the
/// runtime's driver entry point so that no driver library is linked
/// (cudaGetDriverEntryPointByVersion from 12.5, cudaGetDriverEntryPoint
/// before). True when it cannot be told, so that callers fall back to
/// touching the device as before. Makes no context current.
inline bool primary_context_active(int device) {
  static const PFN_cuDevicePrimaryCtxGetState_v7000 get_state = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t e =
        cudaGetDriverEntryPointByVersion("cuDevicePrimaryCtxGetState", &fn, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuDevicePrimaryCtxGetState", &fn, cudaEnableDefault, &found);
#endif
    if (e != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return PFN_cuDevicePrimaryCtxGetState_v7000{nullptr};
    }
    return reinterpret_cast<PFN_cuDevicePrimaryCtxGetState_v7000>(fn);
  }();
  if (get_state == nullptr) return true;
  unsigned int flags = 0;
  int active = 0;
  if (get_state(static_cast<CUdevice>(device), &flags, &active) != CUDA_SUCCESS) return true;
  return active != 0;
}

/// The host NUMA node closest to `device`, or -1: cudaDevAttrHostNumaId
/// exists from CUDA 12.2.
inline int host_numa_node(int device) {
#if CUDART_VERSION >= 12020
  int numa = -1;
  if (cudaDeviceGetAttribute(&numa, cudaDevAttrHostNumaId, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return numa;
#else
  (void)device;
  return -1;
#endif
}

}  // namespace stepgraph::runtime::cuda

/// Checks a CUDA runtime call; throws per Note [CUDA error classes].
#define STEPGRAPH_CUDA_CHECK(expr)                                                           \
  do {                                                                                       \
    const cudaError_t sg_cuda_err_ = (expr);                                                 \
    if (sg_cuda_err_ != cudaSuccess)                                                         \
      ::stepgraph::runtime::cuda::throw_cuda_error(sg_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

/// The twin for destructors and cleanup paths: logs instead of throwing.
#define STEPGRAPH_CUDA_CHECK_WARN(expr)                                                     \
  do {                                                                                      \
    const cudaError_t sg_cuda_err_ = (expr);                                                \
    if (sg_cuda_err_ != cudaSuccess)                                                        \
      ::stepgraph::runtime::cuda::warn_cuda_error(sg_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)
