// The NCCL communicator (Note [NCCL inside captured graphs] in nccl.h).
// Compiled only when STEPGRAPH_HAVE_NCCL is on (collectives/CMakeLists.txt).
#include <stepgraph/collectives/nccl.h>

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <stepgraph/core/log.h>

namespace stepgraph::collectives {
namespace {

// ---------------------------------------------------------------- versions
// The one place that knows CUDA and NCCL versions (STYLE.md: version
// differences live apart from function bodies).

static_assert(NCCL_UNIQUE_ID_BYTES == sizeof(NcclUniqueId::bytes),
              "NcclUniqueId must hold exactly an ncclUniqueId (NCCL_UNIQUE_ID_BYTES)");
#if !defined(NCCL_VERSION_CODE) || NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "the NCCL communicator needs NCCL 2.10 or newer (ncclAvg, ncclBfloat16, graph capture)"
#endif

/// The capture dependencies of `stream` (cudaStreamGetCaptureInfo; CUDA 13
/// returns edge data beside them, asked for so that annotated edges do not
/// give cudaErrorLossyQuery).
cudaError_t capture_info(cudaStream_t stream, cudaStreamCaptureStatus* status, cudaGraph_t* graph,
                         const cudaGraphNode_t** deps, std::size_t* num_deps) {
#if CUDART_VERSION >= 13000
  const cudaGraphEdgeData* edge_data = nullptr;
  return cudaStreamGetCaptureInfo(stream, status, nullptr, graph, deps, &edge_data, num_deps);
#elif CUDART_VERSION >= 12030
  const cudaGraphEdgeData* edge_data = nullptr;
  return cudaStreamGetCaptureInfo_v3(stream, status, nullptr, graph, deps, &edge_data, num_deps);
#else
  return cudaStreamGetCaptureInfo(stream, status, nullptr, graph, deps, num_deps);
#endif
}

/// Makes `node` the only dependency of the next work captured on `stream`.
cudaError_t set_capture_dependency(cudaStream_t stream, cudaGraphNode_t node) {
#if CUDART_VERSION >= 13000
  return cudaStreamUpdateCaptureDependencies(stream, &node, nullptr, 1, cudaStreamSetCaptureDependencies);
#else
  return cudaStreamUpdateCaptureDependencies(stream, &node, 1, cudaStreamSetCaptureDependencies);
#endif
}

// ---------------------------------------------------------------- checks

[[noreturn]] void throw_nccl(ncclResult_t r, const char* expr, ncclComm_t comm, const std::string& where) {
  const char* last = ncclGetLastError(comm);
  throw NcclError(fmt::format("{} failed{}: {} ({}){}{}", expr, where, ncclGetErrorString(r), static_cast<int>(r),
                              last != nullptr && *last != '\0' ? ": " : "", last != nullptr ? last : ""),
                  static_cast<int>(r));
}

void warn_nccl(ncclResult_t r, const char* expr, ncclComm_t comm, const std::string& where) noexcept {
  const char* last = ncclGetLastError(comm);
  STEPGRAPH_WARN(kCollectives, "{} failed{}: {} ({}) {}", expr, where, ncclGetErrorString(r), static_cast<int>(r),
                 last != nullptr ? last : "");
}

[[noreturn]] void throw_cuda(cudaError_t e, const char* expr) {
  throw CudaError(
      fmt::format("{} failed in the NCCL communicator: {} ({})", expr, cudaGetErrorName(e), cudaGetErrorString(e)),
      static_cast<int>(e));
}

}  // namespace
}  // namespace stepgraph::collectives

