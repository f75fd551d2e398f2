#pragma once
namespace stepgraph::graphs {
[[nodiscard]] const char* module_name() noexcept;
}  // namespace stepgraph::graphs
