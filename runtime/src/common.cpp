// The public handle types and the checks both backends share.
#include <algorithm>
#include <sstream>

#include <stepgraph/core/log.h>

#include "impl.h"

namespace stepgraph::runtime {

// ---------------------------------------------------------------- strings

std::string_view to_string(BackendKind kind) noexcept {
  return kind == BackendKind::kCuda ? "cuda" : "host";
}
std::string_view to_string(Access a) noexcept {
  switch (a) {
    case Access::kRead:
      return "read";
    case Access::kWrite:
      return "write";
    case Access::kReadWrite:
      return "read-write";
  }
  return "?";
}
std::string_view to_string(CaptureMode m) noexcept {
  switch (m) {
    case CaptureMode::kGlobal:
      return "global";
    case CaptureMode::kThreadLocal:
      return "thread-local";
    case CaptureMode::kRelaxed:
      return "relaxed";
  }
  return "?";
}
std::string_view to_string(CaptureStatus s) noexcept {
  switch (s) {
    case CaptureStatus::kNone:
      return "none";
    case CaptureStatus::kActive:
      return "active";
    case CaptureStatus::kInvalidated:
      return "invalidated";
  }
  return "?";
}
std::string_view to_string(CopyKind k) noexcept {
  switch (k) {
    case CopyKind::kHostToDevice:
      return "HtoD";
    case CopyKind::kDeviceToHost:
      return "DtoH";
    case CopyKind::kDeviceToDevice:
      return "DtoD";
    case CopyKind::kPeer:
      return "peer";
    case CopyKind::kHostToHost:
      return "HtoH";
  }
  return "?";
}
std::string_view to_string(NodeKind k) noexcept {
  switch (k) {
    case NodeKind::kKernel:
      return "kernel";
    case NodeKind::kMemcpy:
      return "memcpy";
    case NodeKind::kMemset:
      return "memset";
    case NodeKind::kHost:
      return "host";
    case NodeKind::kEventRecord:
      return "event-record";
    case NodeKind::kEventWait:
      return "event-wait";
    case NodeKind::kEmpty:
      return "empty";
    case NodeKind::kOther:
      return "other";
    case NodeKind::kCollective:
      return "collective";
    case NodeKind::kConditional:
      return "conditional";
  }
  return "?";
}
std::string_view to_string(ConditionalKind k) noexcept {
  switch (k) {
    case ConditionalKind::kIf:
      return "if";
    case ConditionalKind::kWhile:
      return "while";
  }
  return "?";
}
std::string_view to_string(UpdateResult r) noexcept {
  switch (r) {
    case UpdateResult::kSuccess:
      return "success";
    case UpdateResult::kTopologyChanged:
      return "topology changed";
    case UpdateResult::kNodeTypeChanged:
      return "node type changed";
    case UpdateResult::kFunctionChanged:
      return "function changed";
    case UpdateResult::kParametersChanged:
      return "parameters changed";
    case UpdateResult::kNotSupported:
      return "not supported";
    case UpdateResult::kAttributesChanged:
      return "attributes changed";
    case UpdateResult::kError:
      return "error";
  }
  return "?";
}

// ---------------------------------------------------------------- GraphInfo

std::size_t GraphInfo::count(NodeKind kind) const {
  return static_cast<std::size_t>(
      std::count_if(nodes.begin(), nodes.end(), [&](const NodeInfo& n) { return n.kind == kind; }));
}

std::size_t GraphInfo::find(std::string_view name) const {
  std::optional<std::size_t> found;
  for (const auto& n : nodes) {
    if (n.name != name) continue;
    STEPGRAPH_CHECK(!found, InvalidArgument, "GraphInfo::find: several nodes are called '{}'", name);
    found = n.index;
  }
  STEPGRAPH_CHECK(found.has_value(), InvalidArgument, "GraphInfo::find: no node is called '{}'", name);
  return *found;
}

bool GraphInfo::has_edge(std::size_t from, std::size_t to) const {
  return std::binary_search(edges.begin(), edges.end(), std::make_pair(from, to));
}

bool GraphInfo::reaches(std::size_t from, std::size_t to) const {
  std::vector<std::vector<std::size_t>> out(nodes.size());
  for (auto [a, b] : edges) out[a].push_back(b);
  std::vector<char> seen(nodes.size(), 0);
  std::vector<std::size_t> stack{from};
  while (!stack.empty()) {
    auto v = stack.back();
    stack.pop_back();
    if (v == to) return true;
    if (seen[v]) continue;
    seen[v] = 1;
    for (auto w : out[v]) stack.push_back(w);
  }
  return false;
}

// ---------------------------------------------------------------- buffers

namespace detail {
BufferImpl::~BufferImpl() {
  if (kind == MemoryKind::kPinnedHost && backend != nullptr && !view) backend->remove_host_range(host_ptr);
  if (release) release();
}
}  // namespace detail

namespace {
const detail::BufferImpl& checked(const std::shared_ptr<detail::BufferImpl>& impl) {
  STEPGRAPH_CHECK(impl != nullptr, InvalidState, "Buffer: this handle is empty (moved from, or never allocated)");
  return *impl;
}
}  // namespace

std::size_t Buffer::size() const {
  return checked(impl_).size;
}
MemoryKind Buffer::kind() const {
  return checked(impl_).kind;
}
int Buffer::device() const {
  return checked(impl_).device;
}
std::uint64_t Buffer::id() const {
  return checked(impl_).id;
}
void* Buffer::data() const {
  return checked(impl_).device_ptr;
}
void* Buffer::host_data() const {
  const auto& b = checked(impl_);
  STEPGRAPH_CHECK(b.kind == MemoryKind::kPinnedHost, InvalidState,
                  "Buffer #{} is device memory of device {}: the host cannot read it in place; copy it "
                  "to a pinned buffer with Stream::copy",
                  b.id, b.device);
  return b.host_ptr;
}
BufferSlice Buffer::slice() const {
  return BufferSlice{impl_, 0, checked(impl_).size};
}
BufferSlice Buffer::slice(std::size_t offset, std::size_t bytes) const {
  (void)checked(impl_);
  return BufferSlice{impl_, offset, bytes};
}

namespace {
BufferAccess make_access(const Buffer& b, std::size_t offset, std::size_t bytes, Access a) {
  STEPGRAPH_CHECK(b.valid(), InvalidArgument, "a launch declares an access to an empty Buffer handle");
  return BufferAccess{b.impl(), nullptr, offset, bytes, a};
}
}  // namespace

BufferAccess read(const Buffer& b) {
  return make_access(b, 0, b.size(), Access::kRead);
}
BufferAccess read(const Buffer& b, std::size_t o, std::size_t n) {
  return make_access(b, o, n, Access::kRead);
}
BufferAccess write(const Buffer& b) {
  return make_access(b, 0, b.size(), Access::kWrite);
}
BufferAccess write(const Buffer& b, std::size_t o, std::size_t n) {
  return make_access(b, o, n, Access::kWrite);
}
BufferAccess read_write(const Buffer& b) {
  return make_access(b, 0, b.size(), Access::kReadWrite);
}
BufferAccess read_write(const Buffer& b, std::size_t o, std::size_t n) {
  return make_access(b, o, n, Access::kReadWrite);
}
Buffer sub_buffer(const Buffer& parent, std::size_t offset, std::size_t bytes) {
  STEPGRAPH_CHECK(parent.valid(), InvalidArgument, "sub_buffer: the parent handle is empty");
  const auto& p = parent.impl();
  STEPGRAPH_CHECK(bytes > 0 && offset <= p->size && bytes <= p->size - offset, InvalidArgument,
                  "sub_buffer: bytes [{}, {}) are outside buffer #{} of {} bytes", offset, offset + bytes, p->id,
                  p->size);
  auto b = std::make_shared<detail::BufferImpl>();
  b->id = p->backend->next_buffer_id();
  b->kind = p->kind;
  b->device = p->device;
  b->size = bytes;
  b->device_ptr = static_cast<char*>(p->device_ptr) + offset;
  b->host_ptr = p->host_ptr != nullptr ? static_cast<char*>(p->host_ptr) + offset : nullptr;
  b->backend = p->backend;
  b->keep_backend = p->keep_backend;
  b->view = true;
  b->release = [keep = p] {};  // the parent's memory lives as long as the view
  return Buffer(std::move(b));
}

BufferAccess host_range(const void* ptr, std::size_t bytes, Access access) {
  return BufferAccess{nullptr, ptr, 0, bytes, access};
}

// ---------------------------------------------------------------- shared checks

namespace detail {

bool BackendImpl::can_access_peer(int device, int peer) const {
  if (device == peer) return true;
  std::lock_guard lock(mutex_);
  return std::find(peers_.begin(), peers_.end(), std::make_pair(device, peer)) != peers_.end();
}

void BackendImpl::set_peer_enabled(int device, int peer) {
  std::lock_guard lock(mutex_);
  if (std::find(peers_.begin(), peers_.end(), std::make_pair(device, peer)) == peers_.end())
    peers_.emplace_back(device, peer);
}

void BackendImpl::check_device(int device, std::string_view what) const {
  STEPGRAPH_CHECK(device >= 0 && device < device_count(), InvalidArgument,
                  "{}: device {} does not exist on the {} backend ({} device(s))", what, device, to_string(kind()),
                  device_count());
}

void BackendImpl::add_host_range(const std::shared_ptr<BufferImpl>& buffer) {
  std::lock_guard lock(mutex_);
  host_ranges_[reinterpret_cast<std::uintptr_t>(buffer->host_ptr)] = buffer;
}

void BackendImpl::remove_host_range(const void* host_ptr) {
  std::lock_guard lock(mutex_);
  host_ranges_.erase(reinterpret_cast<std::uintptr_t>(host_ptr));
}

void BackendImpl::resolve_accesses(int device, std::string_view what, std::vector<BufferAccess>& accesses) const {
  for (auto& a : accesses) {
    if (a.buffer == nullptr) {
      STEPGRAPH_CHECK(a.host_ptr != nullptr, InvalidArgument,
                      "launch '{}' declares an access with neither a buffer nor a host pointer", what);
      const auto addr = reinterpret_cast<std::uintptr_t>(a.host_ptr);
      std::shared_ptr<BufferImpl> found;
      {
        std::lock_guard lock(mutex_);
        auto it = host_ranges_.upper_bound(addr);
        if (it != host_ranges_.begin()) {
          --it;
          auto b = it->second.lock();
          if (b && addr + a.bytes <= it->first + b->size) found = b;
        }
      }
      STEPGRAPH_CHECK(found != nullptr, InvalidArgument,
                      "launch '{}' on device {} touches host memory [{}, +{} bytes) that is not registered; "
                      "allocate it with Backend::allocate_pinned or register it with Backend::register_host "
                      "before capture",
                      what, device, a.host_ptr, a.bytes);
      a.offset = addr - reinterpret_cast<std::uintptr_t>(found->host_ptr);
      a.buffer = found;
      a.host_ptr = nullptr;
    }
    const BufferImpl& b = *a.buffer;
    STEPGRAPH_CHECK(b.backend == this, InvalidArgument,
                    "launch '{}' touches buffer #{} made by another backend; allocate it from this one", what, b.id);
    STEPGRAPH_CHECK(a.bytes > 0, InvalidArgument,
                    "launch '{}' declares a zero-byte access to buffer #{}; declare the bytes it touches", what, b.id);
    STEPGRAPH_CHECK(a.offset <= b.size && a.bytes <= b.size - a.offset, InvalidArgument,
                    "launch '{}' declares bytes [{}, {}) of buffer #{}, which has {} bytes", what, a.offset,
                    a.offset + a.bytes, b.id, b.size);
    if (b.kind == MemoryKind::kDevice && b.device != device) {
      STEPGRAPH_CHECK(can_access_peer(device, b.device), InvalidArgument,
                      "launch '{}' on device {} touches buffer #{} of device {} without a copy or peer "
                      "access; copy it with Stream::copy or call Backend::enable_peer_access({}, {})",
                      what, device, b.id, b.device, device, b.device);
    }
  }
}

void BackendImpl::check_slice(std::string_view what, const BufferSlice& s) const {
  STEPGRAPH_CHECK(s.buffer != nullptr, InvalidArgument, "{}: the buffer handle is empty", what);
  STEPGRAPH_CHECK(s.buffer->backend == this, InvalidArgument, "{}: buffer #{} was made by another backend", what,
                  s.buffer->id);
  STEPGRAPH_CHECK(s.bytes > 0, InvalidArgument, "{}: zero bytes of buffer #{}; give a non-empty range", what,
                  s.buffer->id);
  STEPGRAPH_CHECK(s.offset <= s.buffer->size && s.bytes <= s.buffer->size - s.offset, InvalidArgument,
                  "{}: bytes [{}, {}) are outside buffer #{} of {} bytes", what, s.offset, s.offset + s.bytes,
                  s.buffer->id, s.buffer->size);
}

CopyKind BackendImpl::copy_kind(const BufferImpl& dst, const BufferImpl& src) {
  const bool dh = dst.kind == MemoryKind::kPinnedHost;
  const bool sh = src.kind == MemoryKind::kPinnedHost;
  if (dh && sh) return CopyKind::kHostToHost;
  if (sh) return CopyKind::kHostToDevice;
  if (dh) return CopyKind::kDeviceToHost;
  return dst.device == src.device ? CopyKind::kDeviceToDevice : CopyKind::kPeer;
}

CopyKind BackendImpl::stream_copy_kind(std::string_view what, const BufferImpl& dst, const BufferImpl& src) {
  const CopyKind kind = copy_kind(dst, src);
  // A host-to-host cudaMemcpyAsync is "fully synchronous with respect to the
  // host" (CUDA Runtime API, "API synchronization behavior"): not stream
  // work ordered after the stream's earlier work. Both backends refuse it
  // rather than give it an order CUDA does not promise.
  STEPGRAPH_CHECK(kind != CopyKind::kHostToHost, InvalidArgument,
                  "{}: both slices are host memory; CUDA runs a host-to-host copy synchronously on the calling "
                  "thread, not as stream work, so it is refused: copy with std::memcpy after synchronizing, or in a "
                  "Stream::host_fn declaring both buffers (stream-ordered and capturable)",
                  what);
  return kind;
}

std::vector<AccessInfo> access_infos(const std::vector<BufferAccess>& accesses) {
  std::vector<AccessInfo> out;
  out.reserve(accesses.size());
  for (const auto& a : accesses) {
    out.push_back(AccessInfo{a.buffer->id, a.buffer->device, a.buffer->kind, a.offset, a.bytes, a.access});
  }
  return out;
}

UpdateInfo check_update_rules(const GraphInfo& cur, const GraphInfo& next) {
  if (cur.nodes.size() != next.nodes.size())
    return {UpdateResult::kTopologyChanged, std::nullopt,
            fmt::format("node count changed from {} to {}", cur.nodes.size(), next.nodes.size())};
  if (cur.edges != next.edges) return {UpdateResult::kTopologyChanged, std::nullopt, "the edges differ"};
  for (std::size_t i = 0; i < cur.nodes.size(); ++i) {
    const auto& a = cur.nodes[i];
    const auto& b = next.nodes[i];
    if (a.kind != b.kind)
      return {UpdateResult::kNodeTypeChanged, i,
              fmt::format("node {} ('{}') was a {} and is now a {}", i, b.name, to_string(a.kind), to_string(b.kind))};
    if (a.device != b.device)
      return {UpdateResult::kParametersChanged, i,
              fmt::format("node {} ('{}') moved from device {} to {}", i, b.name, a.device, b.device)};
    if (a.kind == NodeKind::kMemcpy &&
        (a.copy_kind != b.copy_kind || a.src_device != b.src_device || a.dst_device != b.dst_device))
      return {UpdateResult::kParametersChanged, i,
              fmt::format("memcpy node {} ('{}') changed direction or devices ({} {}->{} to {} {}->{})", i, b.name,
                          to_string(a.copy_kind), a.src_device, a.dst_device, to_string(b.copy_kind), b.src_device,
                          b.dst_device)};
    if (a.kind == NodeKind::kConditional && a.conditional && b.conditional) {
      // A conditional node's own parameters cannot change (its type); its
      // body is updated under the same rules, recursively
      // (cudaGraphExecUpdate, CUDA Runtime API "Graph Management").
      if (a.conditional->kind != b.conditional->kind)
        return {UpdateResult::kParametersChanged, i,
                fmt::format("conditional node {} ('{}') changed from {} to {}", i, b.name,
                            to_string(a.conditional->kind), to_string(b.conditional->kind))};
      if (a.conditional->body && b.conditional->body) {
        UpdateInfo inner = check_update_rules(*a.conditional->body, *b.conditional->body);
        if (!inner.ok()) {
          inner.message = fmt::format("in the body of conditional node {} ('{}'): {}", i, b.name, inner.message);
          inner.node = i;
          return inner;
        }
      }
    }
  }
  return {};
}

void throw_conditional_body(std::string_view what, std::string_view op) {
  throw ConditionalBodyError(
      fmt::format("{} inside the body of a conditional node: CUDA allows only kernel, memcpy, memset, empty, child "
                  "graph and conditional nodes there (CUDA Programming Guide, \"Conditional Graph Nodes\"); move it "
                  "before or after the conditional node",
                  what),
      std::string(op));
}

void check_conditional_body(const GraphInfo& body, std::string_view node) {
  for (const auto& n : body.nodes) {
    switch (n.kind) {
      case NodeKind::kHost:
      case NodeKind::kEventRecord:
      case NodeKind::kEventWait:
      case NodeKind::kCollective:
        throw_conditional_body(
            fmt::format("conditional node '{}': its body holds the {} node '{}'", node, to_string(n.kind), n.name),
            n.name);
      case NodeKind::kConditional:
        if (n.conditional && n.conditional->body) check_conditional_body(*n.conditional->body, n.name);
        break;
      default:
        break;
    }
  }
}

SyncCounts SyncCounters::snapshot() const noexcept {
  SyncCounts c;
  c.stream_synchronize = stream_synchronize.load(std::memory_order_relaxed);
  c.device_synchronize = device_synchronize.load(std::memory_order_relaxed);
  c.event_synchronize = event_synchronize.load(std::memory_order_relaxed);
  c.event_wait_for = event_wait_for.load(std::memory_order_relaxed);
  c.stream_query = stream_query.load(std::memory_order_relaxed);
  c.event_query = event_query.load(std::memory_order_relaxed);
  c.events_waited_on = events_waited_on.load(std::memory_order_relaxed);
  return c;
}

}  // namespace detail

// ---------------------------------------------------------------- handles

int StreamRef::device() const {
  STEPGRAPH_CHECK(impl_ != nullptr, InvalidState, "StreamRef: empty stream handle");
  return impl_->device();
}

namespace {
detail::StreamImpl& s(detail::StreamImpl* impl) {
  STEPGRAPH_CHECK(impl != nullptr, InvalidState, "Stream: empty handle (moved from, or never created)");
  return *impl;
}
}  // namespace

void StreamRef::launch_kernel(KernelParams params) const {
  s(impl_).launch_kernel(std::move(params));
}
void StreamRef::copy(const BufferSlice& dst, const BufferSlice& src, std::string name) const {
  s(impl_).copy(dst, src, std::move(name));
}
void StreamRef::memset(const BufferSlice& dst, unsigned char value, std::string name) const {
  s(impl_).memset(dst, value, std::move(name));
}
void StreamRef::host_fn(std::string name, std::function<void()> fn, std::vector<BufferAccess> accesses) const {
  s(impl_).host_fn(std::move(name), std::move(fn), std::move(accesses));
}
void StreamRef::collective(CollectiveCall call) const {
  STEPGRAPH_CHECK(call.host_start || call.device_enqueue, InvalidArgument,
                  "Stream::collective '{}': neither host_start nor device_enqueue is set", call.name);
  if (call.name.empty())
    call.name = fmt::format("{}{}{} c{} r{}", call.info.op, call.info.reduce.empty() ? "" : " ", call.info.reduce,
                            call.info.communicator, call.info.rank);
  s(impl_).collective(std::move(call));
}
void* StreamRef::native_handle() const {
  return s(impl_).native_handle();
}
void StreamRef::record(Event& event) const {
  STEPGRAPH_CHECK(event.valid(), InvalidArgument, "Stream::record: the event handle is empty");
  s(impl_).record(*event.impl());
}
void StreamRef::wait(const Event& event) const {
  STEPGRAPH_CHECK(event.valid(), InvalidArgument, "Stream::wait: the event handle is empty");
  s(impl_).wait(*event.impl());
}
void StreamRef::synchronize() const {
  s(impl_).synchronize();
}
bool StreamRef::query() const {
  return s(impl_).query();
}
void StreamRef::begin_capture(CaptureMode mode) const {
  s(impl_).begin_capture(mode);
}
Graph StreamRef::end_capture() const {
  return Graph(s(impl_).end_capture());
}
CaptureStatus StreamRef::capture_status() const {
  return s(impl_).capture_status();
}
ConditionHandle StreamRef::create_condition(unsigned default_value) const {
  return s(impl_).create_condition(default_value);
}
void StreamRef::capture_if(ConditionHandle condition, const std::function<void(StreamRef)>& body,
                           std::string name) const {
  STEPGRAPH_CHECK(static_cast<bool>(body), InvalidArgument, "Stream::capture_if '{}': the body function is empty",
                  name);
  s(impl_).capture_conditional(ConditionalKind::kIf, condition, body, name.empty() ? "if" : std::move(name));
}
void StreamRef::capture_while(ConditionHandle condition, const std::function<void(StreamRef)>& body,
                              std::string name) const {
  STEPGRAPH_CHECK(static_cast<bool>(body), InvalidArgument, "Stream::capture_while '{}': the body function is empty",
                  name);
  s(impl_).capture_conditional(ConditionalKind::kWhile, condition, body, name.empty() ? "while" : std::move(name));
}

void run_as_graph(StreamRef stream, const std::function<void(StreamRef)>& fn) {
  STEPGRAPH_CHECK(static_cast<bool>(fn), InvalidArgument, "run_as_graph: the function is empty");
  if (stream.capture_status() == CaptureStatus::kActive) {
    fn(stream);
    return;
  }
  Graph graph;
  {
    CaptureSession session(stream, CaptureMode::kThreadLocal);
    fn(stream);
    graph = session.end();
  }
  // No upload: instantiating with upload waits for it on the host (cuda).
  InstantiateOptions options;
  options.upload = false;
  const GraphExec exec = graph.instantiate(options);
  // The launch keeps what it runs alive on both backends (host: the task
  // holds the payload; cuda: a destroyed executable's resources are freed
  // when its launches have finished, Note [Deferred release]).
  exec.launch(stream);
}

Stream::Stream(std::unique_ptr<detail::StreamImpl> impl, std::shared_ptr<detail::BackendImpl> backend)
    : StreamRef(impl.release()), backend_(std::move(backend)) {}
Stream::Stream(Stream&& o) noexcept : StreamRef(o.impl_), backend_(std::move(o.backend_)) {
  o.impl_ = nullptr;
}
Stream& Stream::operator=(Stream&& o) noexcept {
  if (this != &o) {
    delete impl_;
    impl_ = o.impl_;
    o.impl_ = nullptr;
    backend_ = std::move(o.backend_);
  }
  return *this;
}
Stream::~Stream() {
  delete impl_;
}

Event::Event(std::unique_ptr<detail::EventImpl> impl, std::shared_ptr<detail::BackendImpl> backend)
    : impl_(std::move(impl)), backend_(std::move(backend)) {}
Event::Event() = default;
Event::Event(Event&&) noexcept = default;
Event& Event::operator=(Event&&) noexcept = default;
Event::~Event() = default;

namespace {
detail::EventImpl& e(const std::unique_ptr<detail::EventImpl>& impl) {
  STEPGRAPH_CHECK(impl != nullptr, InvalidState, "Event: empty handle (moved from, or never created)");
  return *impl;
}
}  // namespace

int Event::device() const {
  return e(impl_).device();
}
bool Event::query() const {
  return e(impl_).query();
}
void Event::synchronize() const {
  e(impl_).synchronize();
}
bool Event::wait_for(std::chrono::nanoseconds timeout) const {
  return e(impl_).wait_for(timeout);
}
float Event::elapsed_ms(const Event& start, const Event& end) {
  return e(start.impl_).elapsed_ms(e(end.impl_));
}

Graph::Graph(std::unique_ptr<detail::GraphImpl> impl) : impl_(std::move(impl)) {}
Graph::Graph() = default;
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;
Graph::~Graph() = default;

namespace {
const detail::GraphImpl& g(const std::unique_ptr<detail::GraphImpl>& impl) {
  STEPGRAPH_CHECK(impl != nullptr, InvalidState, "Graph: empty handle (moved from, or never captured)");
  return *impl;
}
}  // namespace

GraphInfo Graph::info() const {
  return g(impl_).info();
}
std::size_t Graph::node_count() const {
  return g(impl_).info().nodes.size();
}
GraphExec Graph::instantiate(InstantiateOptions options) const {
  return GraphExec(g(impl_).instantiate(options));
}

std::string Graph::to_dot() const {
  const GraphInfo info = g(impl_).info();
  std::ostringstream out;
  out << "digraph stepgraph {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\"];\n";
  for (const auto& n : info.nodes) {
    out << "  n" << n.index << " [label=\"" << n.name << "\\n" << to_string(n.kind) << " @dev" << n.device;
    if (n.kind == NodeKind::kMemcpy) out << "\\n" << to_string(n.copy_kind) << " " << n.bytes << " B";
    if (n.conditional)
      out << "\\n"
          << to_string(n.conditional->kind) << " #" << n.conditional->handle << ", body of "
          << (n.conditional->body ? n.conditional->body->nodes.size() : 0) << " node(s)";
    for (const auto& a : n.accesses)
      out << "\\n" << to_string(a.access) << " #" << a.buffer_id << "[" << a.offset << "+" << a.bytes << "]";
    out << "\"];\n";
  }
  for (auto [a, b] : info.edges) out << "  n" << a << " -> n" << b << ";\n";
  out << "}\n";
  return out.str();
}

GraphExec::GraphExec(std::unique_ptr<detail::GraphExecImpl> impl) : impl_(std::move(impl)) {}
GraphExec::GraphExec() = default;
GraphExec::GraphExec(GraphExec&&) noexcept = default;
GraphExec& GraphExec::operator=(GraphExec&&) noexcept = default;
GraphExec::~GraphExec() = default;

namespace {
detail::GraphExecImpl& x(const std::unique_ptr<detail::GraphExecImpl>& impl) {
  STEPGRAPH_CHECK(impl != nullptr, InvalidState, "GraphExec: empty handle (moved from, or never instantiated)");
  return *impl;
}
}  // namespace

void GraphExec::launch(StreamRef stream) const {
  x(impl_).launch(s(stream.impl()));
}
UpdateInfo GraphExec::update(const Graph& graph) {
  STEPGRAPH_CHECK(graph.valid(), InvalidArgument, "GraphExec::update: the graph handle is empty");
  return x(impl_).update(*graph.impl());
}
std::size_t GraphExec::node_count() const {
  return x(impl_).node_count();
}

CaptureSession::CaptureSession(StreamRef stream, CaptureMode mode) : stream_(stream) {
  stream_.begin_capture(mode);
}
CaptureSession::~CaptureSession() {
  if (!active_) return;
  try {
    (void)stream_.end_capture();
  } catch (const std::exception& ex) {
    STEPGRAPH_DEBUG(kCapture, "capture session unwound: {}", ex.what());
  }
}
Graph CaptureSession::end() {
  STEPGRAPH_CHECK(active_, InvalidState, "CaptureSession::end: the capture has already ended");
  active_ = false;
  return stream_.end_capture();
}

CaptureModeGuard::CaptureModeGuard(const Backend& backend, CaptureMode mode)
    : backend_(&backend), previous_(backend.exchange_thread_capture_mode(mode)) {}
CaptureModeGuard::~CaptureModeGuard() {
  (void)backend_->exchange_thread_capture_mode(previous_);
}

// ---------------------------------------------------------------- Backend

Backend::Backend(std::shared_ptr<detail::BackendImpl> impl) : impl_(std::move(impl)) {}
Backend::~Backend() = default;

std::shared_ptr<Backend> Backend::create(BackendKind kind, BackendOptions options) {
  if (kind == BackendKind::kHost) return std::make_shared<Backend>(detail::make_host_backend(options));
  std::string reason;
  STEPGRAPH_CHECK(cuda_available(&reason), InvalidState,
                  "the cuda backend cannot run here: {}; use the host backend (--backend host)", reason);
  return std::make_shared<Backend>(detail::make_cuda_backend(options));
}

std::shared_ptr<Backend> Backend::create(std::string_view name, BackendOptions options) {
  if (name == "host") return create(BackendKind::kHost, options);
  if (name == "cuda") return create(BackendKind::kCuda, options);
  if (name == "auto") return create(cuda_available() ? BackendKind::kCuda : BackendKind::kHost, options);
  throw InvalidArgument(fmt::format("unknown backend '{}': use 'auto', 'cuda' or 'host'", name));
}

bool Backend::cuda_available(std::string* reason) {
  return detail::cuda_device_present(reason);
}

BackendKind Backend::kind() const {
  return impl_->kind();
}
int Backend::device_count() const {
  return impl_->device_count();
}
DeviceInfo Backend::device(int index) const {
  impl_->check_device(index, "Backend::device");
  return impl_->device(index);
}
Buffer Backend::allocate(int device, std::size_t bytes) {
  impl_->check_device(device, "Backend::allocate");
  STEPGRAPH_CHECK(bytes > 0, InvalidArgument,
                  "Backend::allocate: zero bytes requested on device {}; a buffer needs at least one byte", device);
  return Buffer(impl_->allocate(device, bytes));
}
Buffer Backend::allocate_pinned(std::size_t bytes, int numa_node) {
  STEPGRAPH_CHECK(bytes > 0, InvalidArgument,
                  "Backend::allocate_pinned: zero bytes requested; a buffer needs at least one byte");
  auto b = impl_->allocate_pinned(bytes, numa_node);
  impl_->add_host_range(b);
  return Buffer(std::move(b));
}
Buffer Backend::register_host(void* ptr, std::size_t bytes) {
  STEPGRAPH_CHECK(ptr != nullptr, InvalidArgument, "Backend::register_host: null pointer");
  STEPGRAPH_CHECK(bytes > 0, InvalidArgument, "Backend::register_host: zero bytes at {}", ptr);
  auto b = impl_->register_host(ptr, bytes);
  impl_->add_host_range(b);
  return Buffer(std::move(b));
}
void Backend::enable_peer_access(int device, int peer) {
  impl_->check_device(device, "Backend::enable_peer_access");
  impl_->check_device(peer, "Backend::enable_peer_access");
  impl_->enable_peer_access(device, peer);
}
bool Backend::can_access_peer(int device, int peer) const {
  return impl_->can_access_peer(device, peer);
}
Stream Backend::create_stream(int device, StreamOptions options) {
  impl_->check_device(device, "Backend::create_stream");
  return Stream(impl_->create_stream(device, options), impl_);
}
Event Backend::create_event(int device) {
  impl_->check_device(device, "Backend::create_event");
  return Event(impl_->create_event(device), impl_);
}
StreamRef Backend::legacy_default_stream(int device) {
  impl_->check_device(device, "Backend::legacy_default_stream");
  return StreamRef(impl_->legacy_default_stream(device));
}
SyncCounts Backend::sync_counts() const {
  return impl_->sync_counters().snapshot();
}

void Backend::synchronize_device(int device) {
  impl_->check_device(device, "Backend::synchronize_device");
  impl_->synchronize_device(device);
}
std::optional<std::string> Backend::device_fault(int device) const {
  impl_->check_device(device, "Backend::device_fault");
  return impl_->device_fault(device);
}
std::optional<std::uint64_t> Backend::memory_in_use(int device) const {
  impl_->check_device(device, "Backend::memory_in_use");
  return impl_->memory_in_use(device);
}
CaptureMode Backend::exchange_thread_capture_mode(CaptureMode mode) const {
  return impl_->exchange_thread_capture_mode(mode);
}

}  // namespace stepgraph::runtime
