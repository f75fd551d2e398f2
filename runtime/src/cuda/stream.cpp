// cuda streams: annotated launches, copies, memsets, host functions, events,
// and stream capture with the node↔annotation map.
//
// Note [Annotating captured nodes]
// CUDA records a captured kernel as an anonymous node. Right after each
// operation enqueued on a capturing stream, the stream's capture
// dependencies (cudaStreamGetCaptureInfo, dependencies_out: "the next node
// to be captured in the stream will depend on this set of nodes") are
// exactly the nodes that operation added; each not yet annotated gets the
// operation's name, kind, device, declared accesses and copy parameters.
// Operations that add no node (event record / wait, the join of a fork)
// leave dependencies that are already annotated, so nothing is relabelled.
// Enqueue and annotate hold the stream's enqueue mutex, so two threads
// enqueueing on one stream cannot swap each other's labels.
#include <fmt/format.h>

#include <stepgraph/core/log.h>

#include "../deferred_release.h"
#include "internal.h"

namespace stepgraph::runtime::cuda {

namespace {

/// The host function trampoline (cudaHostFn_t). It must not throw into the
/// driver: an exception becomes a fault of the stream's device, reported by
/// the next call on that device (DESIGN 2.5, faults are sticky), since the
/// driver offers no way to fail the stream from a host function.
void CUDART_CB run_host_fn(void* data) {
  auto* box = static_cast<HostFnBox*>(data);
  try {
    box->fn();
  } catch (const std::exception& ex) {
    const std::string msg = fmt::format("host function '{}' on device {} threw: {}", box->name, box->device, ex.what());
    STEPGRAPH_LOG(kError, kRuntime, "{}", msg);
    fault_registry().record(box->device, msg);
  } catch (...) {
    const std::string msg =
        fmt::format("host function '{}' on device {} threw a non-standard exception", box->name, box->device);
    STEPGRAPH_LOG(kError, kRuntime, "{}", msg);
    fault_registry().record(box->device, msg);
  }
  // Not deleted here: the closure's destructor may release a Buffer, Event
  // or GraphExec, i.e. call CUDA, which a host function must not do
  // (cudaLaunchHostFunc); the release thread destroys it (Note [Deferred
  // release]). Handing over makes no CUDA call.
  if (box->delete_after_call) detail::release_when(std::shared_ptr<HostFnBox>(box), {});
}

const CudaEvent& as_cuda_event(const detail::EventImpl& event, std::string_view call) {
  const auto* e = dynamic_cast<const CudaEvent*>(&event);
  STEPGRAPH_CHECK(e != nullptr, InvalidArgument,
                  "{}: the event belongs to another backend; use an event made by the cuda backend", call);
  return *e;
}

CudaEvent& as_cuda_event(detail::EventImpl& event, std::string_view call) {
  auto* e = dynamic_cast<CudaEvent*>(&event);
  STEPGRAPH_CHECK(e != nullptr, InvalidArgument,
                  "{}: the event belongs to another backend; use an event made by the cuda backend", call);
  return *e;
}

KeepAlive keep_buffers(const std::vector<BufferAccess>& accesses) {
  KeepAlive keep;
  keep.buffers.reserve(accesses.size());
  for (const auto& a : accesses) keep.buffers.push_back(a.buffer);
  return keep;
}

/// The address of a slice as the copy engine sees it: the host address of
/// pinned memory, the device address otherwise.
void* host_or_device_ptr(const BufferSlice& s) {
  const auto& b = *s.buffer;
  char* base = static_cast<char*>(b.kind == MemoryKind::kPinnedHost ? b.host_ptr : b.device_ptr);
  return base + s.offset;
}

void* device_ptr(const BufferSlice& s) {
  return static_cast<char*>(s.buffer->device_ptr) + s.offset;
}

}  // namespace

cudaStreamCaptureMode to_cuda(CaptureMode mode) noexcept {
  switch (mode) {
    case CaptureMode::kGlobal:
      return cudaStreamCaptureModeGlobal;
    case CaptureMode::kThreadLocal:
      return cudaStreamCaptureModeThreadLocal;
    case CaptureMode::kRelaxed:
      return cudaStreamCaptureModeRelaxed;
  }
  return cudaStreamCaptureModeThreadLocal;
}

// ---------------------------------------------------------------- life cycle

CudaStream::CudaStream(CudaBackend& backend, int device, int cuda_priority) : backend_(&backend), device_(device) {
  DeviceGuard guard(device);
  // Non-blocking: no implicit synchronisation with the legacy default
  // stream, whose use elsewhere in the process would otherwise break a
  // capture (CUDA Programming Guide, "Stream Capture" > "Cross-stream
  // Dependencies"; DESIGN 1.1 capture hygiene).
  cudaStream_t s = nullptr;
  STEPGRAPH_CUDA_CHECK(cudaStreamCreateWithPriority(&s, cudaStreamNonBlocking, cuda_priority));
  owned_.reset(s);
  stream_ = s;
}

CudaStream::CudaStream(CudaBackend& backend, int device)
    : backend_(&backend), device_(device), stream_(cudaStreamLegacy), legacy_(true) {}

CudaStream::~CudaStream() {
  try {
    DeviceGuard guard(device_);
    if (origin_capture_) {
      // Destroyed mid-capture: end it so the capture's record and graph are
      // not leaked (a capturing stream cannot be destroyed cleanly).
      cudaGraph_t g = nullptr;
      STEPGRAPH_CUDA_CHECK_WARN(cudaStreamEndCapture(stream_, &g));
      if (g != nullptr) STEPGRAPH_CUDA_CHECK_WARN(cudaGraphDestroy(g));
      (void)backend_->close_capture(*origin_capture_);
    }
    owned_.reset();
  } catch (const std::exception& ex) {
    STEPGRAPH_WARN(kRuntime, "destroying a stream of device {}: {}", device_, ex.what());
  }
}

void CudaStream::check_usable(std::string_view call) const {
  backend_->throw_if_faulted(device_, call);
}

// ---------------------------------------------------------------- capture helpers

CudaStream::CaptureState CudaStream::capture_state() const {
  CaptureState st;
  STEPGRAPH_CUDA_CHECK(stream_get_capture_info(stream_, &st.status, &st.id, nullptr, nullptr, nullptr));
  return st;
}

std::shared_ptr<CaptureRecord> CudaStream::captured_nodes(std::vector<cudaGraphNode_t>& nodes) const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  const cudaGraphNode_t* deps = nullptr;
  std::size_t n = 0;
  STEPGRAPH_CUDA_CHECK(stream_get_capture_info(stream_, &status, &id, nullptr, &deps, &n));
  if (status != cudaStreamCaptureStatusActive) return nullptr;
  auto rec = backend_->find_capture(id);
  if (rec == nullptr) {
    STEPGRAPH_WARN(kCapture,
                   "stream of device {} captures into capture {} that stepgraph did not begin; its "
                   "nodes stay unnamed",
                   device_, id);
    return nullptr;
  }
  nodes.assign(deps, deps + n);
  return rec;
}

