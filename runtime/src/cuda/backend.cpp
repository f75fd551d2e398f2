// The cuda backend: devices, memory, events and the entry points
// (make_cuda_backend, cuda_device_present). Streams and capture live in
// stream.cpp, graphs in graph.cpp. docs/runtime-cuda.md maps each call to
// the CUDA runtime API.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include <stepgraph/core/log.h>
#include <stepgraph/topology/live.h>

#include "internal.h"

namespace stepgraph::runtime {

bool Backend::cuda_compiled() noexcept {
  return true;
}

namespace detail {

bool cuda_device_present(std::string* reason) {
  // cudaGetDeviceCount is the documented probe: on a machine without a GPU
  // or without a driver it returns cudaErrorNoDevice /
  // cudaErrorInsufficientDriver instead of failing hard (CUDA Runtime API,
  // "Device Management").
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
    if (reason != nullptr) {
      *reason = fmt::format("cudaGetDeviceCount failed: {} ({})", cudaGetErrorName(e), cudaGetErrorString(e));
      // A driver is installed but older than this build's runtime: not a
      // machine without GPU, a machine to fix (test_cuda_driver fails on it).
      if (e == cudaErrorInsufficientDriver && driver > 0)
        *reason += fmt::format("; the driver supports CUDA {}.{} and this build needs CUDA {}.{}: update the driver",
                               driver / 1000, driver % 1000 / 10, CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    }
    return false;
  }
  if (count <= 0) {
    if (reason != nullptr) *reason = "cudaGetDeviceCount reports no CUDA device";
    return false;
  }
  return true;
}

std::shared_ptr<BackendImpl> make_cuda_backend(const BackendOptions& options) {
  return std::make_shared<cuda::CudaBackend>(options);
}

}  // namespace detail

namespace cuda {

CudaStream& as_cuda(detail::StreamImpl& stream, std::string_view call) {
  auto* s = dynamic_cast<CudaStream*>(&stream);
  STEPGRAPH_CHECK(s != nullptr, InvalidArgument,
                  "{}: the stream belongs to another backend; use a stream made by the cuda backend", call);
  return *s;
}

NodeKind node_kind(cudaGraphNodeType type) noexcept {
  switch (type) {
    case cudaGraphNodeTypeKernel:
      return NodeKind::kKernel;
    case cudaGraphNodeTypeMemcpy:
      return NodeKind::kMemcpy;
    case cudaGraphNodeTypeMemset:
      return NodeKind::kMemset;
    case cudaGraphNodeTypeHost:
      return NodeKind::kHost;
    case cudaGraphNodeTypeEmpty:
      return NodeKind::kEmpty;
    case cudaGraphNodeTypeWaitEvent:
      return NodeKind::kEventWait;
    case cudaGraphNodeTypeEventRecord:
      return NodeKind::kEventRecord;
    default:
      return is_conditional_node(type) ? NodeKind::kConditional : NodeKind::kOther;
  }
}

namespace {

/// The NUMA node of a PCI device from sysfs, when CUDA does not know it.
int sysfs_numa_node(const std::string& pci_bus_id) {
  std::string id = pci_bus_id;
  std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::ifstream in("/sys/bus/pci/devices/" + id + "/numa_node");
  int node = -1;
  if (!(in >> node)) return -1;
  return node;
}

DeviceInfo query_device(int index) {
  DeviceInfo info;
  info.index = index;
  info.backend = BackendKind::kCuda;
  cudaDeviceProp prop{};
  STEPGRAPH_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  info.name = prop.name;
  info.memory_bytes = prop.totalGlobalMem;
  info.compute_capability = prop.major * 10 + prop.minor;
  char bus[32] = {};
  STEPGRAPH_CUDA_CHECK(cudaDeviceGetPCIBusId(bus, static_cast<int>(sizeof(bus)), index));
  info.pci_bus_id = bus;
  info.numa_node = host_numa_node(index);
  if (info.numa_node < 0) info.numa_node = sysfs_numa_node(info.pci_bus_id);
  if (info.numa_node >= 0) {
    try {
      info.cpus = topology::LiveMachine::get().numa_node(info.numa_node).cpus;
    } catch (const std::exception& ex) {
      STEPGRAPH_DEBUG(kRuntime, "device {}: no cpus for NUMA node {}: {}", index, info.numa_node, ex.what());
    }
  }
  return info;
}

CaptureMode from_cuda(cudaStreamCaptureMode mode) {
  switch (mode) {
    case cudaStreamCaptureModeGlobal:
      return CaptureMode::kGlobal;
    case cudaStreamCaptureModeThreadLocal:
      return CaptureMode::kThreadLocal;
    case cudaStreamCaptureModeRelaxed:
      return CaptureMode::kRelaxed;
  }
  return CaptureMode::kGlobal;
}

// Mapped + portable: the memory is page-locked for every device's context
// and mapped into the unified address space, so kernels read and write it
// in place (CUDA Runtime API, "Memory Management", cudaHostRegister /
// cudaHostAlloc; DESIGN 1.2).
bool topology_has_numa_node(const topology::LiveMachine& live, int os_index) {
  const auto& nodes = live.numa_nodes();
  return std::any_of(nodes.begin(), nodes.end(), [&](const auto& n) { return n.os_index == os_index; });
}

constexpr unsigned kRegisterFlags = cudaHostRegisterMapped | cudaHostRegisterPortable;
constexpr unsigned kHostAllocFlags = cudaHostAllocMapped | cudaHostAllocPortable;

}  // namespace

// ---------------------------------------------------------------- backend

CudaBackend::CudaBackend(const BackendOptions& /*options*/) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count <= 0) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format("the cuda backend found no CUDA device ({}); use the host backend",
                                   e != cudaSuccess ? cudaGetErrorString(e) : "device count is 0"));
  }
  // Only queries that need no context here (device properties, PCI bus id,
  // attributes): a device's primary context is made when the process first
  // uses that device (a stream, an allocation), so that a process using one
  // GPU of eight holds one context, not eight (e.g. one rank per GPU under
  // mpirun; exclusive-process mode refuses a second process's context).
  devices_.reserve(static_cast<std::size_t>(count));
  for (int d = 0; d < count; ++d) devices_.push_back(query_device(d));
  priority_range_ = std::vector<PriorityRange>(static_cast<std::size_t>(count));
  for (int d = 0; d < count; ++d) legacy_streams_.push_back(std::make_unique<CudaStream>(*this, d));
  upload_streams_.resize(static_cast<std::size_t>(count));
  STEPGRAPH_INFO(kRuntime, "cuda backend: {} device(s), first '{}' (sm_{})", count, devices_[0].name,
                 devices_[0].compute_capability);
}

