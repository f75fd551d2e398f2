// The cuda backend's entry points in a build without CUDA.
#ifndef STEPGRAPH_WITH_CUDA
#include <stepgraph/runtime/graph_import.h>

#include "impl.h"

namespace stepgraph::runtime::detail {
std::shared_ptr<BackendImpl> make_cuda_backend(const BackendOptions&) {
  throw InvalidState(
      "this build of stepgraph has no cuda backend (configured without CUDA); "
      "rebuild with -DSTEPGRAPH_WITH_CUDA=ON or use the host backend");
}
bool cuda_device_present(std::string* reason) {
  if (reason != nullptr) *reason = "this build has no cuda backend (configured without CUDA)";
  return false;
}
}  // namespace stepgraph::runtime::detail

namespace stepgraph::runtime {
bool Backend::cuda_compiled() noexcept {
  return false;
}

RawGraphDescription describe_raw_cuda_graph(void* /*cuda_graph*/) {
  throw InvalidState(
      "describe_raw_cuda_graph: this build of stepgraph has no CUDA support (configured with "
      "STEPGRAPH_WITH_CUDA=OFF), so it cannot read a cudaGraph_t; rebuild with "
      "-DSTEPGRAPH_WITH_CUDA=ON, or capture with the annotated launch API and use "
      "import_captured_graph");
}
}  // namespace stepgraph::runtime
#endif
