#include <stepgraph/collectives/version.h>
namespace stepgraph::collectives {
const char* module_name() noexcept {
  return "collectives";
}
}  // namespace stepgraph::collectives