/// Checks an NCCL call; throws NcclError naming the call, `where` (" on rank
/// r of communicator c", or empty) and NCCL's own last error.
#define STEPGRAPH_NCCL_CHECK(expr, comm, where)                                                          \
  do {                                                                                                   \
    const ncclResult_t sg_nccl_r_ = (expr);                                                              \
    if (sg_nccl_r_ != ncclSuccess) ::stepgraph::collectives::throw_nccl(sg_nccl_r_, #expr, comm, where); \
  } while (0)
/// The twin for destructors and cleanup paths: logs instead of throwing.
#define STEPGRAPH_NCCL_CHECK_WARN(expr, comm, where)                                                    \
  do {                                                                                                  \
    const ncclResult_t sg_nccl_r_ = (expr);                                                             \
    if (sg_nccl_r_ != ncclSuccess) ::stepgraph::collectives::warn_nccl(sg_nccl_r_, #expr, comm, where); \
  } while (0)
/// CUDA runtime calls of this file (the runtime's STEPGRAPH_CUDA_CHECK is
/// private to the cuda backend).
#define STEPGRAPH_NCCL_CUDA_CHECK(expr)                                                     \
  do {                                                                                      \
    const cudaError_t sg_cuda_e_ = (expr);                                                  \
    if (sg_cuda_e_ != cudaSuccess) ::stepgraph::collectives::throw_cuda(sg_cuda_e_, #expr); \
  } while (0)

namespace stepgraph::collectives {
namespace {

/// Sets the current device for its lifetime (NCCL calls act on the current
/// device's context). Cannot be copied or moved.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    STEPGRAPH_NCCL_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device)
      STEPGRAPH_NCCL_CUDA_CHECK(cudaSetDevice(device));
    else
      previous_ = -1;
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  DeviceGuard(DeviceGuard&&) = delete;
  DeviceGuard& operator=(DeviceGuard&&) = delete;
  ~DeviceGuard() {
    if (previous_ >= 0 && cudaSetDevice(previous_) != cudaSuccess) (void)cudaGetLastError();
  }

 private:
  int previous_ = -1;
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
      return ncclBfloat16;
  }
  throw InvalidArgument(fmt::format("NCCL communicator: dtype {} has no NCCL type", static_cast<int>(t)));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kAverage:
      return ncclAvg;  // NCCL 2.10+: a pre-multiplied sum (floats) or a sum then division (integers)
  }
  throw InvalidArgument(fmt::format("NCCL communicator: reduction {} has no NCCL operation", static_cast<int>(op)));
}

/// The ncclComm_t and what the communicator's threads share about it.
/// Note [NCCL handle and abort]
/// The handle is used by this rank's thread (collective calls), by any
/// thread polling async_error(), and by abort() from any thread (the
/// executor's watchdog). `mutex` orders them: a collective call holds it
/// while it is inside NCCL; a poll only tries it (a watchdog must never wait
/// behind a call); abort marks the communicator aborted first (so no new
/// call starts), then waits for a call in progress up to the timeout, and
/// calls ncclCommAbort exactly once — also when a call is stuck inside NCCL
/// past the timeout, since ending such a call is what ncclCommAbort is for.
/// After the abort the handle is gone (null): nothing touches it again.
struct NcclHandle {
  std::timed_mutex mutex;
  ncclComm_t comm = nullptr;
  int device = 0;
  std::atomic<bool> aborted{false};
  std::once_flag abort_once;
  // First error wins (a failure, or the abort's reason).
  std::mutex error_mutex;
  std::string error;
  int error_code = 0;  // the ncclResult_t of a failure; 0 for an abort
  // Captured collectives of this communicator in graphs still alive (one
  // CUDA user object per captured call, retained by the capturing graph and
  // released when the last graph or executable made from it is destroyed).
  std::atomic<int> live_graphs{0};

  void set_error(std::string message, int code) {
    std::lock_guard lock(error_mutex);
    if (error.empty()) {
      error = std::move(message);
      error_code = code;
    }
  }
};

/// The user object a capturing graph retains: counts the graph as live.
/// CUDA calls the destructor on an internal thread, where no CUDA or NCCL
/// call is allowed (CUDA Runtime API, cudaUserObjectCreate): it only counts.
struct GraphRef {
  std::shared_ptr<NcclHandle> handle;
};
void release_graph_ref(void* p) {
  auto* ref = static_cast<GraphRef*>(p);
  ref->handle->live_graphs.fetch_sub(1);
  delete ref;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<runtime::Backend> backend, int device, int rank, int world,
                   CommunicatorOptions options, ncclComm_t comm)
      : Communicator(std::move(backend), device, rank, world, options), h_(std::make_shared<NcclHandle>()) {
    h_->comm = comm;
    h_->device = device;
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  ~NcclCommunicator() override {
    if (h_->aborted.load()) return;  // ncclCommAbort freed it
    // CUDA releases a destroyed graph's user objects asynchronously: give it
    // a bounded moment before concluding that a graph is still alive.
    const auto deadline = std::chrono::steady_clock::now() +
                          std::min<std::chrono::milliseconds>(options_.timeout, std::chrono::seconds(5));
    while (h_->live_graphs.load() > 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard lock(h_->mutex);
    if (h_->live_graphs.load() > 0) {
      STEPGRAPH_WARN(kCollectives,
                     "NCCL communicator {} rank {} destroyed while graphs holding {} of its collectives are alive; it "
                     "is leaked, not destroyed (ncclCommDestroy would wait for those graphs forever). Destroy graphs "
                     "and their executables before their communicator (Note [NCCL inside captured graphs])",
                     id_, rank_, h_->live_graphs.load());
      return;
    }
    try {
      DeviceGuard guard(device_);
      STEPGRAPH_NCCL_CHECK_WARN(ncclCommDestroy(h_->comm), h_->comm, where());
    } catch (const std::exception& e) {
      STEPGRAPH_WARN(kCollectives, "NCCL communicator {} rank {}: destroying it failed: {}", id_, rank_, e.what());
    }
    h_->comm = nullptr;
  }

 protected:
  void implement(const Call& call, runtime::CollectiveCall& out) override {
    const ncclDataType_t type = nccl_type(call.signature.dtype);
    const ncclRedOp_t op = nccl_op(call.signature.reduce);
    out.device_enqueue = [h = h_, call, type, op, where = where()](void* native_stream) {
      auto stream = static_cast<cudaStream_t>(native_stream);
      std::unique_lock lock(h->mutex);
      STEPGRAPH_CHECK(!h->aborted.load(), collectives::CommunicatorAborted,
                      "{}{}: the communicator was aborted; make a new one", describe(call.signature), where);
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      cudaGraph_t graph = nullptr;
      const cudaGraphNode_t* deps = nullptr;
      std::size_t num_deps = 0;
      STEPGRAPH_NCCL_CUDA_CHECK(capture_info(stream, &status, &graph, &deps, &num_deps));
      const bool capturing = status == cudaStreamCaptureStatusActive;
      const std::vector<cudaGraphNode_t> before =
          capturing ? std::vector<cudaGraphNode_t>(deps, deps + num_deps) : std::vector<cudaGraphNode_t>{};
      const CollectiveSignature& s = call.signature;
      switch (s.kind) {
        case CollectiveKind::kAllReduce:
          STEPGRAPH_NCCL_CHECK(ncclAllReduce(call.send, call.recv, s.count, type, op, h->comm, stream), h->comm, where);
          break;
        case CollectiveKind::kBroadcast:
          STEPGRAPH_NCCL_CHECK(ncclBroadcast(call.send, call.recv, s.count, type, s.root, h->comm, stream), h->comm,
                               where);
          break;
        case CollectiveKind::kAllGather:
          STEPGRAPH_NCCL_CHECK(ncclAllGather(call.send, call.recv, s.count, type, h->comm, stream), h->comm, where);
          break;
        case CollectiveKind::kReduceScatter:
          STEPGRAPH_NCCL_CHECK(ncclReduceScatter(call.send, call.recv, s.count, type, op, h->comm, stream), h->comm,
                               where);
          break;
      }
      if (!capturing) return;
      STEPGRAPH_NCCL_CUDA_CHECK(capture_info(stream, &status, &graph, &deps, &num_deps));
      if (std::vector<cudaGraphNode_t>(deps, deps + num_deps) == before) {
        // NCCL enqueued nothing (an in-place sum, max or min on one rank):
        // an empty node stands for the collective, so that the graph shows
        // it (Note [NCCL inside captured graphs]).
        cudaGraphNode_t empty = nullptr;
        STEPGRAPH_NCCL_CUDA_CHECK(cudaGraphAddEmptyNode(&empty, graph, before.data(), before.size()));
        STEPGRAPH_NCCL_CUDA_CHECK(set_capture_dependency(stream, empty));
      }
      // The graph keeps count of itself as a holder of this communicator.
      cudaUserObject_t object = nullptr;
      auto* ref = new GraphRef{h};
      const cudaError_t e = cudaUserObjectCreate(&object, ref, release_graph_ref, 1, cudaUserObjectNoDestructorSync);
      if (e != cudaSuccess) {
        delete ref;
        throw_cuda(e, "cudaUserObjectCreate");
      }
      h->live_graphs.fetch_add(1);
      const cudaError_t r = cudaGraphRetainUserObject(graph, object, 1, cudaGraphUserObjectMove);
      if (r != cudaSuccess) {
        (void)cudaUserObjectRelease(object, 1);  // runs release_graph_ref: the count goes back
        throw_cuda(r, "cudaGraphRetainUserObject");
      }
    };
  }

  std::optional<std::string> impl_error() override {
    {
      std::lock_guard lock(h_->error_mutex);
      if (!h_->error.empty()) return h_->error;
    }
    if (h_->aborted.load()) return fmt::format("CommunicatorAborted: NCCL communicator {} rank {}", id_, rank_);
    // A collective call in progress holds the handle: poll next time rather
    // than wait behind it (Note [NCCL handle and abort]).
    std::unique_lock lock(h_->mutex, std::try_to_lock);
    if (!lock.owns_lock() || h_->comm == nullptr) return std::nullopt;
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(h_->comm, &async);
    if (r != ncclSuccess) async = r;
    if (async == ncclSuccess || async == ncclInProgress) return std::nullopt;
    const char* last = ncclGetLastError(h_->comm);
    h_->set_error(fmt::format("NcclError on rank {} of NCCL communicator {} (device {}): {} ({}){}{}. The "
                              "communicator is unusable: abort it and make a new one",
                              rank_, id_, device_, ncclGetErrorString(async), static_cast<int>(async),
                              last != nullptr && *last != '\0' ? ": " : "", last != nullptr ? last : ""),
                  static_cast<int>(async));
    std::lock_guard elock(h_->error_mutex);
    return h_->error;
  }

  [[noreturn]] void throw_impl_error(const std::string& message) override {
    int code = 0;
    {
      std::lock_guard lock(h_->error_mutex);
      code = h_->error_code;
    }
    if (code != 0) throw NcclError(message, code);
    throw CommunicatorAborted(message);
  }

  void impl_abort(const std::string& reason) override {
    std::call_once(h_->abort_once, [&] {
      h_->aborted.store(true);
      h_->set_error(fmt::format("CommunicatorAborted: rank {} of NCCL communicator {} (device {}) was aborted: {}",
                                rank_, id_, device_, reason),
                    0);
      std::unique_lock lock(h_->mutex, std::defer_lock);
      if (!lock.try_lock_for(options_.timeout))
        STEPGRAPH_WARN(kCollectives,
                       "NCCL communicator {} rank {}: a collective call is still inside NCCL after {} ms; calling "
                       "ncclCommAbort to end it",
                       id_, rank_, options_.timeout.count());
      ncclComm_t comm = h_->comm;
      h_->comm = nullptr;
      if (comm == nullptr) return;
      try {
        DeviceGuard guard(device_);
        STEPGRAPH_NCCL_CHECK_WARN(ncclCommAbort(comm), nullptr, where());
      } catch (const std::exception& e) {
        STEPGRAPH_WARN(kCollectives, "NCCL communicator {} rank {}: abort failed: {}", id_, rank_, e.what());
      }
    });
  }

  bool impl_aborted() const override { return h_->aborted.load(); }
  std::string_view impl_name() const override { return "nccl"; }

 private:
  [[nodiscard]] std::string where() const {
    return fmt::format(" on rank {} of NCCL communicator {} (device {})", rank_, id_, device_);
  }

  std::shared_ptr<NcclHandle> h_;
};

void check_backend(const std::shared_ptr<runtime::Backend>& backend, const char* what) {
  STEPGRAPH_CHECK(backend != nullptr, InvalidArgument, "{}: no backend given", what);
  STEPGRAPH_CHECK(backend->kind() == runtime::BackendKind::kCuda, InvalidArgument,
                  "{}: NCCL runs on the cuda backend, not on {}; use make_in_process_group (collectives/"
                  "in_process.h) for host devices",
                  what, backend->name());
}

void check_device(const std::shared_ptr<runtime::Backend>& backend, int device, const char* what) {
  STEPGRAPH_CHECK(device >= 0 && device < backend->device_count(), InvalidArgument,
                  "{}: device {} does not exist (the cuda backend has {} device(s))", what, device,
                  backend->device_count());
}

}  // namespace

bool nccl_available(std::string* reason) {
  if (!runtime::Backend::cuda_available(reason)) return false;
  int version = 0;
  const ncclResult_t r = ncclGetVersion(&version);
  if (r != ncclSuccess) {
    if (reason != nullptr) *reason = fmt::format("ncclGetVersion failed: {}", ncclGetErrorString(r));
    return false;
  }
  return true;
}

std::string nccl_version() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) v = 0;
  // NCCL_VERSION: X*1000+Y*100+Z up to 2.8, X*10000+Y*100+Z after.
  const int major = v >= 10000 ? v / 10000 : v / 1000;
  const int minor = v >= 10000 ? (v / 100) % 100 : (v / 100) % 10;
  return fmt::format("{}.{}.{} (built against {}.{}.{})", major, minor, v % 100, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
}

std::vector<std::shared_ptr<Communicator>> make_nccl_group(std::shared_ptr<runtime::Backend> backend,
                                                           std::vector<int> devices, CommunicatorOptions options) {
  check_backend(backend, "make_nccl_group");
  STEPGRAPH_CHECK(!devices.empty(), InvalidArgument, "make_nccl_group: no devices given");
  std::set<int> seen;
  for (int d : devices) {
    check_device(backend, d, "make_nccl_group");
    STEPGRAPH_CHECK(seen.insert(d).second, InvalidArgument,
                    "make_nccl_group: device {} is given twice; one GPU cannot host two NCCL ranks", d);
  }
  const int n = static_cast<int>(devices.size());
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  {
    DeviceGuard guard(devices[0]);  // ncclCommInitAll sets devices itself; restore the caller's
    STEPGRAPH_NCCL_CHECK(ncclCommInitAll(comms.data(), n, devices.data()), nullptr,
                         fmt::format(" for devices {}", fmt::join(devices, ", ")));
  }
  std::vector<std::shared_ptr<Communicator>> out;
  try {
    for (std::size_t i = 0; i < devices.size(); ++i) {
      out.push_back(std::make_shared<NcclCommunicator>(backend, devices[i], static_cast<int>(i), n, options, comms[i]));
      comms[i] = nullptr;  // owned now
    }
  } catch (...) {
    for (ncclComm_t c : comms)
      if (c != nullptr) STEPGRAPH_NCCL_CHECK_WARN(ncclCommDestroy(c), c, std::string());
    throw;
  }
  return out;
}

NcclUniqueId nccl_unique_id() {
  ncclUniqueId raw{};
  STEPGRAPH_NCCL_CHECK(ncclGetUniqueId(&raw), nullptr, std::string());
  NcclUniqueId id;
  std::memcpy(id.bytes.data(), raw.internal, sizeof raw.internal);
  return id;
}

std::shared_ptr<Communicator> make_nccl_communicator(std::shared_ptr<runtime::Backend> backend, int device,
                                                     const NcclUniqueId& id, int rank, int world_size,
                                                     CommunicatorOptions options) {
  check_backend(backend, "make_nccl_communicator");
  check_device(backend, device, "make_nccl_communicator");
  STEPGRAPH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, InvalidArgument,
                  "make_nccl_communicator: rank {} of a world of {} is out of range", rank, world_size);
  ncclUniqueId raw{};
  std::memcpy(raw.internal, id.bytes.data(), sizeof raw.internal);
  ncclComm_t comm = nullptr;
  {
    DeviceGuard guard(device);
    STEPGRAPH_NCCL_CHECK(ncclCommInitRank(&comm, world_size, raw, rank), nullptr,
                         fmt::format(" for rank {} of {} on device {}", rank, world_size, device));
  }
  try {
    return std::make_shared<NcclCommunicator>(std::move(backend), device, rank, world_size, options, comm);
  } catch (...) {
    STEPGRAPH_NCCL_CHECK_WARN(ncclCommDestroy(comm), comm, std::string());
    throw;
  }
}

}  // namespace stepgraph::collectives
