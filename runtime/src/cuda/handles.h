// runtime/src/cuda/handles.h — move-only owners of CUDA runtime handles, and
// the device guard (STYLE.md "Resources": every native handle is owned by
// one move-only RAII type; guards cannot be copied or moved).
#pragma once

#include <utility>

#include "cuda_compat.h"

namespace stepgraph::runtime::cuda {

/// Owns one CUDA handle; `Destroy` releases it. Destruction never throws:
/// a failure is logged (STEPGRAPH_CUDA_CHECK_WARN).
template <class Handle, cudaError_t (*Destroy)(Handle)>
class UniqueHandle {
 public:
  UniqueHandle() = default;
  explicit UniqueHandle(Handle h) noexcept : h_(h) {}
  UniqueHandle(UniqueHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UniqueHandle& operator=(UniqueHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  UniqueHandle(const UniqueHandle&) = delete;
  UniqueHandle& operator=(const UniqueHandle&) = delete;
  ~UniqueHandle() { reset(); }

  [[nodiscard]] Handle get() const noexcept { return h_; }
  [[nodiscard]] explicit operator bool() const noexcept { return h_ != nullptr; }
  [[nodiscard]] Handle release() noexcept { return std::exchange(h_, nullptr); }
  void reset(Handle h = nullptr) noexcept {
    if (h_ != nullptr) STEPGRAPH_CUDA_CHECK_WARN(Destroy(h_));
    h_ = h;
  }

 private:
  Handle h_ = nullptr;
};

using UniqueStream = UniqueHandle<cudaStream_t, &cudaStreamDestroy>;
using UniqueEvent = UniqueHandle<cudaEvent_t, &cudaEventDestroy>;
using UniqueGraph = UniqueHandle<cudaGraph_t, &cudaGraphDestroy>;
using UniqueGraphExec = UniqueHandle<cudaGraphExec_t, &cudaGraphExecDestroy>;

/// Makes `device` current for the guard's scope and restores the previous
/// device after (cudaSetDevice is per host thread; CUDA Runtime API,
/// "Device Management"). Every call that enqueues on a stream or allocates
/// runs under one, so that an error names the right device. Cannot be copied
/// or moved.
///
/// The previous device is restored only if its primary context is active:
/// cudaGetDevice answers 0 on a thread that never chose a device, and since
/// CUDA 12.0 cudaSetDevice initialises the device's primary context, so
/// restoring 0 would give every process a context on device 0 (memory, and a
/// failure in exclusive-process mode) even when it uses only device 3. A
/// thread that never used CUDA is thus left on the guard's device, which is
/// what PyTorch's device guard does too (c10::cuda::MaybeSetDevice).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    int current = 0;
    STEPGRAPH_CUDA_CHECK(cudaGetDevice(&current));
    if (current == device) return;  // nothing to restore
    if (primary_context_active(current)) previous_ = current;
    STEPGRAPH_CUDA_CHECK(cudaSetDevice(device));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  DeviceGuard(DeviceGuard&&) = delete;
  DeviceGuard& operator=(DeviceGuard&&) = delete;
  ~DeviceGuard() {
    if (previous_ >= 0) STEPGRAPH_CUDA_CHECK_WARN(cudaSetDevice(previous_));
  }

 private:
  int previous_ = -1;
};

}  // namespace stepgraph::runtime::cuda
