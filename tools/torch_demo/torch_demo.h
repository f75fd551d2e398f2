// tools/torch_demo/torch_demo.h — `stepgraph torch-demo`: a small MLP and
// one transformer encoder block (libtorch modules) trained for N steps
// through the TorchStepExecutor and by a plain libtorch loop on the same
// data, compared (issue 17, item 4). Also used by bench/bm_torch.
//
// Thread-safety: each call owns its modules and executors; torch's global
// RNG is used to make the data and the initial weights (one thread at a
// time). Built only with stepgraph::torch.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/torch/executor.h>

namespace stepgraph::torch_demo {

enum class Model { kMlp, kTransformer };
[[nodiscard]] const char* to_string(Model m);

/// A model, its data and its loss, made alike for every run.
struct Workload {
  Model model = Model::kMlp;
  int batch = 32;  // the global batch
  int seed = 1;
  /// The module with the seed's initial weights.
  [[nodiscard]] std::shared_ptr<::torch::nn::Module> make_module() const;
  /// Step i's batch rows [first, first + rows) ("x", "y").
  [[nodiscard]] std::map<std::string, ::torch::Tensor> batch_of(int step, int first, int rows) const;
  [[nodiscard]] std::vector<torchstep::TensorSpec> input_specs(int rows) const;
  /// Forward and loss of `module` on `in`.
  [[nodiscard]] ::torch::Tensor loss(::torch::nn::Module& module,
                                     const std::map<std::string, ::torch::Tensor>& in) const;
};

struct RunResult {
  std::vector<float> losses;                    // per step (rank 0's shard when data-parallel)
  std::shared_ptr<::torch::nn::Module> module;  // rank 0's, after the last step
  std::vector<double> step_us;                  // per step, wall time (replay + wait, or the plain step)
  double replica_diff = 0;                      // data-parallel: max |difference| between replicas
};

/// N steps of SGD (lr 0.01, momentum 0.9) through TorchStepExecutor on
/// `devices` in-process ranks of the host backend (1: no communicator).
[[nodiscard]] RunResult train_executor(const Workload& w, int steps, int devices);
/// The same training across processes: this process is rank
/// comm->rank() of comm->world_size() (an MPI communicator; one host
/// device), training on its shard of the global batch. `verify`, a second
/// communicator of the same ranks, compares the ranks' parameters after
/// training (eagerly): replica_diff is max over elements of (max − min)
/// over ranks.
[[nodiscard]] RunResult train_executor_ranks(const Workload& w, int steps,
                                             std::shared_ptr<collectives::Communicator> comm,
                                             std::shared_ptr<collectives::Communicator> verify);
/// The same N steps by a plain libtorch loop on the whole batch.
[[nodiscard]] RunResult train_plain(const Workload& w, int steps);
/// max |difference| over every parameter of two modules of one workload.
[[nodiscard]] double max_param_diff(::torch::nn::Module& a, ::torch::nn::Module& b);

}  // namespace stepgraph::torch_demo