void CudaStream::annotate(CaptureRecord& record, const std::vector<cudaGraphNode_t>& nodes, const NodeMeta& meta,
                          KeepAlive keep) {
  std::lock_guard lock(record.mutex);
  for (cudaGraphNode_t node : nodes) {
    if (record.nodes.contains(node)) continue;
    NodeMeta m = meta;
    m.seq = record.next_seq++;
    record.nodes.emplace(node, std::move(m));
  }
  auto& k = *record.keep;
  k.buffers.insert(k.buffers.end(), keep.buffers.begin(), keep.buffers.end());
  k.host_fns.insert(k.host_fns.end(), keep.host_fns.begin(), keep.host_fns.end());
  k.children.insert(k.children.end(), keep.children.begin(), keep.children.end());
}

// ---------------------------------------------------------------- work

void CudaStream::launch_kernel(KernelParams&& p) {
  check_usable(p.name);
  STEPGRAPH_CHECK(p.device_fn != nullptr, InvalidArgument,
                  "launch '{}' on device {}: the kernel has no device function (Kernel::device is null); compile "
                  "its __global__ version in a .cu file and set Kernel::device, or run it on the host backend",
                  p.name, device_);
  backend_->resolve_accesses(device_, p.name, p.accesses);

  // cudaLaunchKernelExC takes the arguments as an array of pointers to
  // by-value copies (KernelParams::args into arg_storage) and launch
  // attributes; a non-default priority becomes cudaLaunchAttributePriority,
  // which a captured kernel node keeps and cudaGraphInstantiateFlagUseNodePriority
  // honours (CUDA Runtime API, "Execution Control"; "Graph Management").
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(p.dims.grid[0], p.dims.grid[1], p.dims.grid[2]);
  cfg.blockDim = dim3(p.dims.block[0], p.dims.block[1], p.dims.block[2]);
  cfg.dynamicSmemBytes = p.dims.shared_bytes;
  cfg.stream = stream_;
  cudaLaunchAttribute attr[1] = {};
  if (p.priority != 0) {
    attr[0].id = cudaLaunchAttributePriority;
    attr[0].val.priority = backend_->cuda_priority(device_, p.priority);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }

  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  STEPGRAPH_CUDA_CHECK(cudaLaunchKernelExC(&cfg, p.device_fn, p.args.data()));
  std::vector<cudaGraphNode_t> nodes;
  if (auto rec = captured_nodes(nodes)) {
    NodeMeta meta;
    meta.name = p.name;
    meta.kind = NodeKind::kKernel;
    meta.device = device_;
    meta.accesses = detail::access_infos(p.accesses);
    meta.priority = p.priority;
    annotate(*rec, nodes, meta, keep_buffers(p.accesses));
  }
}