CudaBackend::~CudaBackend() {
  for (std::size_t d = 0; d < upload_streams_.size(); ++d) {
    if (!upload_streams_[d]) continue;
    try {
      DeviceGuard guard(static_cast<int>(d));
      upload_streams_[d].reset();
    } catch (const std::exception& ex) {
      STEPGRAPH_WARN(kRuntime, "cuda backend teardown: {}", ex.what());
    }
  }
}

void CudaBackend::throw_if_faulted(int device, std::string_view call) const {
  fault_registry().throw_if_faulted(device, call);
}

int CudaBackend::cuda_priority(int device, int priority) const {
  // CUDA: lower numbers are higher priorities, in [greatest, least]
  // (cudaDeviceGetStreamPriorityRange, typically [-5, 0]); ours: larger is
  // higher, 0 is the default, so 0 maps to CUDA's default `least`.
  auto& range = priority_range_.at(static_cast<std::size_t>(device));
  // Asked for on the device's first stream or prioritised launch, which make
  // its context anyway (cudaDeviceGetStreamPriorityRange needs one).
  std::call_once(range.once, [&] {
    DeviceGuard guard(device);
    STEPGRAPH_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&range.least, &range.greatest));
  });
  const int least = range.least;
  const int greatest = range.greatest;
  const long long p = static_cast<long long>(least) - priority;
  return static_cast<int>(std::clamp<long long>(p, greatest, least));
}

