// stepgraph/graphs/workloads.h — graph generators.
//
// * make_transformer: one training step of an L-layer transformer: per layer a
//   forward node, two backward nodes (input gradient, weight gradient), a
//   gradient AllReduce (gang node) and an optimizer node. Costs come from FLOP
//   counts (Kaplan et al. 2020: forward ≈ 2 · params · tokens, plus attention
//   4 · seq · hidden per token; backward ≈ 2 × forward) divided by a device
//   kind's sustained rate. Buffers and accesses are declared, so the graph is
//   placeable and edge bytes follow from the accesses.
// * make_random_dag: random layered DAGs as in Topcuoglu, Hariri & Wu (IEEE
//   TPDS 2002, section 5.1): v nodes on ~sqrt(v)/α levels of mean width
//   α·sqrt(v); each node gets `out_degree` successors on the next one or two
//   levels; mean cost w_dag; per-node mean w̄_i ~ U[0, 2 w_dag] (floored at 1 %
//   of w_dag); per device kind cost ~ U[w̄_i (1 - β/2), w̄_i (1 + β/2)]; edge
//   bytes so that the mean transfer time at `reference_bandwidth_gbps` is CCR
//   × w_dag (bytes ~ U[0, 2 × mean]).
// * make_fork_join: `stages` times a fork node, `width` parallel nodes, a join.
//
// All generators are deterministic for a given spec (seeded mt19937_64).
#pragma once

#include <cstdint>

#include <stepgraph/graphs/graph.h>

namespace stepgraph::graphs {

struct TransformerSpec {
  int layers = 4;
  int hidden = 1024;
  int seq = 1024;
  int batch = 8;
  int bytes_per_element = 2;  ///< bf16 activations and gradients
  double gpu_tflops = 100.0;  ///< sustained, per device (≈ V100/A100 tensor-core practice)
  double cpu_tflops = 1.0;    ///< sustained, per NUMA node
};
[[nodiscard]] StepGraph make_transformer(const TransformerSpec& spec);

struct RandomDagSpec {
  std::size_t nodes = 100;
  double shape = 1.0;  ///< α
  int out_degree = 3;
  double ccr = 1.0;
  double heterogeneity = 0.0;   ///< β in [0, 2)
  double mean_cost_us = 100.0;  ///< w_dag
  double reference_bandwidth_gbps = 25.0;
  std::uint64_t seed = 1;
};
[[nodiscard]] StepGraph make_random_dag(const RandomDagSpec& spec);

struct ForkJoinSpec {
  int stages = 2;
  int width = 4;
  double cost_us = 100.0;
  std::uint64_t bytes = 1 << 20;
};
[[nodiscard]] StepGraph make_fork_join(const ForkJoinSpec& spec);

}  // namespace stepgraph::graphs
