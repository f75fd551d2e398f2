// `stepgraph graph`: generate a step graph (transformer | random | forkjoin)
// as JSON, or inspect one (`--input G.json`): validate, count, DOT.
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/workloads.h>

#include "command.h"

namespace {

namespace sg = stepgraph::graphs;

struct GraphOptions {
  std::string generate;
  std::string input;
  std::string out;
  std::string dot;
  sg::TransformerSpec transformer;
  sg::RandomDagSpec random;
  sg::ForkJoinSpec forkjoin;
  int replicas = 0;
};

int run_graph(const GraphOptions& o) {
  STEPGRAPH_CHECK(o.generate.empty() != o.input.empty(), InvalidArgument,
                  "give exactly one of --generate transformer|random|forkjoin and --input G.json");
  sg::StepGraph g;
  if (!o.input.empty()) {
    g = sg::load_json(o.input);
  } else if (o.generate == "transformer") {
    g = sg::make_transformer(o.transformer);
  } else if (o.generate == "random") {
    g = sg::make_random_dag(o.random);
  } else if (o.generate == "forkjoin") {
    g = sg::make_fork_join(o.forkjoin);
  } else {
    throw stepgraph::InvalidArgument("--generate: unknown workload '" + o.generate +
                                     "'; use transformer, random or forkjoin");
  }
  if (o.replicas > 0) g = sg::replicate_data_parallel(g, o.replicas);
  sg::validate(g);
  std::map<std::string, int> kinds;
  for (const auto& n : g.nodes()) ++kinds[std::string(sg::to_string(n.kind))];
  std::uint64_t bytes = 0;
  for (const auto& e : g.edges()) bytes += e.bytes;
  std::vector<double> w(g.node_count(), 0.0);
  for (const auto& n : g.nodes()) w[n.id] = n.cost.get(sg::DeviceKind::kGpu).value_or(0.0);
  const auto cp = sg::critical_path(g, w);
  std::printf("graph: %zu nodes, %zu edges, %zu buffers, origin %s, %.3f MB on edges\n", g.node_count(), g.edge_count(),
              g.buffers().size(), std::string(sg::to_string(g.origin())).c_str(), bytes / 1e6);
  for (const auto& [k, c] : kinds) std::printf("  %-13s %d\n", k.c_str(), c);
  std::printf("critical path (gpu estimates, no communication): %.1f us over %zu nodes\n", cp.length_us,
              cp.nodes.size());
  if (!o.out.empty()) {
    sg::save_json(g, o.out);
    std::printf("wrote %s\n", o.out.c_str());
  }
  if (!o.dot.empty()) {
    stepgraph::tools::write_output("--dot", o.dot, sg::to_dot(g));
    std::printf("wrote %s\n", o.dot.c_str());
  }
  return 0;
}

stepgraph::tools::Command graph_cmd{
    "graph", "generate (transformer|random|forkjoin) or inspect a step graph JSON", [](CLI::App& app) {
      auto o = std::make_shared<GraphOptions>();
      app.add_option("--generate", o->generate, "workload: transformer, random or forkjoin");
      app.add_option("--input", o->input, "inspect an existing graph JSON instead");
      app.add_option("--out,-o", o->out, "write the graph JSON here");
      app.add_option("--dot", o->dot, "write Graphviz DOT here");
      app.add_option("--replicas", o->replicas, "data-parallel replication over N devices (0: off)");
      app.add_option("--layers", o->transformer.layers, "transformer: layers");
      app.add_option("--hidden", o->transformer.hidden, "transformer: hidden size");
      app.add_option("--seq", o->transformer.seq, "transformer: sequence length");
      app.add_option("--batch", o->transformer.batch, "transformer: micro-batch");
      app.add_option("--gpu-tflops", o->transformer.gpu_tflops, "transformer: sustained GPU TFLOP/s");
      app.add_option("--cpu-tflops", o->transformer.cpu_tflops, "transformer: sustained TFLOP/s of a NUMA node");
      app.add_option("--nodes", o->random.nodes, "random: node count");
      app.add_option("--shape", o->random.shape, "random: shape alpha");
      app.add_option("--out-degree", o->random.out_degree, "random: out-degree");
      app.add_option("--ccr", o->random.ccr, "random: communication-to-computation ratio");
      app.add_option("--beta", o->random.heterogeneity, "random: heterogeneity beta");
      app.add_option("--mean-cost", o->random.mean_cost_us, "random: mean node cost (us)");
      app.add_option("--bandwidth", o->random.reference_bandwidth_gbps, "random: reference bandwidth for CCR (GB/s)");
      app.add_option("--seed", o->random.seed, "random: seed");
      app.add_option("--stages", o->forkjoin.stages, "forkjoin: stages");
      app.add_option("--width", o->forkjoin.width, "forkjoin: parallel nodes per stage");
      app.add_option("--cost", o->forkjoin.cost_us, "forkjoin: node cost (us)");
      app.add_option("--bytes", o->forkjoin.bytes, "forkjoin: bytes per edge");
      return [o]() -> int { return run_graph(*o); };
    }};

}  // namespace