void CudaStream::copy(const BufferSlice& dst, const BufferSlice& src, std::string name) {
  if (name.empty()) name = "copy";
  check_usable(fmt::format("Stream::copy '{}'", name));
  backend_->check_slice(fmt::format("Stream::copy '{}' (destination)", name), dst);
  backend_->check_slice(fmt::format("Stream::copy '{}' (source)", name), src);
  STEPGRAPH_CHECK(dst.bytes == src.bytes, InvalidArgument,
                  "Stream::copy '{}' on device {}: the destination slice has {} bytes and the source {}; give "
                  "slices of equal size",
                  name, device_, dst.bytes, src.bytes);
  const auto& d = *dst.buffer;
  const auto& s = *src.buffer;
  const CopyKind kind =
      detail::BackendImpl::stream_copy_kind(fmt::format("Stream::copy '{}' on device {}", name, device_), d, s);
  const std::size_t n = src.bytes;

  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  // Explicit directions rather than cudaMemcpyDefault, so that the captured
  // memcpy node's direction is the one introspection reports; device to
  // device across devices goes through cudaMemcpyPeerAsync, which needs no
  // peer access (CUDA Runtime API, "Memory Management").
  switch (kind) {
    case CopyKind::kHostToDevice:
      STEPGRAPH_CUDA_CHECK(
          cudaMemcpyAsync(device_ptr(dst), host_or_device_ptr(src), n, cudaMemcpyHostToDevice, stream_));
      break;
    case CopyKind::kDeviceToHost:
      STEPGRAPH_CUDA_CHECK(
          cudaMemcpyAsync(host_or_device_ptr(dst), device_ptr(src), n, cudaMemcpyDeviceToHost, stream_));
      break;
    case CopyKind::kHostToHost:  // refused by stream_copy_kind
      break;
    case CopyKind::kDeviceToDevice:
      if (s.device == device_) {
        STEPGRAPH_CUDA_CHECK(cudaMemcpyAsync(device_ptr(dst), device_ptr(src), n, cudaMemcpyDeviceToDevice, stream_));
      } else {
        STEPGRAPH_CUDA_CHECK(cudaMemcpyPeerAsync(device_ptr(dst), d.device, device_ptr(src), s.device, n, stream_));
      }
      break;
    case CopyKind::kPeer:
      STEPGRAPH_CUDA_CHECK(cudaMemcpyPeerAsync(device_ptr(dst), d.device, device_ptr(src), s.device, n, stream_));
      break;
  }
  std::vector<cudaGraphNode_t> nodes;
  if (auto rec = captured_nodes(nodes)) {
    NodeMeta meta;
    meta.name = std::move(name);
    meta.kind = NodeKind::kMemcpy;
    meta.device = device_;
    meta.copy_kind = kind;
    meta.src_device = s.device;
    meta.dst_device = d.device;
    meta.bytes = n;
    meta.accesses = {AccessInfo{s.id, s.device, s.kind, src.offset, n, Access::kRead},
                     AccessInfo{d.id, d.device, d.kind, dst.offset, n, Access::kWrite}};
    KeepAlive keep;
    keep.buffers = {src.buffer, dst.buffer};
    annotate(*rec, nodes, meta, std::move(keep));
  }
}

