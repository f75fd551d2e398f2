// bench_fixtures.h — the recorded topologies the benchmarks place graphs on.
//
// Files come from tests/topology/fixtures (override with the directory in
// STEPGRAPH_BENCH_TOPO_DIR). Platforms are built once per file and device
// selection and live for the whole process (a CostModel keeps a reference).
// Not thread-safe: benchmarks call it from their one thread. No CUDA calls.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

#include <stepgraph/graphs/platform.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

namespace sgbench {

inline std::filesystem::path fixture_dir() {
  if (const char* env = std::getenv("STEPGRAPH_BENCH_TOPO_DIR")) return env;
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "topology" / "fixtures";
}

/// The platform of a recorded topology file (a name in fixture_dir()).
inline const stepgraph::graphs::Platform& fixture_platform(const std::string& file,
                                                           stepgraph::graphs::EndpointSelection selection) {
  static std::map<std::pair<std::string, stepgraph::graphs::EndpointSelection>, stepgraph::graphs::Platform> cache;
  const auto key = std::make_pair(file, selection);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const auto t = stepgraph::topology::Topology::load(fixture_dir() / file);
  auto p = stepgraph::graphs::Platform::from_cost_matrix(stepgraph::topology::CostMatrix::build(t), selection);
  return cache.emplace(key, std::move(p)).first->second;
}

}  // namespace sgbench
