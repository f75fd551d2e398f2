// cuda graphs: introspection of a captured cudaGraph_t, instantiation with
// parameters, launch, and exec update.
#include <algorithm>
#include <tuple>

#include <fmt/format.h>

#include <stepgraph/core/log.h>

#include "../deferred_release.h"
#include "internal.h"

namespace stepgraph::runtime::cuda {

namespace {

UpdateResult from_cuda(cudaGraphExecUpdateResult r) {
  switch (r) {
    case cudaGraphExecUpdateSuccess:
      return UpdateResult::kSuccess;
    case cudaGraphExecUpdateError:
      return UpdateResult::kError;
    case cudaGraphExecUpdateErrorTopologyChanged:
      return UpdateResult::kTopologyChanged;
    case cudaGraphExecUpdateErrorNodeTypeChanged:
      return UpdateResult::kNodeTypeChanged;
    case cudaGraphExecUpdateErrorFunctionChanged:
    case cudaGraphExecUpdateErrorUnsupportedFunctionChange:
      return UpdateResult::kFunctionChanged;
    case cudaGraphExecUpdateErrorParametersChanged:
      return UpdateResult::kParametersChanged;
    case cudaGraphExecUpdateErrorNotSupported:
      return UpdateResult::kNotSupported;
    case cudaGraphExecUpdateErrorAttributesChanged:
      return UpdateResult::kAttributesChanged;
  }
  return UpdateResult::kError;
}

std::string_view instantiate_result_name(cudaGraphInstantiateResult r) {
  switch (r) {
    case cudaGraphInstantiateSuccess:
      return "success";
    case cudaGraphInstantiateError:
      return "error";
    case cudaGraphInstantiateInvalidStructure:
      return "invalid structure (a cycle?)";
    case cudaGraphInstantiateNodeOperationNotSupported:
      return "a node's operation is not supported";
    case cudaGraphInstantiateMultipleDevicesNotSupported:
      return "nodes on several devices are not supported";
    case cudaGraphInstantiateConditionalHandleUnused:
      return "a conditional handle is unused";
  }
  return "unknown";
}

}  // namespace

// ---------------------------------------------------------------- CudaGraph

CudaGraph::CudaGraph(std::shared_ptr<CudaBackend> backend, int device, UniqueGraph graph,
                     const std::shared_ptr<CaptureRecord>& record)
    : backend_(std::move(backend)), device_(device), graph_(std::move(graph)) {
  DeviceGuard guard(device_);
  info_ = describe(graph_.get(), device_, record.get(), &index_);
  if (record != nullptr) {
    std::lock_guard lock(record->mutex);
    keep_ = record->keep;
  } else {
    keep_ = std::make_shared<KeepAlive>();
  }
}

GraphInfo CudaGraph::describe(cudaGraph_t graph, int device, CaptureRecord* record,
                              std::unordered_map<cudaGraphNode_t, std::size_t>* index_out) {
  GraphInfo info;
  std::unordered_map<cudaGraphNode_t, std::size_t> local_index;
  auto& index = index_out != nullptr ? *index_out : local_index;
  std::size_t count = 0;
  STEPGRAPH_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  if (count > 0) STEPGRAPH_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
  nodes.resize(count);

  // Order: capture order of the annotated nodes (their seq); a node
  // stepgraph did not annotate (captured by a library, say) stays right
  // after the annotated node cudaGraphGetNodes lists before it. Both
  // backends thus number nodes in capture order, which is also the order
  // cudaGraphExecUpdate pairs captured nodes in.
  struct Item {
    std::uint64_t seq;
    std::size_t sub;
    cudaGraphNode_t node;
    const NodeMeta* meta;
  };
  std::vector<Item> items;
  items.reserve(count);
  std::unique_lock<std::mutex> lock;
  if (record != nullptr) lock = std::unique_lock(record->mutex);
  std::uint64_t last_seq = 0;
  std::size_t sub = 0;
  for (cudaGraphNode_t n : nodes) {
    const NodeMeta* meta = nullptr;
    if (record != nullptr) {
      auto it = record->nodes.find(n);
      if (it != record->nodes.end()) meta = &it->second;
    }
    if (meta != nullptr) {
      last_seq = meta->seq;
      sub = 0;
      items.push_back({meta->seq, 0, n, meta});
    } else {
      items.push_back({last_seq, ++sub, n, nullptr});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return std::tie(a.seq, a.sub) < std::tie(b.seq, b.sub); });

  info.nodes.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    const Item& it = items[i];
    cudaGraphNodeType type{};
    STEPGRAPH_CUDA_CHECK(cudaGraphNodeGetType(it.node, &type));
    NodeInfo ni;
    ni.index = i;
    // The kind is CUDA's own node type, so that the update rules compare
    // what cudaGraphExecUpdate compares; the rest comes from the annotation.
    ni.kind = node_kind(type);
    ni.device = device;
    if (it.meta != nullptr) {
      ni.name = it.meta->name;
      ni.device = it.meta->device;
      if (it.meta->collective) {
        // NCCL's kernel (or the nodes it added) shown as what it is.
        ni.kind = NodeKind::kCollective;
        ni.collective = it.meta->collective;
      }
      ni.conditional = it.meta->conditional;
      ni.accesses = it.meta->accesses;
      ni.copy_kind = it.meta->copy_kind;
      ni.src_device = it.meta->src_device;
      ni.dst_device = it.meta->dst_device;
      ni.bytes = it.meta->bytes;
      ni.priority = it.meta->priority;
    } else {
      ni.name = fmt::format("{}_{}", to_string(ni.kind), i);
    }
    index.emplace(it.node, i);
    info.nodes.push_back(std::move(ni));
  }
  if (lock.owns_lock()) lock.unlock();

