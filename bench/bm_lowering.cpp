// bm_lowering: what the lowered graph's dependency structure allows, by
// where the inserted copies run (Note [Copy streams] in runtime/src/lowering.cpp).
//
// BM_Lowering_CopyStreams/<topo>/ccr:<c>/<mode>: random layered DAGs placed
// by the default HEFT on a recorded machine, each node given a real output
// buffer whose consumers read the bytes of their edge, lowered onto the host
// backend with one host device per platform device (nothing runs: the
// capture records). The captured backend graph is then timed as a DAG with
// the cost model's durations: a kernel its IR node's cost on its device, a
// copy latency + bytes / bandwidth of its pair (plus the sync latency), an
// edge between two devices' kernels the sync latency; no link is shared.
// So "lowered_us" is the step time that graph's edges allow with every copy
// at its pair's full bandwidth, and the baseline beside it is the
// simulator's makespan of the same placement (graphs/simulator.h, links
// shared, a transfer starting when its source finishes) in both dispatch
// modes. Counters are means over seeds: lowered_over_sim_strict =
// lowered_us / simulated makespan with DeviceDispatch::kStrict (the
// lowering keeps each device's order).
//
// Wall time (the benchmark's own timing) is the lowering itself: plan,
// allocate, capture, instantiate.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <queue>
#include <string>
#include <vector>

#include <stepgraph/graphs/cost_model.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/graphs/simulator.h>
#include <stepgraph/graphs/workloads.h>
#include <stepgraph/runtime/lowering.h>

#include "bench_fixtures.h"