void CudaStream::memset(const BufferSlice& dst, unsigned char value, std::string name) {
  if (name.empty()) name = "memset";
  check_usable(fmt::format("Stream::memset '{}'", name));
  backend_->check_slice(fmt::format("Stream::memset '{}'", name), dst);
  const auto& d = *dst.buffer;
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  // Through the device address also for pinned memory: mapped host memory
  // has one (cudaHostGetDevicePointer), and a memset node takes a device
  // address (cudaMemsetAsync, CUDA Runtime API "Memory Management").
  STEPGRAPH_CUDA_CHECK(cudaMemsetAsync(device_ptr(dst), value, dst.bytes, stream_));
  std::vector<cudaGraphNode_t> nodes;
  if (auto rec = captured_nodes(nodes)) {
    NodeMeta meta;
    meta.name = std::move(name);
    meta.kind = NodeKind::kMemset;
    meta.device = device_;
    meta.dst_device = d.device;
    meta.bytes = dst.bytes;
    meta.accesses = {AccessInfo{d.id, d.device, d.kind, dst.offset, dst.bytes, Access::kWrite}};
    KeepAlive keep;
    keep.buffers = {dst.buffer};
    annotate(*rec, nodes, meta, std::move(keep));
  }
}

void CudaStream::collective(CollectiveCall&& call) {
  check_usable(fmt::format("Stream::collective '{}'", call.name));
  STEPGRAPH_CHECK(static_cast<bool>(call.device_enqueue), InvalidArgument,
                  "collective '{}' on device {}: the call has no device implementation (device_enqueue); use a "
                  "communicator made for the cuda backend (NCCL)",
                  call.name, device_);
  refuse_in_body(fmt::format("the collective '{}'", call.name), call.name);
  backend_->resolve_accesses(device_, call.name, call.accesses);
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  call.device_enqueue(stream_);
  std::vector<cudaGraphNode_t> nodes;
  if (auto rec = captured_nodes(nodes)) {
    NodeMeta meta;
    meta.name = call.name;
    meta.kind = NodeKind::kCollective;
    meta.device = device_;
    meta.bytes = call.bytes;
    meta.accesses = detail::access_infos(call.accesses);
    meta.collective = std::move(call.info);
    annotate(*rec, nodes, meta, keep_buffers(call.accesses));
  }
}

void CudaStream::host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) {
  if (name.empty()) name = "host_fn";
  check_usable(fmt::format("Stream::host_fn '{}'", name));
  STEPGRAPH_CHECK(static_cast<bool>(fn), InvalidArgument, "Stream::host_fn '{}' on device {}: the function is empty",
                  name, device_);
  refuse_in_body(fmt::format("the host function '{}'", name), name);
  backend_->resolve_accesses(device_, name, accesses);

  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  // Who owns the box depends on whether this call is captured: checked
  // under the enqueue mutex, which begin_capture and wait (a fork) also
  // take, so the answer cannot change before the launch.
  const CaptureState st = capture_state();
  if (st.status == cudaStreamCaptureStatusActive) {
    auto rec = backend_->find_capture(st.id);
    auto box = std::make_shared<HostFnBox>(HostFnBox{std::move(fn), name, device_, false, {}});
    KeepAlive keep = keep_buffers(accesses);
    keep.host_fns.push_back(box);
    STEPGRAPH_CUDA_CHECK(cudaLaunchHostFunc(stream_, &run_host_fn, box.get()));
    std::vector<cudaGraphNode_t> nodes;
    auto rec_now = captured_nodes(nodes);
    NodeMeta meta;
    meta.name = std::move(name);
    meta.kind = NodeKind::kHost;
    meta.device = device_;
    meta.accesses = detail::access_infos(accesses);
    if (rec_now != nullptr) {
      annotate(*rec_now, nodes, meta, std::move(keep));
    } else if (rec != nullptr) {
      annotate(*rec, {}, meta, std::move(keep));  // keep the box alive all the same
    } else {
      // A capture stepgraph did not begin: nothing would own the box.
      // Leak it rather than let the graph call freed memory.
      STEPGRAPH_WARN(kCapture, "host function '{}' captured into a foreign capture; its state is leaked", meta.name);
      new std::shared_ptr<HostFnBox>(box);
    }
    return;
  }
  // Eager: the trampoline hands the box to the release thread after the
  // call. The box keeps the declared buffers alive until then, as a captured
  // node's KeepAlive does. If a device fault stops the stream first, CUDA
  // never calls it and the box leaks; that is the price of not observing
  // completion through host functions (DESIGN 1.6).
  auto* box = new HostFnBox{std::move(fn), std::move(name), device_, true, keep_buffers(accesses).buffers};
  const cudaError_t e = cudaLaunchHostFunc(stream_, &run_host_fn, box);
  if (e != cudaSuccess) {
    delete box;
    throw_cuda_error(e, "cudaLaunchHostFunc(stream, run_host_fn, box)", __FILE__, __LINE__);
  }
}

