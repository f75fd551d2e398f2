// Turning CUDA error codes into stepgraph's typed exceptions
// (Note [CUDA error classes] in cuda_compat.h).
#include <fmt/format.h>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>

#include "cuda_compat.h"

namespace stepgraph::runtime::cuda {

void FaultRegistry::record(int device, std::string message) {
  if (device < 0) return;
  std::lock_guard lock(mutex_);
  if (faults_.size() <= static_cast<std::size_t>(device)) faults_.resize(static_cast<std::size_t>(device) + 1);
  auto& slot = faults_[static_cast<std::size_t>(device)];
  if (!slot) slot = std::move(message);  // first error wins
  any_.store(true, std::memory_order_release);
}

std::optional<std::string> FaultRegistry::fault(int device) const {
  if (!any_.load(std::memory_order_acquire)) return std::nullopt;
  std::lock_guard lock(mutex_);
  if (device < 0 || static_cast<std::size_t>(device) >= faults_.size()) return std::nullopt;
  return faults_[static_cast<std::size_t>(device)];
}

void FaultRegistry::throw_if_faulted(int device, std::string_view call) const {
  if (auto f = fault(device)) {
    throw DeviceFault(
        fmt::format("{}: device {} has faulted earlier and CUDA faults are sticky for the whole "
                    "process ({}); no further work can run on it: report the failure and restart "
                    "the process",
                    call, device, *f));
  }
}

FaultRegistry& fault_registry() {
  static FaultRegistry registry;
  return registry;
}

std::string_view advice(cudaError_t e) noexcept {
  if (is_sticky(e))
    return "the device faulted (a kernel touched invalid memory, trapped or timed out); CUDA faults are sticky "
           "for the process: report the failing step and restart the process";
  if (is_capture_error(e))
    return "the call is not allowed while a stream capture is in progress (it invalidates the capture); move it "
           "before begin_capture or after end_capture, or use CaptureMode::kRelaxed for calls of other threads";
  switch (e) {
    case cudaErrorMemoryAllocation:
      return "out of memory: free buffers or allocate less (allocate everything before the warm-up)";
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInitializationError:
      return "no usable CUDA device or driver: use the host backend";
    case cudaErrorInvalidDevice:
      return "the device index does not exist: check Backend::device_count()";
    case cudaErrorHostMemoryAlreadyRegistered:
      return "this host memory is already registered: register each range once";
    case cudaErrorHostMemoryNotRegistered:
      return "this host memory was not registered: use Backend::register_host or allocate_pinned";
    case cudaErrorPeerAccessUnsupported:
      return "these two devices cannot access each other's memory: copy through Stream::copy instead";
    case cudaErrorInvalidResourceHandle:
      return "a stream, event or graph was used on another device than the one it was made for, or after it "
             "was destroyed";
    case cudaErrorInvalidDeviceFunction:
    case cudaErrorNoKernelImageForDevice:
      return "the kernel was not compiled for this GPU: rebuild with CMAKE_CUDA_ARCHITECTURES including this "
             "device's compute capability";
    case cudaErrorInvalidConfiguration:
      return "the launch dimensions or shared memory size are out of the device's limits: check LaunchDims";
    case cudaErrorGraphExecUpdateFailure:
      return "the graph's topology or node kinds changed: instantiate the new graph instead of updating";
    default:
      return "check the arguments of the call; set STEPGRAPH_LOG_LEVEL=debug for the calls leading to it";
  }
}

namespace {
std::string describe(cudaError_t e, const char* expr, const char* file, int line, int& device) {
  device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) device = -1;
  return fmt::format("{} failed on device {}: {} ({}, code {}) at {}:{}; {}", expr, device, cudaGetErrorName(e),
                     cudaGetErrorString(e), static_cast<int>(e), file, line, advice(e));
}
}  // namespace

void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  int device = -1;
  std::string msg = describe(e, expr, file, line, device);
  if (is_sticky(e)) {
    fault_registry().record(device, msg);
    throw DeviceFault(msg);
  }
  // Clear the runtime's last-error slot so that an unrelated later
  // cudaGetLastError does not report this error again (non-sticky errors
  // only; CUDA Runtime API "Error Handling").
  (void)cudaGetLastError();
  if (is_capture_error(e)) throw InvalidState(msg);
  throw CudaError(msg, static_cast<int>(e));
}

void warn_cuda_error(cudaError_t e, const char* expr, const char* file, int line) noexcept {
  try {
    int device = -1;
    std::string msg = describe(e, expr, file, line, device);
    if (is_sticky(e))
      fault_registry().record(device, msg);
    else
      (void)cudaGetLastError();
    STEPGRAPH_WARN(kRuntime, "{}", msg);
  } catch (...) {
    // A cleanup path must not throw (formatting or logging failed).
  }
}

}  // namespace stepgraph::runtime::cuda
