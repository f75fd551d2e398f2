// Placeholder until the cuda backend lands: reports that it is not built.
#include "../impl.h"

namespace stepgraph::runtime::detail {
std::shared_ptr<BackendImpl> make_cuda_backend(const BackendOptions&) {
  throw InvalidState("the cuda backend is not implemented in this build yet; use the host backend");
}
bool cuda_device_present(std::string* reason) {
  if (reason != nullptr) *reason = "the cuda backend is not implemented in this build yet";
  return false;
}
}  // namespace stepgraph::runtime::detail

namespace stepgraph::runtime {
bool Backend::cuda_compiled() noexcept { return true; }
}  // namespace stepgraph::runtime
