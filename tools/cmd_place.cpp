// `stepgraph place`: place a step graph on a topology's devices, print the
// placement summary and the simulated makespan; optionally a Chrome trace.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

#include "command.h"

namespace {

namespace sg = stepgraph::graphs;

struct PlaceCliOptions {
  std::string graph;
  std::string topo;
  std::string algo = "heft";
  std::string devices = "gpus";
  std::string trace;
  std::string placement_out;
  std::size_t uniform = 0;
  std::string search = "auto";
  std::uint64_t search_seed = 1;
  bool show_platform = false;
};

sg::EndpointSelection parse_selection(const std::string& s) {
  if (s == "gpus") return sg::EndpointSelection::kGpus;
  if (s == "gpus+numa") return sg::EndpointSelection::kGpusAndNuma;
  if (s == "numa") return sg::EndpointSelection::kNuma;
  throw stepgraph::InvalidArgument("--devices: unknown selection '" + s + "'; use gpus, gpus+numa or numa");
}

int run_place(const PlaceCliOptions& o) {
  sg::Platform platform;
  std::string where;
  if (o.uniform > 0) {
    platform = sg::Platform::uniform(o.uniform, sg::DeviceKind::kGpu, {25.0, 2.0});
    where = std::to_string(o.uniform) + " uniform GPUs (25 GB/s, 2 us)";
  } else {
    using stepgraph::topology::Topology;
    const Topology topo = o.topo.empty() ? Topology::from_env_or_live() : Topology::load(o.topo);
    platform = sg::Platform::from_cost_matrix(stepgraph::topology::CostMatrix::build(topo), parse_selection(o.devices));
    where = topo.source();
  }
  std::printf("platform: %s, %zu devices\n", where.c_str(), platform.size());
  if (o.show_platform) {
    std::printf("  bandwidth GB/s (latency us)\n");
    for (std::size_t a = 0; a < platform.size(); ++a) {
      std::printf("  %-10s", platform.device(a).name.c_str());
      for (std::size_t b = 0; b < platform.size(); ++b)
        std::printf(a == b ? "       -     " : " %6.1f(%4.1f)", platform.link(a, b).bandwidth_gbps,
                    platform.link(a, b).latency_us);
      std::printf("\n");
    }
    // Shared links (Note [Routes]) and how many ordered pairs cross each.
    std::vector<std::size_t> crossing(platform.shared_links().size(), 0);
    for (std::size_t a = 0; a < platform.size(); ++a)
      for (std::size_t b = 0; b < platform.size(); ++b)
        for (auto l : platform.route(a, b)) ++crossing[l];
    std::printf("  shared links: %zu\n", crossing.size());
    for (std::size_t l = 0; l < crossing.size(); ++l)
      std::printf("  %-32s %7.1f GB/s, crossed by %zu device pairs\n", platform.shared_links()[l].name.c_str(),
                  platform.shared_links()[l].bandwidth_gbps, crossing[l]);
  }
  STEPGRAPH_CHECK(!o.graph.empty(), InvalidArgument, "--graph G.json is required (make one with `stepgraph graph`)");
  const sg::StepGraph g = sg::load_json(o.graph);
  sg::validate(g);
  sg::PlaceOptions po;
  po.algorithm = sg::parse_algorithm(o.algo);
  if (o.search == "auto") {
    po.search_evaluations = sg::kAutoSearch;
  } else {
    std::size_t used = 0;
    int n = -1;
    try {
      n = std::stoi(o.search, &used);
    } catch (const std::exception&) {
    }
    STEPGRAPH_CHECK(used == o.search.size() && n >= 0, InvalidArgument,
                    "--search: '{}' is not 'auto' or a number of evaluations >= 0", o.search);
    po.search_evaluations = n;
  }
  po.search_seed = o.search_seed;
  const auto t0 = std::chrono::steady_clock::now();
  const sg::Placement pl = sg::place(g, platform, po);
  const double sched_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  sg::SimulateOptions so;
  so.cost = po.cost;
  if (!o.trace.empty()) so.trace = sg::TraceOutput::kChromeJson;
  const sg::SimResult sim = sg::simulate(g, platform, pl, so);
  const sg::CostModel model(platform, po.cost);
  const sg::Bounds b = sg::bounds(g, model);
  std::printf("graph: %s, %zu nodes, %zu edges\n", o.graph.c_str(), g.node_count(), g.edge_count());
  std::printf("algorithm: %s (schedule: %s), scheduled in %.2f ms\n", o.algo.c_str(),
              std::string(sg::to_string(pl.source)).c_str(), sched_ms);
  if (pl.searched_evaluations > 0)
    std::printf("search: %zu evaluations%s (seed %llu), %zu nodes moved\n", pl.searched_evaluations,
                o.search == "auto" ? " (auto: a small graph, bounded by work)" : "",
                static_cast<unsigned long long>(o.search_seed), pl.searched_moves);
  std::printf("%-12s %8s %10s\n", "device", "nodes", "util");
  for (std::size_t d = 0; d < platform.size(); ++d) {
    std::size_t own = 0;
    for (auto u : pl.device_order[d]) own += pl.nodes[u].device == static_cast<int>(d);
    std::printf("%-12s %8zu %9.1f%%\n", platform.device(d).name.c_str(), own, 100 * sim.utilization[d]);
  }
  std::printf("estimated makespan (scheduler's own model): %.1f us\n", pl.estimated_makespan_us);
  std::printf("simulated makespan: %.1f us  (lower bound %.1f us, ratio %.3f; SLR %.3f)\n", sim.makespan_us,
              b.lower_bound_us, sim.makespan_us / b.lower_bound_us, sim.makespan_us / b.critical_path_us);
  std::printf("transfers: %zu, %.3f MB\n", sim.transfers, sim.transfer_bytes / 1e6);
  if (!o.trace.empty()) {
    stepgraph::tools::write_output("--trace", o.trace, sim.trace_json);
    std::printf("wrote %s (open in ui.perfetto.dev or chrome://tracing)\n", o.trace.c_str());
  }
  if (!o.placement_out.empty()) {
    stepgraph::tools::write_output("--placement-out", o.placement_out, sg::placement_to_json(g, pl));
  }
  return 0;
}

stepgraph::tools::Command place_cmd{
    "place", "place a step graph on a topology and simulate its step time", [](CLI::App& app) {
      auto o = std::make_shared<PlaceCliOptions>();
      app.add_option("--graph", o->graph, "graph JSON (from `stepgraph graph`)");
      app.add_option("--topo", o->topo, "hwloc or NCCL topology XML (default: STEPGRAPH_TOPO_FILE or this machine)");
      app.add_option("--uniform", o->uniform, "instead of a topology: N identical GPUs");
      app.add_option("--devices", o->devices, "gpus | gpus+numa | numa")->capture_default_str();
      app.add_option("--algo", o->algo, "heft | heft-blind | rr | greedy")->capture_default_str();
      app.add_option("--trace", o->trace, "write the simulated Chrome/Perfetto trace JSON here");
      app.add_option("--placement-out", o->placement_out, "write the placement JSON here");
      app.add_option("--search", o->search,
                     "after the algorithm, search node moves judged by the simulator: N evaluations (0: off; "
                     "auto: for heft on graphs of at most 10000 nodes + edges, up to 5000 evaluations bounded by "
                     "work, about 1.5 s at most)")
          ->capture_default_str();
      app.add_option("--search-seed", o->search_seed, "seed of the search (deterministic per seed)")
          ->capture_default_str();
      app.add_flag("--show-platform", o->show_platform, "print the device links");
      return [o]() -> int { return run_place(*o); };
    }};

}  // namespace