namespace {

namespace sg = stepgraph::graphs;
namespace rt = stepgraph::runtime;

constexpr int kSeeds = 5;
constexpr std::size_t kNodes = 100;
// Small node costs keep the edges' bytes (CCR x cost x bandwidth) and so the
// arenas small: at CCR 10 on the DGX-1 layout about 3 MB an edge.
constexpr double kMeanCostUs = 20.0;

using sgbench::fixture_dir;

const sg::Platform& platform(const std::string& file) {
  return sgbench::fixture_platform(file, sg::EndpointSelection::kGpus);
}

/// The DAG's shape with real dataflow: node u writes out_u (as many bytes
/// as its largest out-edge, at least 8), and each consumer reads the first
/// `edge bytes` of it.
sg::StepGraph with_outputs(const sg::StepGraph& shape) {
  std::vector<std::uint64_t> out_bytes(shape.node_count(), 8);
  for (const auto& e : shape.edges()) out_bytes[e.src] = std::max<std::uint64_t>(out_bytes[e.src], e.bytes);
  sg::StepGraph g;
  std::vector<sg::BufferId> out(shape.node_count());
  for (const auto& n : shape.nodes()) out[n.id] = g.add_buffer(fmt::format("out{}", n.id), out_bytes[n.id]);
  std::vector<std::vector<std::pair<sg::NodeId, std::uint64_t>>> reads(shape.node_count());
  for (const auto& e : shape.edges()) reads[e.dst].emplace_back(e.src, std::max<std::uint64_t>(e.bytes, 8));
  for (const auto& n : shape.nodes()) {
    sg::NodeSpec spec;
    spec.name = n.name;
    spec.cost = n.cost;
    spec.accesses.push_back({out[n.id], 0, out_bytes[n.id], sg::AccessMode::kWrite});
    for (const auto& [p, bytes] : reads[n.id]) spec.accesses.push_back({out[p], 0, bytes, sg::AccessMode::kRead});
    g.add_node(std::move(spec));
  }
  for (const auto& e : shape.edges()) g.connect(e.src, e.dst, e.bytes);
  return g;
}

void noop_host() {}
const rt::Kernel<> kNoop{"noop", &noop_host, nullptr};

/// One kernel per IR node, named like the node, declaring its accesses.
rt::NodeEmitter emitter() {
  return [](const rt::NodeLaunch& nl) {
    rt::launch(nl.stream, kNoop, {.name = nl.ir->name, .accesses = nl.declarations()});
  };
}

/// The longest path through the backend graph with the cost model's durations.
double lowered_critical_path_us(const rt::GraphInfo& info, const sg::StepGraph& g, const sg::CostModel& model) {
  std::map<std::string, const sg::Node*> by_name;
  for (const auto& n : g.nodes()) by_name.emplace(n.name, &n);
  const std::size_t n = info.nodes.size();
  std::vector<double> dur(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& ni = info.nodes[i];
    if (ni.kind == rt::NodeKind::kKernel) {
      dur[i] = model.node_us(*by_name.at(ni.name), static_cast<std::size_t>(ni.device));
    } else if (ni.kind == rt::NodeKind::kMemcpy && ni.src_device != ni.dst_device) {
      dur[i] =
          model.transfer_us(static_cast<std::size_t>(ni.src_device), static_cast<std::size_t>(ni.dst_device), ni.bytes);
    }
  }
  std::vector<std::vector<std::size_t>> succ(n);
  std::vector<std::size_t> indeg(n, 0);
  for (const auto& [a, b] : info.edges) {
    succ[a].push_back(b);
    ++indeg[b];
  }
  std::vector<double> finish(n, 0.0), start(n, 0.0);
  std::queue<std::size_t> ready;
  for (std::size_t i = 0; i < n; ++i)
    if (indeg[i] == 0) ready.push(i);
  double longest = 0;
  while (!ready.empty()) {
    const std::size_t i = ready.front();
    ready.pop();
    finish[i] = start[i] + dur[i];
    longest = std::max(longest, finish[i]);
    for (std::size_t s : succ[i]) {
      const auto& a = info.nodes[i];
      const auto& b = info.nodes[s];
      // A wait between two devices' kernels (no copy between them) costs the
      // cross-device sync, as in the cost model.
      const double sync = a.kind == rt::NodeKind::kKernel && b.kind == rt::NodeKind::kKernel && a.device != b.device
                              ? model.options().sync_latency_us
                              : 0.0;
      start[s] = std::max(start[s], finish[i] + sync);
      if (--indeg[s] == 0) ready.push(s);
    }
  }
  return longest;
}

void BM_Lowering_CopyStreams(benchmark::State& state, const std::string& file, double ccr, rt::CopyStreams copies) {
  const sg::Platform& p = platform(file);
  const int devices = static_cast<int>(p.size());
  rt::BackendOptions bo;
  bo.host_devices = devices;
  bo.workers_per_device = 1;
  bo.bind_workers = false;
  auto backend = rt::Backend::create(rt::BackendKind::kHost, bo);
  std::vector<sg::StepGraph> graphs;
  std::vector<sg::Placement> placements;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    sg::RandomDagSpec spec;
    spec.nodes = kNodes;
    spec.shape = 1.0;
    spec.out_degree = 3;
    spec.ccr = ccr;
    spec.mean_cost_us = kMeanCostUs;
    spec.reference_bandwidth_gbps = 1.0 / (p.mean_us_per_byte() * 1e3);
    spec.seed = static_cast<std::uint64_t>(seed) * 7919 + kNodes;
    graphs.push_back(with_outputs(sg::make_random_dag(spec)));
    placements.push_back(sg::place(graphs.back(), p, {}));
  }
  const sg::CostModel model(p);
  double lowered = 0, strict = 0, ready_first = 0, copies_made = 0, waits = 0, streams = 0, used = 0;
  for (auto _ : state) {
    lowered = strict = ready_first = copies_made = waits = streams = used = 0;
    for (int s = 0; s < kSeeds; ++s) {
      const auto& g = graphs[static_cast<std::size_t>(s)];
      const auto& pl = placements[static_cast<std::size_t>(s)];
      auto low = rt::lower(g, pl, backend, rt::DeviceMap::identity(devices), emitter(), {.copy_streams = copies});
      state.PauseTiming();
      const double cp = lowered_critical_path_us(low.info(), g, model);
      const double sim_strict = sg::simulate(g, p, pl, {.dispatch = sg::DeviceDispatch::kStrict}).makespan_us;
      const double sim_ready = sg::simulate(g, p, pl).makespan_us;
      lowered += cp / kSeeds;
      strict += sim_strict / kSeeds;
      ready_first += sim_ready / kSeeds;
      copies_made += static_cast<double>(low.copies().size()) / kSeeds;
      waits += static_cast<double>(low.event_waits()) / kSeeds;
      streams += static_cast<double>(low.copy_stream_count()) / kSeeds;
      std::vector<char> on(static_cast<std::size_t>(devices), 0);
      for (const auto& nd : pl.nodes) on[static_cast<std::size_t>(nd.device)] = 1;
      used += static_cast<double>(std::count(on.begin(), on.end(), 1)) / kSeeds;
      state.ResumeTiming();
    }
  }
  state.counters["lowered_us"] = lowered;
  state.counters["sim_strict_us"] = strict;
  state.counters["sim_ready_first_us"] = ready_first;
  state.counters["lowered_over_sim_strict"] = lowered / strict;
  state.counters["lowered_over_sim_ready_first"] = lowered / ready_first;
  state.counters["copies"] = copies_made;
  state.counters["event_waits"] = waits;
  state.counters["copy_streams"] = streams;
  state.counters["devices_used"] = used;
}

void register_all() {
  const std::pair<const char*, const char*> topos[] = {{"dgx1", "dgx1-v100-layout.xml"},
                                                       {"power8", "power8gpudistances.xml"}};
  for (const auto& [name, file] : topos)
    for (double ccr : {0.1, 1.0, 10.0})
      for (auto mode : {rt::CopyStreams::kPerDevicePair, rt::CopyStreams::kConsumerStream}) {
        const auto label = fmt::format("BM_Lowering_CopyStreams/{}/ccr:{}/{}", name, ccr,
                                       mode == rt::CopyStreams::kPerDevicePair ? "per-pair" : "consumer-stream");
        const std::string f = file;
        benchmark::RegisterBenchmark(label.c_str(),
                                     [f, ccr, mode](benchmark::State& s) { BM_Lowering_CopyStreams(s, f, ccr, mode); })
            ->Unit(benchmark::kMillisecond)
            ->Iterations(1);
      }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::AddCustomContext("stepgraph_topology_fixtures", fixture_dir().string());
  benchmark::AddCustomContext("seeds", std::to_string(kSeeds));
  benchmark::AddCustomContext("nodes", std::to_string(kNodes));
  benchmark::AddCustomContext("mean_node_cost_us", fmt::format("{}", kMeanCostUs));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