cudaStream_t CudaBackend::upload_stream(int device) {
  std::lock_guard lock(upload_mutex_);
  auto& s = upload_streams_.at(static_cast<std::size_t>(device));
  if (!s) {
    DeviceGuard guard(device);
    cudaStream_t raw = nullptr;
    STEPGRAPH_CUDA_CHECK(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking));
    s.reset(raw);
  }
  return s.get();
}

std::shared_ptr<detail::BufferImpl> CudaBackend::allocate(int device, std::size_t bytes) {
  throw_if_faulted(device, "Backend::allocate");
  DeviceGuard guard(device);
  void* ptr = nullptr;
  const cudaError_t e = cudaMalloc(&ptr, bytes);
  if (e != cudaSuccess) {
    if (is_capture_error(e)) invalidate_prohibiting_captures();
    throw_cuda_error(e, "cudaMalloc(&ptr, bytes)", __FILE__, __LINE__);
  }
  auto b = std::make_shared<detail::BufferImpl>();
  b->id = next_buffer_id();
  b->kind = MemoryKind::kDevice;
  b->device = device;
  b->size = bytes;
  b->device_ptr = ptr;
  b->backend = this;
  b->keep_backend = shared_from_this();
  b->release = [ptr, device] {
    try {
      DeviceGuard g(device);
      STEPGRAPH_CUDA_CHECK_WARN(cudaFree(ptr));
    } catch (const std::exception& ex) {
      STEPGRAPH_WARN(kMemory, "freeing device memory of device {}: {}", device, ex.what());
    }
  };
  STEPGRAPH_DEBUG(kMemory, "cudaMalloc {} bytes on device {} -> buffer #{}", bytes, device, b->id);
  return b;
}

int CudaBackend::host_memory_device() const {
  // Portable page-locked memory is pinned for every context, so any device
  // with a context will do; making one on a device the process does not use
  // is what must not happen (Note in DeviceGuard).
  int current = 0;
  STEPGRAPH_CUDA_CHECK(cudaGetDevice(&current));
  if (primary_context_active(current)) return current;
  for (int d = 0; d < device_count(); ++d)
    if (primary_context_active(d)) return d;
  return current;  // no context yet: CUDA's own default
}

