// tests/topology/topology_fixtures.h — shared by the topology tests: the
// recorded machines in fixtures/ and endpoint positions in a CostMatrix.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

namespace stepgraph::topology::testing {

inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fixtures" / name;
}

inline Topology load(const std::string& name) {
  return Topology::load(fixture(name));
}

inline std::size_t gpu_pos(const CostMatrix& m, int i) {
  return m.position(EndpointKind::kGpu, i);
}
inline std::size_t nic_pos(const CostMatrix& m, int i) {
  return m.position(EndpointKind::kNic, i);
}
inline std::size_t numa_pos(const CostMatrix& m, int i) {
  return m.position(EndpointKind::kNuma, i);
}

}  // namespace stepgraph::topology::testing