void CudaStream::record(detail::EventImpl& event) {
  CudaEvent& ev = as_cuda_event(event, "Stream::record");
  check_usable("Stream::record");
  refuse_in_body("Stream::record of an event", "event record");
  STEPGRAPH_CHECK(ev.device() == device_, InvalidArgument,
                  "Stream::record: an event of device {} cannot be recorded on a stream of device {} (CUDA "
                  "requires both on one device); create the event with Backend::create_event({})",
                  ev.device(), device_, device_);
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  STEPGRAPH_CUDA_CHECK(cudaEventRecord(ev.handle(), stream_));
  const CaptureState st = capture_state();
  // Remembered so that a query of captured work and a wait across the
  // capture boundary are refused (DESIGN 2.2) even where CUDA would accept.
  ev.note_record(st.status == cudaStreamCaptureStatusNone ? 0 : st.id);
}

void CudaStream::wait(const detail::EventImpl& event) {
  const CudaEvent& ev = as_cuda_event(event, "Stream::wait");
  check_usable("Stream::wait");
  refuse_in_body("Stream::wait on an event", "event wait");
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  // Waits on the event's latest record, also of another device. During
  // capture only events recorded in the same capture may be waited on (a
  // dependency across the capture boundary is cudaErrorStreamCaptureIsolation,
  // CUDA Runtime API "Data types", enum cudaError); stepgraph refuses such a
  // wait itself, so the refusal does not depend on the driver version.
  const CaptureState st = capture_state();
  if (st.status == cudaStreamCaptureStatusNone && ev.last_capture() != 0 &&
      backend_->find_capture(ev.last_capture()) == nullptr)
    throw_captured_event("Stream::wait", device_);  // Note [Events recorded in a finished capture]
  if (st.status == cudaStreamCaptureStatusActive && ev.recorded() && ev.last_capture() != st.id) {
    backend_->invalidate_capture(st.id);
    throw InvalidState(fmt::format(
        "Stream::wait on device {}: the event was recorded outside this capture; during capture a stream may only "
        "wait on events recorded in the same capture, so the capture is now invalidated: end it (it yields no "
        "graph), then record the event inside the capture or wait on it before begin_capture",
        device_));
  }
  const cudaError_t e = cudaStreamWaitEvent(stream_, ev.handle(), 0);
  if (e == cudaSuccess) return;
  if (is_capture_error(e)) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format(
        "Stream::wait on device {}: {} ({}); during capture a stream may only wait on events recorded in the "
        "same capture, so the capture is now invalidated: end it (it yields no graph), record the event inside "
        "the capture or wait on it before begin_capture",
        device_, cudaGetErrorName(e), cudaGetErrorString(e)));
  }
  throw_cuda_error(e, "cudaStreamWaitEvent(stream, event, 0)", __FILE__, __LINE__);
}

void CudaStream::synchronize() {
  detail::SyncCounters::bump(backend_->sync_counters().stream_synchronize);
  check_usable("Stream::synchronize");
  DeviceGuard guard(device_);
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e == cudaSuccess) return;
  if (is_capture_error(e)) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format(
        "Stream::synchronize on device {}: the stream is capturing, and captured work does not run until the "
        "graph is launched ({}); the capture is now invalidated: end it (it yields no graph) and synchronize "
        "outside capture",
        device_, cudaGetErrorName(e)));
  }
  throw_cuda_error(e, "cudaStreamSynchronize(stream)", __FILE__, __LINE__);
}

bool CudaStream::query() {
  detail::SyncCounters::bump(backend_->sync_counters().stream_query);
  check_usable("Stream::query");
  DeviceGuard guard(device_);
  const cudaError_t e = cudaStreamQuery(stream_);
  if (e == cudaSuccess) return true;
  if (e == cudaErrorNotReady) return false;
  if (is_capture_error(e)) {
    (void)cudaGetLastError();
    throw InvalidState(fmt::format(
        "Stream::query on device {}: the stream is capturing, and captured work does not run until the graph is "
        "launched ({}); the capture is now invalidated: end it (it yields no graph) and query outside capture",
        device_, cudaGetErrorName(e)));
  }
  throw_cuda_error(e, "cudaStreamQuery(stream)", __FILE__, __LINE__);
}

// ---------------------------------------------------------------- capture

