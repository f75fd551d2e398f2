// bm_topology: the cost of the topology module.
//
//   BM_Topology_LiveDiscovery          Topology::discover() on this machine
//   BM_Topology_HwlocLoadDgx2Baseline  a bare hwloc_topology_load of nvidiaDGX2.xml
//                                      (I/O filter KEEP_ALL, as we load it) — the baseline
//   BM_Topology_LoadDgx2               Topology::parse of the same text (format detection,
//                                      hwloc load, conversion to our model)
//   BM_Topology_CostMatrixDgx2         CostMatrix::build on the loaded model
//   BM_Topology_LoadAndMatrixDgx2      both: the figure the issue bounds at 2x the baseline
//
// The file is read into memory once, outside the timed loops, for every
// variant alike. Run: bm_topology --benchmark_out=bm_topology.json
// --benchmark_out_format=json; the ratio LoadAndMatrixDgx2 / HwlocLoadDgx2Baseline
// is the target (docs/topology.md "Benchmark").
#include <benchmark/benchmark.h>

#include <hwloc.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

namespace topo = stepgraph::topology;

namespace {

const std::string& dgx2_text() {
  static const std::string text = [] {
    const auto path = std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "topology" / "fixtures" /
                      "nvidiaDGX2.xml";
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return text;
}

void BM_Topology_LiveDiscovery(benchmark::State& state) {
  for (auto _ : state) {
    auto t = topo::Topology::discover();
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_Topology_LiveDiscovery)->Unit(benchmark::kMillisecond);

void BM_Topology_HwlocLoadDgx2Baseline(benchmark::State& state) {
  const std::string& text = dgx2_text();
  if (text.empty()) {
    state.SkipWithError("tests/topology/fixtures/nvidiaDGX2.xml not found next to the sources");
    return;
  }
  for (auto _ : state) {
    hwloc_topology_t t = nullptr;
    hwloc_topology_init(&t);
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_ALL);
    hwloc_topology_set_xmlbuffer(t, text.c_str(), static_cast<int>(text.size() + 1));
    const int rc = hwloc_topology_load(t);
    benchmark::DoNotOptimize(rc);
    hwloc_topology_destroy(t);
  }
}
BENCHMARK(BM_Topology_HwlocLoadDgx2Baseline)->Unit(benchmark::kMicrosecond);

void BM_Topology_LoadDgx2(benchmark::State& state) {
  const std::string& text = dgx2_text();
  for (auto _ : state) {
    auto t = topo::Topology::parse(text, "nvidiaDGX2.xml");
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_Topology_LoadDgx2)->Unit(benchmark::kMicrosecond);

void BM_Topology_CostMatrixDgx2(benchmark::State& state) {
  const auto t = topo::Topology::parse(dgx2_text(), "nvidiaDGX2.xml");
  for (auto _ : state) {
    auto m = topo::CostMatrix::build(t);
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_Topology_CostMatrixDgx2)->Unit(benchmark::kMicrosecond);

void BM_Topology_LoadAndMatrixDgx2(benchmark::State& state) {
  const std::string& text = dgx2_text();
  for (auto _ : state) {
    auto t = topo::Topology::parse(text, "nvidiaDGX2.xml");
    auto m = topo::CostMatrix::build(t);
    benchmark::DoNotOptimize(m);
  }
}
BENCHMARK(BM_Topology_LoadAndMatrixDgx2)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  const unsigned api = hwloc_get_api_version();  // 0x00020800 = 2.8 API (hwloc 2.8-2.9)
  benchmark::AddCustomContext("hwloc_api", std::to_string(api >> 16) + "." + std::to_string((api >> 8) & 0xff));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
