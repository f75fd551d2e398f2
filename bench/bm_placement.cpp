// bm_placement — placement quality and scheduling cost.
//
// BM_Placement_Grid/...: the HEFT paper's random-DAG grid (Topcuoglu et al.
//   2002) on recorded topologies: n ∈ {100, 1000}, shape α ∈ {0.5, 1, 2},
//   out-degree ∈ {1, 3, 5}, CCR ∈ {0.1, 0.5, 1, 5, 10}, β ∈ {0 (GPUs only),
//   0.5 (GPUs + CPU NUMA nodes)}, 10 seeds per cell. Per cell and algorithm:
//   mean simulated makespan, mean SLR (makespan / min-cost critical path) and
//   mean ratio to the lower bound max(critical path, work / devices). Every
//   algorithm is judged by the same simulator (links shared).
//   Scheduling time of HEFT is the benchmark's manual time.
// BM_Placement_Scale/<algo>/<n>: scheduling time and peak heap growth of one
//   place() call for 1k, 10k, 100k nodes on the DGX-1 layout (8 GPUs).
// BM_Placement_Transformer/<topo>/<algo>: a 12-layer transformer step.
// BM_Placement_Search/<cell>/evals:N: search_placement() from HEFT's
//   schedule on the grid cells where HEFT misses a target, beside the
//   baselines (Note [Placement search]).
//
// The whole binary runs in about two to three minutes on 2 cores
// (docs/placement.md). Topology fixtures come from tests/topology/fixtures
// (override with STEPGRAPH_BENCH_TOPO_DIR).
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <new>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/graphs/workloads.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "bench_fixtures.h"

// ---- heap accounting (peak bytes in use) --------------------------------------
namespace {
std::atomic<std::int64_t> g_in_use{0};
std::atomic<std::int64_t> g_peak{0};
void note_alloc(void* p) {
  if (!p) return;
  const auto now = g_in_use.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p))) +
                   static_cast<std::int64_t>(malloc_usable_size(p));
  auto peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
  }
}
void note_free(void* p) {
  if (p) g_in_use.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)));
}
}  // namespace