void CudaStream::begin_capture(CaptureMode mode) {
  // CUDA itself refuses capture on the legacy stream
  // (cudaErrorStreamCaptureUnsupported); refusing before the call gives the
  // caller the next step (DESIGN 1.1: never the legacy default stream).
  STEPGRAPH_CHECK(!legacy_, InvalidArgument,
                  "Stream::begin_capture on the legacy default stream of device {} is refused: it synchronises "
                  "with every blocking stream and cannot be captured; capture on a stream made by "
                  "Backend::create_stream",
                  device_);
  check_usable("Stream::begin_capture");
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  STEPGRAPH_CHECK(!origin_capture_, InvalidState,
                  "Stream::begin_capture on device {}: a capture begun on this stream is still in progress; end it "
                  "with end_capture first",
                  device_);
  // A stream that joined another stream's capture (through a wait) cannot
  // begin its own (CUDA: cudaErrorIllegalState).
  STEPGRAPH_CHECK(capture_state().status == cudaStreamCaptureStatusNone, InvalidState,
                  "Stream::begin_capture on device {}: this stream takes part in a capture begun on another stream; "
                  "end that capture on its origin stream first",
                  device_);
  // The mode decides whose potentially unsafe calls (cudaMalloc, a
  // synchronize, ...) invalidate this capture: thread-local by default, so
  // other threads' work is unaffected (CUDA Runtime API, "Stream
  // Management", cudaStreamBeginCapture / cudaThreadExchangeStreamCaptureMode).
  STEPGRAPH_CUDA_CHECK(cudaStreamBeginCapture(stream_, to_cuda(mode)));
  const CaptureState st = capture_state();
  origin_capture_ = st.id;
  (void)backend_->open_capture(st.id, device_, stream_, mode);
  STEPGRAPH_DEBUG(kCapture, "capture {} begun on device {} ({})", st.id, device_, to_string(mode));
}

std::unique_ptr<detail::GraphImpl> CudaStream::end_capture() {
  // Not refused on a faulted device: ending always ends, so the stream is
  // left out of capture whatever happened.
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  if (!origin_capture_) {
    const CaptureState st = capture_state();
    if (st.status != cudaStreamCaptureStatusNone) {
      // CUDA answers cudaErrorStreamCaptureUnmatched here; the capture is
      // invalidated either way, as DESIGN 2.2 and the host backend say.
      backend_->invalidate_capture(st.id);
      throw InvalidState(fmt::format(
          "Stream::end_capture on device {}: this stream joined a capture begun on another stream; capture must "
          "end on the stream it began on, and this capture is now invalidated: end it on its origin stream (it "
          "yields no graph) and capture again",
          device_));
    }
    throw InvalidState(fmt::format(
        "Stream::end_capture on device {}: no capture is in progress on this stream; call begin_capture first",
        device_));
  }
  const unsigned long long id = *origin_capture_;
  // A capture not begun in relaxed mode must be ended by the thread that
  // began it (cudaErrorStreamCaptureWrongThread, CUDA Runtime API "Data
  // types"); refused here first so the refusal does not depend on the
  // driver. The capture goes on, and its record with it.
  if (auto open = backend_->find_capture(id);
      open != nullptr && open->mode != CaptureMode::kRelaxed && open->owner != std::this_thread::get_id()) {
    throw InvalidState(fmt::format(
        "Stream::end_capture on device {}: this {} capture was begun by another thread, and only a relaxed "
        "capture may be ended by another thread (cudaErrorStreamCaptureWrongThread); the capture goes on: end it "
        "on the thread that began it",
        device_, to_string(open->mode)));
  }
  cudaGraph_t raw = nullptr;
  const cudaError_t e = cudaStreamEndCapture(stream_, &raw);
  UniqueGraph graph(raw);
  // Forget the capture only once CUDA has ended it: a refused end (another
  // thread, say) leaves the stream capturing, and the record must stay for
  // the owner's end_capture. An invalidated or unjoined capture is ended all
  // the same (the stream leaves capture), so it is forgotten too.
  std::shared_ptr<CaptureRecord> rec;
  if (e == cudaSuccess || capture_state().status == cudaStreamCaptureStatusNone) {
    origin_capture_.reset();
    rec = backend_->close_capture(id);
  }
  if (e != cudaSuccess) {
    if (!is_capture_error(e)) throw_cuda_error(e, "cudaStreamEndCapture(stream, &graph)", __FILE__, __LINE__);
    (void)cudaGetLastError();
    throw InvalidState(
        fmt::format("Stream::end_capture on device {}: the capture yields no graph: {} ({}); either an illegal call "
                    "invalidated it or a forked stream was not joined back to the origin stream; the stream is out of "
                    "capture and usable again: fix the step and capture again",
                    device_, cudaGetErrorName(e), cudaGetErrorString(e)));
  }
  STEPGRAPH_CHECK(graph, InvalidState,
                  "Stream::end_capture on device {}: CUDA returned no graph; the capture was invalidated", device_);
  STEPGRAPH_DEBUG(kCapture, "capture {} ended on device {}", id, device_);
  return std::make_unique<CudaGraph>(backend_->shared(), device_, std::move(graph), rec);
}