std::shared_ptr<detail::BufferImpl> CudaBackend::allocate_pinned(std::size_t bytes, int numa_node) {
  const int device = host_memory_device();
  throw_if_faulted(device, "Backend::allocate_pinned");
  DeviceGuard guard(device);
  auto b = std::make_shared<detail::BufferImpl>();
  b->id = next_buffer_id();
  b->kind = MemoryKind::kPinnedHost;
  b->device = -1;
  b->size = bytes;
  b->backend = this;
  b->keep_backend = shared_from_this();

  // Preferred: memory bound to the NUMA node by hwloc, then registered
  // (DESIGN 1.2: pinned buffers live on the node closest to their GPU).
  // cudaHostAlloc cannot choose a node, so it is only the fallback when
  // hwloc cannot load this machine or does not see the node.
  const topology::LiveMachine* live = nullptr;
  try {
    live = &topology::LiveMachine::get();
  } catch (const HwlocError& ex) {
    STEPGRAPH_WARN(kMemory, "allocate_pinned: hwloc is unavailable ({}); using cudaHostAlloc without NUMA placement",
                   ex.what());
  }
  int node = numa_node;
  if (live != nullptr) {
    if (node < 0) node = live->numa_nodes().empty() ? 0 : live->numa_nodes().front().os_index;
    // The node asked for (often a GPU's, from CUDA or sysfs) may be missing
    // from the topology hwloc sees: a cgroup or cpuset filters it out. Then
    // there is nothing to bind to; the memory is still pinned, unplaced.
    if (!topology_has_numa_node(*live, node)) {
      STEPGRAPH_WARN(kMemory,
                     "allocate_pinned: NUMA node {} is not in this process's topology (filtered by a cgroup or "
                     "cpuset?); using cudaHostAlloc without NUMA placement",
                     node);
      live = nullptr;
    }
  }
  if (live != nullptr) {
    void* host = live->allocate_on_node(bytes, node);
    const cudaError_t e = cudaHostRegister(host, bytes, kRegisterFlags);
    if (e != cudaSuccess) {
      live->free_on_node(host, bytes);
      if (is_capture_error(e)) invalidate_prohibiting_captures();
      throw_cuda_error(e, "cudaHostRegister(host, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable)", __FILE__,
                       __LINE__);
    }
    void* dev = nullptr;
    const cudaError_t e2 = cudaHostGetDevicePointer(&dev, host, 0);
    if (e2 != cudaSuccess) {
      STEPGRAPH_CUDA_CHECK_WARN(cudaHostUnregister(host));
      live->free_on_node(host, bytes);
      throw_cuda_error(e2, "cudaHostGetDevicePointer(&dev, host, 0)", __FILE__, __LINE__);
    }
    b->host_ptr = host;
    b->device_ptr = dev;
    b->release = [host, bytes, live] {
      STEPGRAPH_CUDA_CHECK_WARN(cudaHostUnregister(host));
      live->free_on_node(host, bytes);
    };
  } else {
    void* host = nullptr;
    const cudaError_t e = cudaHostAlloc(&host, bytes, kHostAllocFlags);
    if (e != cudaSuccess) {
      if (is_capture_error(e)) invalidate_prohibiting_captures();
      throw_cuda_error(e, "cudaHostAlloc(&host, bytes, cudaHostAllocMapped | cudaHostAllocPortable)", __FILE__,
                       __LINE__);
    }
    void* dev = nullptr;
    const cudaError_t e2 = cudaHostGetDevicePointer(&dev, host, 0);
    if (e2 != cudaSuccess) {
      STEPGRAPH_CUDA_CHECK_WARN(cudaFreeHost(host));
      throw_cuda_error(e2, "cudaHostGetDevicePointer(&dev, host, 0)", __FILE__, __LINE__);
    }
    b->host_ptr = host;
    b->device_ptr = dev;
    b->release = [host] { STEPGRAPH_CUDA_CHECK_WARN(cudaFreeHost(host)); };
  }
  STEPGRAPH_DEBUG(kMemory, "pinned {} bytes (NUMA node {}) -> buffer #{}", bytes, live != nullptr ? node : -1, b->id);
  return b;
}

std::shared_ptr<detail::BufferImpl> CudaBackend::register_host(void* ptr, std::size_t bytes) {
  const int device = host_memory_device();
  throw_if_faulted(device, "Backend::register_host");
  DeviceGuard guard(device);
  const cudaError_t reg = cudaHostRegister(ptr, bytes, kRegisterFlags);
  if (reg != cudaSuccess) {
    if (is_capture_error(reg)) invalidate_prohibiting_captures();
    throw_cuda_error(reg, "cudaHostRegister(ptr, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable)", __FILE__,
                     __LINE__);
  }
  void* dev = nullptr;
  const cudaError_t e = cudaHostGetDevicePointer(&dev, ptr, 0);
  if (e != cudaSuccess) {
    STEPGRAPH_CUDA_CHECK_WARN(cudaHostUnregister(ptr));
    throw_cuda_error(e, "cudaHostGetDevicePointer(&dev, ptr, 0)", __FILE__, __LINE__);
  }
  auto b = std::make_shared<detail::BufferImpl>();
  b->id = next_buffer_id();
  b->kind = MemoryKind::kPinnedHost;
  b->device = -1;
  b->size = bytes;
  b->host_ptr = ptr;
  b->device_ptr = dev;
  b->backend = this;
  b->keep_backend = shared_from_this();
  b->release = [ptr] { STEPGRAPH_CUDA_CHECK_WARN(cudaHostUnregister(ptr)); };
  return b;
}