// GCC sees malloc/free through the inlined replacements and warns of a
// mismatch that is not one: these are the replacement functions themselves.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  note_alloc(p);
  return p;
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void operator delete(void* p) noexcept {
  note_free(p);
  std::free(p);
}
void operator delete[](void* p) noexcept {
  operator delete(p);
}
void operator delete(void* p, std::size_t) noexcept {
  operator delete(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  operator delete(p);
}
#pragma GCC diagnostic pop

namespace {

namespace sg = stepgraph::graphs;
using Clock = std::chrono::steady_clock;

struct TopoCase {
  std::string name;
  std::string file;
  bool uneven;
};

const std::vector<TopoCase>& topo_cases() {
  static const std::vector<TopoCase> cases{
      {"dgx1", "dgx1-v100-layout.xml", true},
      {"ndv2", "ndv2-topo.xml", true},
      {"power8", "power8gpudistances.xml", true},
      {"dgx2", "nvidiaDGX2.xml", false},
  };
  return cases;
}

using sgbench::fixture_dir;

// Platforms by topology name ("dgx1", ...) and device selection.
const sg::Platform& platform(const std::string& topo, sg::EndpointSelection sel) {
  std::string file;
  for (const auto& c : topo_cases())
    if (c.name == topo) file = c.file;
  return sgbench::fixture_platform(file, sel);
}

constexpr sg::Algorithm kAlgos[] = {sg::Algorithm::kHeft, sg::Algorithm::kHeftBlind, sg::Algorithm::kRoundRobin,
                                    sg::Algorithm::kGreedy};
constexpr int kSeeds = 10;
constexpr double kMeanCostUs = 500.0;

struct Cell {
  std::string topo;
  sg::EndpointSelection sel;
  std::size_t n;
  double alpha;
  int degree;
  double ccr;
  double beta;
};

// One seed's graph of a grid cell. CCR is defined against the platform's
// mean per-byte time.
sg::StepGraph cell_graph(const Cell& c, const sg::Platform& p, int seed) {
  sg::RandomDagSpec spec;
  spec.nodes = c.n;
  spec.shape = c.alpha;
  spec.out_degree = c.degree;
  spec.ccr = c.ccr;
  spec.heterogeneity = c.beta;
  spec.mean_cost_us = kMeanCostUs;
  spec.reference_bandwidth_gbps = 1.0 / (p.mean_us_per_byte() * 1e3);
  spec.seed = static_cast<std::uint64_t>(seed) * 7919 + c.n;
  return sg::make_random_dag(spec);
}

void run_cell(benchmark::State& state, const Cell& c) {
  const sg::Platform& p = platform(c.topo, c.sel);
  std::map<sg::Algorithm, double> makespan, slr, ratio;
  double heft_seconds = 0;
  int heft_fallbacks = 0;
  int heft_uniform = 0;  // seeds where HEFT kept a list built on the uniform view
  int heft_numa = 0;     // seeds where HEFT kept a list on one NUMA node's devices
  int heft_shared = 0;   // seeds where HEFT kept a list with links as shared bandwidth
  for (auto _ : state) {
    for (int seed = 1; seed <= kSeeds; ++seed) {
      const sg::StepGraph g = cell_graph(c, p, seed);
      sg::PlaceOptions opts;
      const sg::CostModel model(p, opts.cost);
      const sg::Bounds b = sg::bounds(g, model);
      for (auto algo : kAlgos) {
        opts.algorithm = algo;
        const auto t0 = Clock::now();
        const sg::Placement pl = sg::place(g, p, opts);
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        if (algo == sg::Algorithm::kHeft) {
          heft_seconds += secs;
          heft_fallbacks += pl.serial_fallback;
          heft_uniform +=
              pl.source == sg::ScheduleSource::kUniformList || pl.source == sg::ScheduleSource::kUniformLookahead;
          heft_numa += pl.source == sg::ScheduleSource::kNumaList || pl.source == sg::ScheduleSource::kNumaLookahead;
          heft_shared +=
              pl.source == sg::ScheduleSource::kSharedList || pl.source == sg::ScheduleSource::kSharedLookahead;
        }
        const double ms = sg::simulate(g, p, pl, {opts.cost}).makespan_us;
        makespan[algo] += ms / kSeeds;
        slr[algo] += ms / b.critical_path_us / kSeeds;
        ratio[algo] += ms / b.lower_bound_us / kSeeds;
      }
    }
    state.SetIterationTime(heft_seconds);
  }
  for (auto algo : kAlgos) {
    const std::string a(sg::to_string(algo));
    state.counters["makespan_" + a] = makespan[algo];
    state.counters["slr_" + a] = slr[algo];
    state.counters["lb_ratio_" + a] = ratio[algo];
  }
  const double best_baseline = std::min(
      {makespan[sg::Algorithm::kHeftBlind], makespan[sg::Algorithm::kRoundRobin], makespan[sg::Algorithm::kGreedy]});
  state.counters["heft_over_best_baseline"] = makespan[sg::Algorithm::kHeft] / best_baseline;
  state.counters["heft_over_blind"] = makespan[sg::Algorithm::kHeft] / makespan[sg::Algorithm::kHeftBlind];
  state.counters["heft_fallbacks"] = heft_fallbacks;
  state.counters["heft_uniform_view"] = heft_uniform;
  state.counters["heft_numa_subset"] = heft_numa;
  state.counters["heft_shared_view"] = heft_shared;
  state.counters["devices"] = static_cast<double>(p.size());
}

// Note [Placement search] on chosen grid cells: HEFT's list portfolio, then
// search_placement() from HEFT's schedule with the default budget
// (kAutoSearch: what the grid's HEFT runs), beside heft-blind and
// round-robin, same graphs and seeds as the grid.
void BM_Placement_Search(benchmark::State& state, const Cell& c) {
  const sg::Platform& p = platform(c.topo, c.sel);
  std::map<std::string, double> makespan;  // mean over seeds, by label
  double search_seconds = 0;
  double evaluations = 0;
  for (auto _ : state) {
    for (int seed = 1; seed <= kSeeds; ++seed) {
      const sg::StepGraph g = cell_graph(c, p, seed);
      sg::PlaceOptions opts;
      opts.search_evaluations = 0;  // start from the list schedules (the default searches small graphs itself)
      auto add = [&](const std::string& label, const sg::Placement& pl) {
        makespan[label] += sg::simulate(g, p, pl, {opts.cost}).makespan_us / kSeeds;
      };
      const sg::Placement start = sg::place(g, p, opts);
      const sg::SearchOptions so = sg::search_options(g, sg::PlaceOptions{});
      const auto t0 = Clock::now();
      const sg::Placement out = sg::search_placement(g, p, start, so);
      search_seconds += std::chrono::duration<double>(Clock::now() - t0).count();
      evaluations += static_cast<double>(out.searched_evaluations) / kSeeds;
      add("heft", start);
      add("heft_search", out);
      for (auto algo : {sg::Algorithm::kHeftBlind, sg::Algorithm::kRoundRobin, sg::Algorithm::kGreedy}) {
        opts.algorithm = algo;
        add(std::string(sg::to_string(algo)), sg::place(g, p, opts));
      }
    }
    state.SetIterationTime(search_seconds);
  }
  for (const auto& [label, m] : makespan) state.counters["makespan_" + label] = m;
  // The best baseline is chosen on the means over seeds, as in the grid.
  const double best_baseline = std::min({makespan["heft-blind"], makespan["rr"], makespan["greedy"]});
  state.counters["heft_over_best_baseline"] = makespan["heft"] / best_baseline;
  state.counters["search_over_best_baseline"] = makespan["heft_search"] / best_baseline;
  state.counters["heft_over_blind"] = makespan["heft"] / makespan["heft-blind"];
  state.counters["search_over_blind"] = makespan["heft_search"] / makespan["heft-blind"];
  state.counters["search_over_heft"] = makespan["heft_search"] / makespan["heft"];
  state.counters["search_seconds_per_graph"] = search_seconds / kSeeds;
  state.counters["evaluations"] = evaluations;  // mean over seeds
}

void BM_Placement_Scale(benchmark::State& state, sg::PlaceOptions opts) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const sg::Platform& p = platform("dgx1", sg::EndpointSelection::kGpus);
  sg::RandomDagSpec spec;
  spec.nodes = n;
  spec.ccr = 1.0;
  spec.mean_cost_us = kMeanCostUs;
  spec.reference_bandwidth_gbps = 1.0 / (p.mean_us_per_byte() * 1e3);
  spec.seed = 3;
  const sg::StepGraph g = sg::make_random_dag(spec);
  std::int64_t peak = 0;
  double makespan = 0;
  for (auto _ : state) {
    const auto base = g_in_use.load();
    g_peak.store(base);
    auto pl = sg::place(g, p, opts);
    peak = std::max(peak, g_peak.load() - base);
    makespan = pl.estimated_makespan_us;
    benchmark::DoNotOptimize(pl);
  }
  state.counters["nodes"] = static_cast<double>(n);
  state.counters["edges"] = static_cast<double>(g.edge_count());
  state.counters["peak_bytes"] = static_cast<double>(peak);
  state.counters["estimated_makespan_us"] = makespan;
}

void BM_Placement_Transformer(benchmark::State& state, const std::string& topo, sg::Algorithm algo) {
  const sg::Platform& p = platform(topo, sg::EndpointSelection::kGpus);
  sg::TransformerSpec spec;
  spec.layers = 12;
  const auto g = sg::make_transformer(spec);
  sg::PlaceOptions opts;
  opts.algorithm = algo;
  double ms = 0;
  sg::Placement pl;
  for (auto _ : state) {
    pl = sg::place(g, p, opts);
    benchmark::DoNotOptimize(pl);
  }
  ms = sg::simulate(g, p, pl, {opts.cost}).makespan_us;
  const sg::CostModel model(p, opts.cost);
  state.counters["makespan_us"] = ms;
  state.counters["lb_ratio"] = ms / sg::bounds(g, model).lower_bound_us;
}

void register_all() {
  for (const auto& t : topo_cases()) {
    for (double beta : {0.0, 0.5}) {
      const auto sel = beta == 0.0 ? sg::EndpointSelection::kGpus : sg::EndpointSelection::kGpusAndNuma;
      for (std::size_t n : {100, 1000})
        for (double alpha : {0.5, 1.0, 2.0})
          for (int degree : {1, 3, 5})
            for (double ccr : {0.1, 0.5, 1.0, 5.0, 10.0}) {
              const Cell c{t.name, sel, n, alpha, degree, ccr, beta};
              const auto name = fmt::format("BM_Placement_Grid/{}/{}/n:{}/alpha:{}/deg:{}/ccr:{}/beta:{}", t.name,
                                            beta == 0.0 ? "gpus" : "mixed", n, alpha, degree, ccr, beta);
              benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& s) { run_cell(s, c); })
                  ->Iterations(1)
                  ->UseManualTime()
                  ->Unit(benchmark::kMillisecond);
            }
    }
  }
  // The search on the grid cells where the default HEFT misses a target
  // (docs/placement.md): the three DGX-2 cells above round-robin and, at
  // n = 100, cells where both HEFTs keep the one-device schedule.
  for (const Cell& c : {Cell{"dgx2", sg::EndpointSelection::kGpus, 1000, 0.5, 5, 1.0, 0.0},
                        Cell{"dgx2", sg::EndpointSelection::kGpus, 100, 1.0, 5, 1.0, 0.0},
                        Cell{"dgx2", sg::EndpointSelection::kGpus, 1000, 0.5, 5, 0.5, 0.0},
                        Cell{"dgx1", sg::EndpointSelection::kGpus, 100, 1.0, 5, 10.0, 0.0},
                        Cell{"ndv2", sg::EndpointSelection::kGpus, 100, 1.0, 5, 10.0, 0.0},
                        Cell{"ndv2", sg::EndpointSelection::kGpusAndNuma, 100, 0.5, 3, 5.0, 0.5},
                        Cell{"power8", sg::EndpointSelection::kGpus, 100, 1.0, 5, 10.0, 0.0},
                        Cell{"power8", sg::EndpointSelection::kGpusAndNuma, 100, 1.0, 5, 5.0, 0.5}}) {
    const auto name =
        fmt::format("BM_Placement_Search/{}/{}/n:{}/alpha:{}/deg:{}/ccr:{}/beta:{}", c.topo,
                    c.sel == sg::EndpointSelection::kGpus ? "gpus" : "mixed", c.n, c.alpha, c.degree, c.ccr, c.beta);
    benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State& s) { BM_Placement_Search(s, c); })
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  // heft: the default (lookahead portfolio + simulated fallback);
  // heft-classic: the plain list schedule (Lookahead::kOff), still with the
  // link model and the simulated fallback; rr: the baseline.
  std::vector<std::pair<std::string, sg::PlaceOptions>> scale_cases;
  scale_cases.emplace_back("heft", sg::PlaceOptions{});
  sg::PlaceOptions classic;
  classic.lookahead = sg::Lookahead::kOff;
  scale_cases.emplace_back("heft-classic", classic);
  sg::PlaceOptions rr;
  rr.algorithm = sg::Algorithm::kRoundRobin;
  scale_cases.emplace_back("rr", rr);
  for (const auto& [label, opts] : scale_cases) {
    const auto name = fmt::format("BM_Placement_Scale/{}", label);
    const sg::PlaceOptions o = opts;
    benchmark::RegisterBenchmark(name.c_str(), [o](benchmark::State& s) { BM_Placement_Scale(s, o); })
        ->Arg(1000)
        ->Arg(10000)
        ->Arg(100000)
        ->Unit(benchmark::kMillisecond)
        ->MinTime(0.5);
  }
  for (const auto& t : topo_cases())
    for (auto algo : kAlgos) {
      const auto name = fmt::format("BM_Placement_Transformer/{}/{}", t.name, sg::to_string(algo));
      const std::string topo = t.name;
      benchmark::RegisterBenchmark(name.c_str(),
                                   [topo, algo](benchmark::State& s) { BM_Placement_Transformer(s, topo, algo); })
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("stepgraph_topology_fixtures", fixture_dir().string());
  benchmark::AddCustomContext("grid_seeds_per_cell", std::to_string(kSeeds));
  benchmark::AddCustomContext("grid_mean_node_cost_us", fmt::format("{}", kMeanCostUs));
  for (const auto& t : topo_cases())
    for (auto sel : {sg::EndpointSelection::kGpus, sg::EndpointSelection::kGpusAndNuma}) {
      const auto& p = platform(t.name, sel);
      benchmark::AddCustomContext(
          fmt::format("platform_{}_{}", t.name, sel == sg::EndpointSelection::kGpus ? "gpus" : "mixed"),
          fmt::format("{} devices, harmonic-mean bandwidth {:.2f} GB/s, mean latency {:.2f} us", p.size(),
                      1.0 / (p.mean_us_per_byte() * 1e3), p.mean_latency_us()));
    }
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