CaptureStatus CudaStream::capture_status() const {
  switch (capture_state().status) {
    case cudaStreamCaptureStatusActive:
      return CaptureStatus::kActive;
    case cudaStreamCaptureStatusInvalidated:
      return CaptureStatus::kInvalidated;
    case cudaStreamCaptureStatusNone:
      return CaptureStatus::kNone;
  }
  return CaptureStatus::kNone;
}

// ---------------------------------------------------------------- conditional nodes

void CudaStream::refuse_in_body(std::string_view what, std::string_view op) const {
  if (!conditional_body_.empty())
    detail::throw_conditional_body(
        fmt::format("{} on device {} (conditional node '{}')", what, device_, conditional_body_), op);
}

ConditionHandle CudaStream::create_condition(unsigned default_value) {
  check_usable("Stream::create_condition");
  STEPGRAPH_CHECK(kHaveConditionalNodes, InvalidState,
                  "Stream::create_condition on device {}: this build's CUDA runtime ({}) has no conditional nodes "
                  "built from stream capture; build with CUDA 12.4 or later",
                  device_, CUDART_VERSION);
  DeviceGuard guard(device_);
  auto lock = lock_enqueue();
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  unsigned long long id = 0;
  cudaGraph_t graph = nullptr;
  STEPGRAPH_CUDA_CHECK(stream_get_capture_info(stream_, &status, &id, &graph, nullptr, nullptr));
  STEPGRAPH_CHECK(status == cudaStreamCaptureStatusActive, InvalidState,
                  "Stream::create_condition on device {}: the stream is not capturing; a condition belongs to a "
                  "graph: make it during capture (or inside run_as_graph)",
                  device_);
  unsigned long long handle = 0;
  STEPGRAPH_CUDA_CHECK(conditional_handle_create(&handle, graph, default_value));
  if (auto rec = backend_->find_capture(id)) {
    std::lock_guard rl(rec->mutex);
    rec->conditions[handle] = default_value;
  }
  return ConditionHandle{handle};
}

