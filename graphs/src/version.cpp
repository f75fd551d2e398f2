#include <stepgraph/graphs/version.h>
namespace stepgraph::graphs {
const char* module_name() noexcept { return "graphs"; }
}  // namespace stepgraph::graphs