void CudaBackend::enable_peer_access(int device, int peer) {
  if (device == peer) return;
  throw_if_faulted(device, "Backend::enable_peer_access");
  throw_if_faulted(peer, "Backend::enable_peer_access");
  int can = 0;
  STEPGRAPH_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, device, peer));
  STEPGRAPH_CHECK(can != 0, InvalidArgument,
                  "Backend::enable_peer_access({}, {}): device {} cannot access device {}'s memory "
                  "(cudaDeviceCanAccessPeer is 0 on this machine); move the data with Stream::copy instead",
                  device, peer, device, peer);
  DeviceGuard guard(device);
  // Enabling is per (current device -> peer) and fails with
  // cudaErrorPeerAccessAlreadyEnabled when repeated, which is harmless
  // (CUDA Runtime API, "Peer Device Memory Access").
  const cudaError_t e = cudaDeviceEnablePeerAccess(peer, 0);
  if (e == cudaErrorPeerAccessAlreadyEnabled)
    (void)cudaGetLastError();
  else if (e != cudaSuccess)
    throw_cuda_error(e, "cudaDeviceEnablePeerAccess(peer, 0)", __FILE__, __LINE__);
  set_peer_enabled(device, peer);
}

std::unique_ptr<detail::StreamImpl> CudaBackend::create_stream(int device, const StreamOptions& options) {
  throw_if_faulted(device, "Backend::create_stream");
  return std::make_unique<CudaStream>(*this, device, cuda_priority(device, options.priority));
}

std::unique_ptr<detail::EventImpl> CudaBackend::create_event(int device) {
  throw_if_faulted(device, "Backend::create_event");
  return std::make_unique<CudaEvent>(*this, device);
}

detail::StreamImpl* CudaBackend::legacy_default_stream(int device) {
  return legacy_streams_.at(static_cast<std::size_t>(device)).get();
}

void CudaBackend::synchronize_device(int device) {
  detail::SyncCounters::bump(sync_counters().device_synchronize);
  throw_if_faulted(device, "Backend::synchronize_device");
  DeviceGuard guard(device);
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    if (is_capture_error(e)) invalidate_prohibiting_captures();
    throw_cuda_error(e, "cudaDeviceSynchronize()", __FILE__, __LINE__);
  }
}

std::optional<std::uint64_t> CudaBackend::memory_in_use(int device) const {
  // A metrics scrape asks from its own thread: never on a faulted device
  // (every call would fail), never making a context on an unused one.
  if (fault_registry().fault(device) || !primary_context_active(device)) return std::nullopt;
  DeviceGuard guard(device);
  std::size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) return std::nullopt;
  return static_cast<std::uint64_t>(total - free);
}

std::optional<std::string> CudaBackend::device_fault(int device) const {
  if (auto f = fault_registry().fault(device)) return f;
  // A device without a context has run nothing, so it cannot have faulted;
  // asking through a guard would make it a context.
  if (!primary_context_active(device)) return std::nullopt;
  // A sticky error another call already reported to the runtime but that no
  // stepgraph call has seen yet: cudaPeekAtLastError reads it without
  // enqueueing anything, so this is safe during capture.
  try {
    DeviceGuard guard(device);
    const cudaError_t e = cudaPeekAtLastError();
    if (is_sticky(e)) {
      fault_registry().record(
          device, fmt::format("device {} faulted: {} ({})", device, cudaGetErrorName(e), cudaGetErrorString(e)));
    }
  } catch (const DeviceFault&) {
    // The guard itself met the fault and recorded it.
  }
  return fault_registry().fault(device);
}

CaptureMode CudaBackend::exchange_thread_capture_mode(CaptureMode mode) {
  cudaStreamCaptureMode m = to_cuda(mode);
  STEPGRAPH_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&m));
  return from_cuda(m);
}