// Note [Capturing a conditional body]
// As in CUDA's samples (CUDA Programming Guide, "Conditional Graph Nodes"):
// the conditional node is added by hand after the capturing stream's
// current dependencies (cudaStreamGetCaptureInfo, cudaGraphAddNode), the
// stream's dependencies become that node (cudaStreamUpdateCaptureDependencies),
// and the body is captured on a stream of its own into the node's body
// graph (cudaStreamBeginCaptureToGraph), with a capture record of its own
// so that its nodes are named and its buffers kept alive with the parent
// graph. A body CUDA would refuse is refused first (ConditionalBodyError):
// the node is then removed and the stream's dependencies restored, so the
// capture goes on as if capture_if had not been called.
void CudaStream::capture_conditional(ConditionalKind kind, ConditionHandle condition,
                                     const std::function<void(StreamRef)>& body, std::string name) {
  check_usable(fmt::format("Stream::capture_{} '{}'", to_string(kind), name));
  DeviceGuard guard(device_);
  std::shared_ptr<CaptureRecord> parent;
  std::vector<cudaGraphNode_t> before;
  cudaGraphNode_t node = nullptr;
  cudaGraph_t body_graph = nullptr;
  unsigned default_value = 0;
  {
    auto lock = lock_enqueue();
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    cudaGraph_t graph = nullptr;
    const cudaGraphNode_t* deps = nullptr;
    std::size_t num_deps = 0;
    bool plain_edges = true;
    STEPGRAPH_CUDA_CHECK(stream_capture_frontier(stream_, &status, &graph, &deps, &num_deps, &plain_edges));
    STEPGRAPH_CHECK(status == cudaStreamCaptureStatusActive, InvalidState,
                    "Stream::capture_{} '{}' on device {}: the stream is not capturing; conditional nodes exist only "
                    "in graphs: capture the work, or wrap it in run_as_graph",
                    to_string(kind), name, device_);
    STEPGRAPH_CHECK(plain_edges, InvalidState,
                    "Stream::capture_{} '{}' on device {}: the stream's last captured work ends in a programmatic "
                    "(port) edge, which a conditional node cannot take; add the node after an ordinary node",
                    to_string(kind), name, device_);
    before.assign(deps, deps + num_deps);
    parent = backend_->find_capture(capture_state().id);
    std::optional<unsigned> found;
    if (parent != nullptr) {
      std::lock_guard rl(parent->mutex);
      if (auto it = parent->conditions.find(condition.value); it != parent->conditions.end()) found = it->second;
    }
    // CUDA: the handle must have been created in the graph that holds the node.
    STEPGRAPH_CHECK(found.has_value(), InvalidArgument,
                    "Stream::capture_{} '{}' on device {}: condition #{} was not made in the graph this stream "
                    "captures into; make it with create_condition on this stream (in this capture, or in this body)",
                    to_string(kind), name, device_, condition.value);
    default_value = *found;
    STEPGRAPH_CUDA_CHECK(add_conditional_node(&node, graph, before.data(), before.size(), condition.value,
                                              kind == ConditionalKind::kWhile, &body_graph));
    STEPGRAPH_CUDA_CHECK(stream_set_capture_dependencies(stream_, &node, 1));
  }
  const CaptureMode mode = parent != nullptr ? parent->mode : CaptureMode::kThreadLocal;
  auto undo = [&] {
    // The node goes, and the stream depends on what it depended on before.
    auto lock = lock_enqueue();
    STEPGRAPH_CUDA_CHECK_WARN(cudaGraphDestroyNode(node));
    STEPGRAPH_CUDA_CHECK_WARN(stream_set_capture_dependencies(stream_, before.data(), before.size()));
  };
  std::unique_ptr<CudaStream> body_stream;
  std::shared_ptr<CaptureRecord> body_record;
  unsigned long long body_id = 0;
  try {
    {
      // Creating a stream is not capture work: relaxed, so that no capture
      // mode of this thread refuses it.
      cudaStreamCaptureMode relaxed = cudaStreamCaptureModeRelaxed;
      STEPGRAPH_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&relaxed));
      try {
        body_stream = std::make_unique<CudaStream>(*backend_, device_, 0);
      } catch (...) {
        STEPGRAPH_CUDA_CHECK_WARN(cudaThreadExchangeStreamCaptureMode(&relaxed));
        throw;
      }
      STEPGRAPH_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&relaxed));
    }
    body_stream->conditional_body_ = name;
    STEPGRAPH_CUDA_CHECK(stream_begin_capture_to_graph(body_stream->stream_, body_graph, to_cuda(mode)));
    body_id = body_stream->capture_state().id;
    body_stream->origin_capture_ = body_id;
    body_record = backend_->open_capture(body_id, device_, body_stream->stream_, mode);
    body(StreamRef(body_stream.get()));
    cudaGraph_t ended = nullptr;
    const cudaError_t e = cudaStreamEndCapture(body_stream->stream_, &ended);
    body_stream->origin_capture_.reset();
    (void)backend_->close_capture(body_id);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw InvalidState(
          fmt::format("Stream::capture_{} '{}' on device {}: the body's capture yields no graph: {} "
                      "({}); fix the body (an illegal call, or a forked stream not joined back)",
                      to_string(kind), name, device_, cudaGetErrorName(e), cudaGetErrorString(e)));
    }
    GraphInfo body_info = CudaGraph::describe(body_graph, device_, body_record.get(), nullptr);
    detail::check_conditional_body(body_info, name);
    STEPGRAPH_CHECK(kind != ConditionalKind::kWhile || !body_info.nodes.empty(), InvalidArgument,
                    "Stream::capture_while '{}' on device {}: the body is empty, so the loop could only never run "
                    "or never end; give it the work that sets the condition",
                    name, device_);
    NodeMeta meta;
    meta.name = name;
    meta.kind = NodeKind::kConditional;
    meta.device = device_;
    for (const auto& n : body_info.nodes)
      meta.accesses.insert(meta.accesses.end(), n.accesses.begin(), n.accesses.end());
    meta.conditional =
        ConditionalInfo{kind, condition.value, default_value, std::make_shared<const GraphInfo>(std::move(body_info))};
    KeepAlive keep;
    {
      std::lock_guard rl(body_record->mutex);
      keep = *body_record->keep;  // the body's buffers and host state live as long as the parent graph
    }
    if (parent != nullptr) annotate(*parent, {node}, meta, std::move(keep));
  } catch (...) {
    if (body_stream != nullptr && body_stream->origin_capture_) {
      cudaGraph_t ended = nullptr;
      STEPGRAPH_CUDA_CHECK_WARN(cudaStreamEndCapture(body_stream->stream_, &ended));
      body_stream->origin_capture_.reset();
      (void)backend_->close_capture(body_id);
    }
    undo();
    throw;
  }
}

}  // namespace stepgraph::runtime::cuda
