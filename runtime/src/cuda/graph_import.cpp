// Reading a raw cudaGraph_t into a RawGraphDescription (Note [Importing a
// raw CUDA graph] in graph_import.h). Only the query lives here; the
// conversion to a StepGraph is CPU code (../graph_import.cpp).
//
// Every per-node query beyond the node type is best effort: a node CUDA will
// not describe (a kernel from a driver-API module that cudaFuncGetName cannot
// name, a memcpy to an array) keeps an empty name or 0 bytes, and the failed
// call is cleared from the thread's last error. Node list, types and edges
// are required: their failure throws (STEPGRAPH_CUDA_CHECK).
// CUDA Runtime API, "Graph Management": cudaGraphGetNodes, cudaGraphGetEdges,
// cudaGraphNodeGetType, cudaGraphKernelNodeGetParams,
// cudaGraphMemcpyNodeGetParams, cudaGraphMemsetNodeGetParams,
// cudaGraphChildGraphNodeGetGraph, cudaGraphMemAllocNodeGetParams.
#include <cxxabi.h>

#include <cstdlib>
#include <memory>
#include <unordered_map>

#include <fmt/format.h>

#include <stepgraph/runtime/graph_import.h>

#include "cuda_compat.h"

namespace stepgraph::runtime {

namespace {

bool query_ok(cudaError_t e) noexcept {
  if (e == cudaSuccess) return true;
  (void)cudaGetLastError();  // a failed query is not sticky; do not leave it for the next caller
  return false;
}

RawNodeType raw_type(cudaGraphNodeType type) noexcept {
  if (cuda::is_conditional_node(type)) return RawNodeType::kConditional;
  switch (type) {
    case cudaGraphNodeTypeKernel:
      return RawNodeType::kKernel;
    case cudaGraphNodeTypeMemcpy:
      return RawNodeType::kMemcpy;
    case cudaGraphNodeTypeMemset:
      return RawNodeType::kMemset;
    case cudaGraphNodeTypeHost:
      return RawNodeType::kHost;
    case cudaGraphNodeTypeGraph:
      return RawNodeType::kChildGraph;
    case cudaGraphNodeTypeEmpty:
      return RawNodeType::kEmpty;
    case cudaGraphNodeTypeWaitEvent:
      return RawNodeType::kEventWait;
    case cudaGraphNodeTypeEventRecord:
      return RawNodeType::kEventRecord;
    case cudaGraphNodeTypeExtSemaphoreSignal:
      return RawNodeType::kSemaphoreSignal;
    case cudaGraphNodeTypeExtSemaphoreWait:
      return RawNodeType::kSemaphoreWait;
    case cudaGraphNodeTypeMemAlloc:
      return RawNodeType::kMemAlloc;
    case cudaGraphNodeTypeMemFree:
      return RawNodeType::kMemFree;
    default:
      return RawNodeType::kUnknown;
  }
}

/// "_Z9raw_scalePfm" -> "raw_scale(float*, unsigned long)"; other names as given.
std::string demangle(const char* name) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(abi::__cxa_demangle(name, nullptr, nullptr, &status), std::free);
  return status == 0 && out != nullptr ? std::string(out.get()) : std::string(name);
}

void describe_node(cudaGraphNode_t node, RawNode& out) {
  switch (out.type) {
    case RawNodeType::kKernel: {
      cudaKernelNodeParams p{};
      if (query_ok(cudaGraphKernelNodeGetParams(node, &p)) && p.func != nullptr) {
        if (const char* name = cuda::func_name(p.func)) out.name = demangle(name);
      }
      break;
    }
    case RawNodeType::kMemcpy: {
      cudaMemcpy3DParms p{};
      // Linear copies only: with an array the extent's width is in elements.
      if (query_ok(cudaGraphMemcpyNodeGetParams(node, &p)) && p.srcArray == nullptr && p.dstArray == nullptr)
        out.bytes = static_cast<std::uint64_t>(p.extent.width) * p.extent.height * p.extent.depth;
      break;
    }
    case RawNodeType::kMemset: {
      cudaMemsetParams p{};
      if (query_ok(cudaGraphMemsetNodeGetParams(node, &p)))
        out.bytes = static_cast<std::uint64_t>(p.elementSize) * p.width * p.height;
      break;
    }
    case RawNodeType::kChildGraph: {
      cudaGraph_t child = nullptr;  // owned by the node
      std::size_t count = 0;
      if (query_ok(cudaGraphChildGraphNodeGetGraph(node, &child)) &&
          query_ok(cudaGraphGetNodes(child, nullptr, &count)))
        out.child_nodes = count;
      break;
    }
    case RawNodeType::kMemAlloc: {
      cudaMemAllocNodeParams p{};
      if (query_ok(cudaGraphMemAllocNodeGetParams(node, &p))) out.bytes = p.bytesize;
      break;
    }
    default:
      break;
  }
}

}  // namespace

RawGraphDescription describe_raw_cuda_graph(void* cuda_graph) {
  STEPGRAPH_CHECK(cuda_graph != nullptr, InvalidArgument,
                  "describe_raw_cuda_graph: the graph is null; pass the cudaGraph_t returned by "
                  "cudaStreamEndCapture or cudaGraphCreate");
  auto* graph = static_cast<cudaGraph_t>(cuda_graph);

  std::size_t count = 0;
  STEPGRAPH_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  if (count > 0) STEPGRAPH_CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
  nodes.resize(count);

  RawGraphDescription out;
  out.nodes.resize(count);
  std::unordered_map<cudaGraphNode_t, std::size_t> index;
  index.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    index.emplace(nodes[i], i);
    cudaGraphNodeType type{};
    STEPGRAPH_CUDA_CHECK(cudaGraphNodeGetType(nodes[i], &type));
    out.nodes[i].type = raw_type(type);
    describe_node(nodes[i], out.nodes[i]);
  }

  std::size_t edges = 0;
  STEPGRAPH_CUDA_CHECK(cuda::graph_get_edges(graph, nullptr, nullptr, &edges));
  std::vector<cudaGraphNode_t> from(edges), to(edges);
  if (edges > 0) STEPGRAPH_CUDA_CHECK(cuda::graph_get_edges(graph, from.data(), to.data(), &edges));
  out.edges.reserve(edges);
  for (std::size_t e = 0; e < edges; ++e) {
    const auto a = index.find(from[e]);
    const auto b = index.find(to[e]);
    STEPGRAPH_CHECK(a != index.end() && b != index.end(), InvalidState,
                    "describe_raw_cuda_graph: cudaGraphGetEdges returned edge #{} with a node cudaGraphGetNodes "
                    "did not list (was the graph changed by another thread during the query?)",
                    e);
    out.edges.emplace_back(a->second, b->second);
  }
  return out;
}

}  // namespace stepgraph::runtime