std::shared_ptr<CaptureRecord> CudaBackend::open_capture(unsigned long long id, int device, cudaStream_t origin,
                                                         CaptureMode mode) {
  auto rec = std::make_shared<CaptureRecord>();
  rec->id = id;
  rec->device = device;
  rec->origin = origin;
  rec->mode = mode;
  rec->owner = std::this_thread::get_id();
  std::lock_guard lock(capture_mutex_);
  captures_[id] = rec;
  return rec;
}

void CudaBackend::invalidate_capture(unsigned long long id) const {
  auto rec = find_capture(id);
  if (rec == nullptr) return;
  const cudaError_t e = cudaStreamQuery(rec->origin);
  if (e != cudaSuccess && !is_sticky(e)) (void)cudaGetLastError();
}

void CudaBackend::invalidate_prohibiting_captures() const {
  // cudaThreadExchangeStreamCaptureMode (CUDA Runtime API, "Stream
  // Management"): the calling thread's own mode decides. Global: prohibited
  // by this thread's own captures not begun relaxed, and by other threads'
  // global captures. ThreadLocal: by this thread's own non-relaxed captures
  // only. Relaxed: by nothing. The mode is read by exchanging it twice.
  cudaStreamCaptureMode mine = cudaStreamCaptureModeRelaxed;
  if (cudaThreadExchangeStreamCaptureMode(&mine) != cudaSuccess) {
    (void)cudaGetLastError();
    return;
  }
  cudaStreamCaptureMode restore = mine;
  STEPGRAPH_CUDA_CHECK_WARN(cudaThreadExchangeStreamCaptureMode(&restore));
  if (mine == cudaStreamCaptureModeRelaxed) return;
  std::vector<unsigned long long> ids;
  {
    std::lock_guard lock(capture_mutex_);
    const auto self = std::this_thread::get_id();
    for (const auto& [id, rec] : captures_) {
      const bool own = rec->owner == self && rec->mode != CaptureMode::kRelaxed;
      const bool other_global =
          rec->owner != self && mine == cudaStreamCaptureModeGlobal && rec->mode == CaptureMode::kGlobal;
      if (own || other_global) ids.push_back(id);
    }
  }
  for (auto id : ids) invalidate_capture(id);
}

std::shared_ptr<CaptureRecord> CudaBackend::find_capture(unsigned long long id) const {
  std::lock_guard lock(capture_mutex_);
  auto it = captures_.find(id);
  return it == captures_.end() ? nullptr : it->second;
}

std::shared_ptr<CaptureRecord> CudaBackend::close_capture(unsigned long long id) {
  std::lock_guard lock(capture_mutex_);
  auto it = captures_.find(id);
  if (it == captures_.end()) return nullptr;
  auto rec = std::move(it->second);
  captures_.erase(it);
  return rec;
}

// ---------------------------------------------------------------- events

// Note [Events recorded in a finished capture]
// An event whose latest record was made by a capturing stream stays a
// "captured event" after the capture ends: the record is part of the graph,
// not work of any stream, and CUDA answers cudaErrorCapturedEvent ("not
// permitted on an event which was last recorded in a capturing stream") to a
// query, synchronize or wait on it. The interface makes that a typed
// InvalidState on both backends, refused before CUDA is called (so it does
// not depend on the driver), until the event is recorded again outside
// capture. Inside another capture such a wait is the isolation error
// (Stream::wait), which also invalidates that capture.
void throw_captured_event(std::string_view call, int device) {
  throw InvalidState(fmt::format(
      "{} on device {}: the event was last recorded by a stream capture that has ended (cudaErrorCapturedEvent): "
      "that record belongs to the captured graph, not to any stream's work, so there is nothing to query or wait "
      "for; record the event again outside capture (e.g. on the stream after launching the graph)",
      call, device));
}

CudaEvent::CudaEvent(CudaBackend& backend, int device) : backend_(&backend), device_(device) {
  DeviceGuard guard(device);
  // Timing stays enabled (no cudaEventDisableTiming) because
  // Event::elapsed_ms must work on every event; no cudaEventBlockingSync, so
  // synchronize() spin-waits for the lowest wake-up latency (CUDA Runtime
  // API, "Event Management", cudaEventCreateWithFlags).
  cudaEvent_t e = nullptr;
  STEPGRAPH_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));
  event_.reset(e);
}

