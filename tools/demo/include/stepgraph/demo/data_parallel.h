// stepgraph/demo/data_parallel.h — the demo MLP trained data-parallel on N
// devices (collectives/data_parallel.h) with bucketed AllReduce overlapped
// with backward, compared with a float64 single-device reference on the
// whole batch, and captured against eager.
//
// Note [Data-parallel demo bound]
// The replicas split the global batch (options.base.shape.batch rows) into
// equal shards; each computes the mean-squared-error gradient of its shard,
// and the AllReduce averages them: mathematically the gradient of the whole
// batch. The float32 data-parallel run and the float32 single-device run
// compute that same function with sums in different orders, so each departs
// from the exact trajectory (the float64 reference) by accumulated float32
// rounding of the same size. The demo states the bound as 8 x the
// single-device float32 run's own measured departure, and never below
// 1e-6 (a few hundred float32 ulps of the parameters): a missing or doubled
// AllReduce, or a shard seen twice, moves the parameters by far more.
// Thread-safety: reentrant; each call owns its executors.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

#include <stepgraph/collectives/communicator.h>
#include <stepgraph/demo/mlp.h>

namespace stepgraph::demo {

struct DataParallelDemoOptions {
  DemoOptions base;  // base.shape.batch is the global batch, split over `devices`
  int devices = 2;
  bool bucketed = true;  // false: one AllReduce of every gradient after backward
  /// The first bucket's cap; 0: just the [W2 | b2] gradient, so that the
  /// tiny demo model has two buckets and the first overlaps backward.
  std::size_t first_bucket_cap_bytes = 0;
};

struct DataParallelRun {
  std::vector<float> params;    // replica 0's, after the last step
  std::vector<float> losses;    // per step: the mean of the replicas' shard losses
  std::vector<double> step_us;  // per step, as train_mlp measures
  std::size_t graph_nodes = 0;  // replica 0's captured step
  std::size_t collective_nodes = 0;
  std::size_t buckets = 0;
  double max_replica_param_diff = 0;  // replicas must agree exactly
};

/// Trains the MLP data-parallel with a DataParallelExecutor in `mode`.
[[nodiscard]] DataParallelRun train_mlp_data_parallel(const DataParallelDemoOptions& options, rt::ExecutionMode mode);

/// The same training in float64 on one device over the whole batch (the
/// reference; plain C++, no runtime).
[[nodiscard]] std::vector<double> mlp_reference_train_f64(const DemoOptions& options);

struct DataParallelReport {
  std::string backend;
  int devices = 0;
  int steps = 0;
  int global_batch = 0;
  std::size_t buckets = 0;
  std::size_t collective_nodes = 0;
  double dp_vs_f64 = 0;          // max |param| difference, data-parallel graph run vs the float64 reference
  double single_f32_vs_f64 = 0;  // the same for single-device float32 training on the whole batch
  double bound = 0;              // Note [Data-parallel demo bound]
  double captured_vs_eager = 0;  // data-parallel graph run vs eager run: must be exactly 0
  double replica_diff = 0;       // replicas' parameters: must be exactly 0
  double replay_median_us = 0;
  float first_loss = 0, last_loss = 0;
  [[nodiscard]] bool ok() const { return dp_vs_f64 <= bound && captured_vs_eager == 0.0 && replica_diff == 0.0; }
};

[[nodiscard]] DataParallelReport run_data_parallel_demo(const DataParallelDemoOptions& options);

/// Data-parallel across processes (`mpirun -np N stepgraph demo --ranks`):
/// this process is rank comm->rank() of comm->world_size(), one device
/// (comm->device() of comm->backend()), and trains on its shard of the
/// global batch (options.shape.batch rows). `verify` is a second communicator
/// of the same ranks, used eagerly after training to compare the ranks'
/// parameters (the first serves captured graphs only). Every rank computes
/// the same report; the bound is the in-process demo's.
struct RanksReport {
  int rank = 0;
  int ranks = 0;
  int global_batch = 0;
  std::size_t buckets = 0;
  double dp_vs_f64 = 0;
  double single_f32_vs_f64 = 0;
  double bound = 0;
  double ranks_disagree = 0;  // max over elements of (max - min) over ranks: must be 0
  double replay_median_us = 0;
  float first_loss = 0, last_loss = 0;  // this rank's shard
  [[nodiscard]] bool ok() const { return dp_vs_f64 <= bound && ranks_disagree == 0.0; }
};
/// A fault injected into the demo across processes (tests of issue 16's
/// failure rules): rank `rank` raises `signal` (SIGKILL: dies; SIGSTOP:
/// stops answering) on itself right before step `step`.
struct RankFault {
  int rank = -1;  // -1: none
  int step = 0;
  int signal = 0;
};
/// `deadline`: the executor's watchdog per replay (0: none).
[[nodiscard]] RanksReport run_ranks_demo(const DemoOptions& options, std::shared_ptr<collectives::Communicator> comm,
                                         std::shared_ptr<collectives::Communicator> verify,
                                         std::chrono::milliseconds deadline = {}, RankFault fault = {});

}  // namespace stepgraph::demo