  std::size_t edges = 0;
  STEPGRAPH_CUDA_CHECK(graph_get_edges(graph, nullptr, nullptr, &edges));
  std::vector<cudaGraphNode_t> from(edges);
  std::vector<cudaGraphNode_t> to(edges);
  if (edges > 0) STEPGRAPH_CUDA_CHECK(graph_get_edges(graph, from.data(), to.data(), &edges));
  for (std::size_t e = 0; e < edges; ++e) {
    auto a = index.find(from[e]);
    auto b = index.find(to[e]);
    if (a == index.end() || b == index.end()) continue;
    info.edges.emplace_back(a->second, b->second);
  }
  std::sort(info.edges.begin(), info.edges.end());
  info.edges.erase(std::unique(info.edges.begin(), info.edges.end()), info.edges.end());
  return info;
}

std::optional<std::size_t> CudaGraph::index_of(cudaGraphNode_t node) const {
  auto it = index_.find(node);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::unique_ptr<detail::GraphExecImpl> CudaGraph::instantiate(const InstantiateOptions& options) const {
  backend_->throw_if_faulted(device_, "Graph::instantiate");
  DeviceGuard guard(device_);
  // cudaGraphInstantiateWithParams (CUDA Runtime API, "Graph Management"):
  // Upload makes the first launch cheap (the work is uploaded now, on an
  // internal stream of the graph's device); UseNodePriority honours the
  // per-kernel cudaLaunchAttributePriority captured from LaunchSpec::priority;
  // errNode_out names the failing node.
  cudaGraphInstantiateParams params{};
  params.flags = 0;
  if (options.upload) {
    params.flags |= cudaGraphInstantiateFlagUpload;
    params.uploadStream = backend_->upload_stream(device_);
  }
  if (options.use_node_priority) params.flags |= cudaGraphInstantiateFlagUseNodePriority;
  cudaGraphExec_t raw = nullptr;
  const cudaError_t e = cudaGraphInstantiateWithParams(&raw, graph_.get(), &params);
  UniqueGraphExec exec(raw);
  if (e != cudaSuccess || params.result_out != cudaGraphInstantiateSuccess) {
    if (is_sticky(e)) throw_cuda_error(e, "cudaGraphInstantiateWithParams(&exec, graph, &params)", __FILE__, __LINE__);
    (void)cudaGetLastError();
    std::string node;
    if (params.errNode_out != nullptr) {
      if (auto i = index_of(params.errNode_out))
        node = info_.nodes[*i].name;
      else
        node = "<a node stepgraph does not know>";
    }
    throw GraphInstantiateError(
        fmt::format("Graph::instantiate on device {} failed: {} ({}), result: {}{}; fix that node (its launch "
                    "dimensions, its device, or a node kind the graph cannot hold) and capture again",
                    device_, cudaGetErrorName(e), cudaGetErrorString(e), instantiate_result_name(params.result_out),
                    node.empty() ? std::string() : fmt::format(", at node '{}'", node)),
        node);
  }
  if (options.upload) {
    // Wait for the upload here, a one-off cost of instantiation: a launch
    // on a user stream is then ordered after it without relying on the
    // driver to order a launch after an upload made on another stream
    // (cudaGraphUpload documents ordering only within its own stream).
    STEPGRAPH_CUDA_CHECK(cudaStreamSynchronize(params.uploadStream));
  }
  // The executable's own copy of its graph, for launches into a capture
  // (Note [A graph launched into a capture]): the user's Graph may be gone
  // by then, and a cudaGraph_t must not be used by two threads at once.
  cudaGraph_t clone = nullptr;
  STEPGRAPH_CUDA_CHECK(cudaGraphClone(&clone, graph_.get()));
  STEPGRAPH_DEBUG(kCapture, "instantiated a graph of {} node(s) on device {}", info_.nodes.size(), device_);
  return std::make_unique<CudaGraphExec>(backend_, device_, std::move(exec), UniqueGraph(clone), info_, keep_);
}

// ---------------------------------------------------------------- CudaGraphExec

CudaGraphExec::CudaGraphExec(std::shared_ptr<CudaBackend> backend, int device, UniqueGraphExec exec, UniqueGraph source,
                             GraphInfo info, std::shared_ptr<const KeepAlive> keep)
    : backend_(std::move(backend)),
      device_(device),
      exec_(std::move(exec)),
      source_(std::move(source)),
      info_(std::move(info)),
      keep_(std::move(keep)) {}

namespace {
/// What a destroyed executable's launches may still use, and the events
/// that say when they are over.
struct LaunchRemains {
  std::shared_ptr<const KeepAlive> keep;
  std::vector<std::shared_ptr<const KeepAlive>> retired;
  std::map<int, UniqueEvent> events;

  /// True when no launch can still run: every event complete, or failed (a
  /// sticky fault stops all work of the device).
  [[nodiscard]] bool launches_over() const noexcept {
    for (const auto& [device, event] : events) {
      const cudaError_t e = cudaEventQuery(event.get());
      if (e == cudaErrorNotReady) return false;
      if (e != cudaSuccess && !is_sticky(e)) (void)cudaGetLastError();  // not this thread's error to report
    }
    return true;
  }
};
}  // namespace

CudaGraphExec::~CudaGraphExec() {
  // cudaGraphExecDestroy lets in-flight launches finish ("freed
  // asynchronously on completion", CUDA Runtime API "Graph Management"), but
  // the buffers and host function boxes they use are released with this
  // object. Waiting here (cudaEventSynchronize) would hang forever behind a
  // launch that never ends (a spinning kernel, a collective whose peer
  // died: DESIGN 1.6), and freeing them would synchronize the same way. So
  // they go to the release thread, which frees them when the launch events
  // complete, and never if they do not (Note [Deferred release]).
  auto remains = std::make_shared<LaunchRemains>();
  remains->keep = std::move(keep_);
  remains->retired = std::move(retired_);
  remains->events = std::move(launch_events_);
  if (remains->launches_over()) return;  // freed here, on the caller's thread
  STEPGRAPH_DEBUG(kCapture,
                  "an executable of device {} is destroyed while a launch may still run: its buffers are freed "
                  "when the launch completes (never, if it never does)",
                  device_);
  const LaunchRemains* probe = remains.get();
  detail::release_when(std::move(remains), [probe] { return probe->launches_over(); });
}

void CudaGraphExec::prune_retired_locked() {
  if (retired_.empty()) return;
  for (auto& [device, event] : launch_events_) {
    const cudaError_t e = cudaEventQuery(event.get());
    if (e == cudaSuccess) continue;
    if (e != cudaErrorNotReady && !is_sticky(e)) (void)cudaGetLastError();
    return;  // a launch may still use them
  }
  retired_.clear();
}

// Note [A graph launched into a capture]
// cudaGraphLaunch is not documented as capturable, and a public report
// (onnxruntime PR #32081, CUDA 12.6, H200) measured "operation not permitted
// when stream is capturing". So a launch into a capturing stream adds the
// child graph node itself: the capture's graph and dependencies from
// cudaStreamGetCaptureInfo, cudaGraphAddChildGraphNode (which clones the
// executable's own copy of its graph, kept in step with update()), then
// cudaStreamUpdateCaptureDependencies so that the stream's next node
// depends on the child (CUDA Runtime API, "Stream Management" and "Graph
// Management"). The child node runs the graph as it is at this launch: a
// later update() of the executable does not change it, as on the host
// backend. CUDA refuses a child graph holding allocation, free or
// conditional nodes (cudaGraphAddChildGraphNode).
void CudaGraphExec::add_child_node(CudaStream& stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaGraph_t capture_graph = nullptr;
  const cudaGraphNode_t* deps = nullptr;
  std::size_t num_deps = 0;
  bool plain_edges = true;
  STEPGRAPH_CUDA_CHECK(
      stream_capture_frontier(stream.handle(), &status, &capture_graph, &deps, &num_deps, &plain_edges));
  STEPGRAPH_CHECK(plain_edges, InvalidState,
                  "GraphExec::launch into a capture on device {}: the stream's last captured work ends in a "
                  "programmatic (port) edge, which a child graph node cannot take; launch the executable before "
                  "that work or after an ordinary node",
                  stream.device());
  // Copied out: the driver's array is valid only until the next call on the stream.
  const std::vector<cudaGraphNode_t> after(deps, deps + num_deps);
  cudaGraphNode_t child = nullptr;
  STEPGRAPH_CUDA_CHECK(cudaGraphAddChildGraphNode(&child, capture_graph, after.data(), after.size(), source_.get()));
  STEPGRAPH_CUDA_CHECK(stream_set_capture_dependencies(stream.handle(), &child, 1));
}

void CudaGraphExec::launch(detail::StreamImpl& stream_impl) {
  CudaStream& stream = as_cuda(stream_impl, "GraphExec::launch");
  const int device = stream.device();
  backend_->throw_if_faulted(device, "GraphExec::launch");
  DeviceGuard guard(device);
  auto enqueue = stream.lock_enqueue();
  std::lock_guard lock(mutex_);
  const auto capture = stream.capture_state().status;
  STEPGRAPH_CHECK(capture != cudaStreamCaptureStatusInvalidated, InvalidState,
                  "GraphExec::launch on device {}: the stream's capture was invalidated by an earlier illegal call; "
                  "end it on its origin stream (it yields no graph) and capture again",
                  device);
  if (capture == cudaStreamCaptureStatusActive) {
    for (const auto& n : info_.nodes) {
      STEPGRAPH_CHECK(n.kind != NodeKind::kConditional, InvalidArgument,
                      "GraphExec::launch into a capture on device {}: the graph holds the conditional node '{}', and "
                      "a child graph node cannot hold conditional nodes (cudaGraphAddChildGraphNode); launch it "
                      "outside the capture, or capture its work into this graph directly",
                      device, n.name);
      if (n.kind == NodeKind::kHost || n.kind == NodeKind::kCollective || n.kind == NodeKind::kEventRecord ||
          n.kind == NodeKind::kEventWait)
        stream.refuse_in_body(
            fmt::format("GraphExec::launch of a graph holding the {} node '{}'", to_string(n.kind), n.name), n.name);
    }
    add_child_node(stream);
    std::vector<cudaGraphNode_t> nodes;
    if (auto rec = stream.captured_nodes(nodes)) {
      NodeMeta meta;
      meta.name = "graph_launch";
      meta.kind = NodeKind::kOther;
      meta.device = device;
      for (const auto& n : info_.nodes) meta.accesses.insert(meta.accesses.end(), n.accesses.begin(), n.accesses.end());
      KeepAlive keep;
      keep.children.push_back(keep_);
      CudaStream::annotate(*rec, nodes, meta, std::move(keep));
    }
    return;
  }
  prune_retired_locked();
  // Launches of one executable are ordered after each other whatever the
  // stream (cudaGraphLaunch, CUDA Runtime API "Graph Management").
  STEPGRAPH_CUDA_CHECK(cudaGraphLaunch(exec_.get(), stream.handle()));
  // Completion is observed through an event per launch (DESIGN 1.6), never
  // a host function, which CUDA does not call after a fault.
  auto& ev = launch_events_[device];
  if (!ev) {
    cudaEvent_t raw = nullptr;
    STEPGRAPH_CUDA_CHECK(cudaEventCreateWithFlags(&raw, cudaEventDisableTiming));
    ev.reset(raw);
  }
  STEPGRAPH_CUDA_CHECK(cudaEventRecord(ev.get(), stream.handle()));
}

UpdateInfo CudaGraphExec::update(const detail::GraphImpl& graph_impl) {
  const auto* graph = dynamic_cast<const CudaGraph*>(&graph_impl);
  STEPGRAPH_CHECK(graph != nullptr, InvalidArgument,
                  "GraphExec::update: the graph was captured by another backend; update with a graph of the cuda "
                  "backend");
  backend_->throw_if_faulted(device_, "GraphExec::update");
  std::lock_guard lock(mutex_);
  const GraphInfo next = graph->info();
  // The documented rules first (same count, edges, kinds, devices, memcpy
  // directions), so both backends refuse the same updates and name the node;
  // then CUDA's own check, which may refuse more (attributes, priorities).
  UpdateInfo rules = detail::check_update_rules(info_, next);
  if (!rules.ok()) {
    rules.message = fmt::format(
        "GraphExec::update refused: {}; the executable is unchanged: instantiate the new "
        "graph instead",
        rules.message);
    return rules;
  }
  DeviceGuard guard(device_);
  // The executable's copy of its graph follows the update (Note [A graph
  // launched into a capture]); made first, so that a failure leaves all as it was.
  cudaGraph_t clone = nullptr;
  STEPGRAPH_CUDA_CHECK(cudaGraphClone(&clone, graph->handle()));
  UniqueGraph next_source(clone);
  cudaGraphExecUpdateResultInfo result{};
  const cudaError_t e = cudaGraphExecUpdate(exec_.get(), graph->handle(), &result);
  if (e == cudaSuccess && result.result == cudaGraphExecUpdateSuccess) {
    source_ = std::move(next_source);
    retired_.push_back(std::move(keep_));
    keep_ = graph->keep();
    info_ = next;
    prune_retired_locked();
    return {};
  }
  if (is_sticky(e)) throw_cuda_error(e, "cudaGraphExecUpdate(exec, graph, &result)", __FILE__, __LINE__);
  (void)cudaGetLastError();
  UpdateInfo out;
  out.result = from_cuda(result.result);
  if (out.result == UpdateResult::kSuccess) out.result = UpdateResult::kError;
  if (result.errorNode != nullptr) out.node = graph->index_of(result.errorNode);
  out.message = fmt::format(
      "cudaGraphExecUpdate refused the update: {} ({}){}; the executable is unchanged: instantiate the new graph "
      "instead",
      to_string(out.result), cudaGetErrorName(e),
      out.node ? fmt::format(", at node {} ('{}')", *out.node, next.nodes[*out.node].name) : std::string());
  return out;
}

std::size_t CudaGraphExec::node_count() const {
  std::lock_guard lock(mutex_);
  return info_.nodes.size();
}

}  // namespace stepgraph::runtime::cuda