void CudaEvent::refuse_if_captured(std::string_view call) const {
  const unsigned long long id = last_capture_.load();
  if (id == 0) return;
  if (backend_->find_capture(id) == nullptr) throw_captured_event(call, device_);
  backend_->invalidate_capture(id);
  throw InvalidState(fmt::format(
      "{} on device {}: the event was last recorded by a stream capture in progress, whose work does not run "
      "until the graph is launched; the capture is now invalidated: end it (it yields no graph), and query or "
      "wait for the event after a launch of the graph",
      call, device_));
}

bool CudaEvent::query() {
  detail::SyncCounters::bump(backend_->sync_counters().event_query);
  backend_->sync_counters().waited_on(waited_);
  backend_->throw_if_faulted(device_, "Event::query");
  refuse_if_captured("Event::query");
  DeviceGuard guard(device_);
  const cudaError_t e = cudaEventQuery(event_.get());
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  if (is_capture_error(e)) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format(
        "Event::query on device {}: the event was last recorded by a stream capture in progress ({}); captured "
        "work does not run until the graph is launched: query the event after end_capture and a launch",
        device_, cudaGetErrorName(e)));
  }
  throw_cuda_error(e, "cudaEventQuery(event)", __FILE__, __LINE__);
}

void CudaEvent::synchronize() {
  detail::SyncCounters::bump(backend_->sync_counters().event_synchronize);
  backend_->sync_counters().waited_on(waited_);
  backend_->throw_if_faulted(device_, "Event::synchronize");
  refuse_if_captured("Event::synchronize");
  DeviceGuard guard(device_);
  const cudaError_t e = cudaEventSynchronize(event_.get());
  if (e == cudaSuccess) return;
  if (is_capture_error(e)) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format(
        "Event::synchronize on device {}: the event was last recorded by a stream capture in progress ({}); "
        "captured work does not run until the graph is launched: wait after end_capture and a launch",
        device_, cudaGetErrorName(e)));
  }
  throw_cuda_error(e, "cudaEventSynchronize(event)", __FILE__, __LINE__);
}

bool CudaEvent::wait_for(std::chrono::nanoseconds timeout) {
  detail::SyncCounters::bump(backend_->sync_counters().event_wait_for);
  backend_->sync_counters().waited_on(waited_);
  // Polls cudaEventQuery with exponential backoff (a few yields, then sleeps
  // from 2 us doubling to 1 ms): cudaEventSynchronize has no timeout.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::chrono::microseconds backoff{1};
  for (int polls = 0;; ++polls) {
    if (query()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    if (polls < 8) {
      std::this_thread::yield();
      continue;
    }
    backoff = std::min(backoff * 2, std::chrono::microseconds{1000});
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
        backoff, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now)));
  }
}

float CudaEvent::elapsed_ms(const detail::EventImpl& end_impl) const {
  const auto* end = dynamic_cast<const CudaEvent*>(&end_impl);
  STEPGRAPH_CHECK(end != nullptr, InvalidArgument,
                  "Event::elapsed_ms: the end event belongs to another backend; use two events of the cuda backend");
  backend_->throw_if_faulted(device_, "Event::elapsed_ms");
  refuse_if_captured("Event::elapsed_ms (start)");
  end->refuse_if_captured("Event::elapsed_ms (end)");
  DeviceGuard guard(device_);
  float ms = 0.0F;
  const cudaError_t e = cudaEventElapsedTime(&ms, event_.get(), end->event_.get());
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError();
    throw InvalidState(
        fmt::format("Event::elapsed_ms on device {}: an event has not completed yet; synchronize "
                    "the end event first",
                    device_));
  }
  if (e != cudaSuccess) throw_cuda_error(e, "cudaEventElapsedTime(&ms, start, end)", __FILE__, __LINE__);
  return ms;
}

}  // namespace cuda
}  // namespace stepgraph::runtime
