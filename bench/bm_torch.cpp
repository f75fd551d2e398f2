// bm_torch: the TorchStepExecutor's overhead over a plain libtorch loop on
// the CPU (issue 17 target: <= 1.05x per step for the transformer block),
// same process, same data, torch on one intra-op thread.
//
//   BM_Torch_Plain/<model>     zero_grad, forward, loss, backward, step
//   BM_Torch_Executor/<model>  replay(inputs) + wait + release through
//                              TorchStepExecutor (host backend, 1 device)
// Models: 0 = the demo MLP, 1 = one transformer encoder block
// (tools/torch_demo). Each benchmark trains its own module from the same
// seed on the same 64 batches (cycled); plain and executor alternate per
// model. Fixed iteration counts; wall time per step.
#include <benchmark/benchmark.h>

#include <torch/torch.h>

#include <stepgraph/runtime/executor.h>

#include "bench_main.h"
#include "torch_demo.h"

namespace {

namespace td = stepgraph::torch_demo;
namespace ts = stepgraph::torchstep;
namespace rt = stepgraph::runtime;

constexpr int kBatches = 64;

td::Workload workload(std::int64_t model) {
  td::Workload w;
  w.model = model == 0 ? td::Model::kMlp : td::Model::kTransformer;
  return w;
}

std::vector<std::map<std::string, ::torch::Tensor>> batches(const td::Workload& w) {
  std::vector<std::map<std::string, ::torch::Tensor>> out;
  for (int i = 0; i < kBatches; ++i) out.push_back(w.batch_of(i, 0, w.batch));
  return out;
}

void BM_Torch_Plain(benchmark::State& state) {
  const td::Workload w = workload(state.range(0));
  const auto data = batches(w);
  auto m = w.make_module();
  ::torch::optim::SGD opt(m->parameters(), ::torch::optim::SGDOptions(0.01).momentum(0.9));
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& in = data[i++ % data.size()];
    opt.zero_grad();
    ::torch::Tensor loss = w.loss(*m, in);
    loss.backward();
    opt.step();
    benchmark::DoNotOptimize(loss.item<float>());
  }
  state.SetLabel(td::to_string(w.model));
}

void BM_Torch_Executor(benchmark::State& state) {
  const td::Workload w = workload(state.range(0));
  const auto data = batches(w);
  auto m = w.make_module();
  auto opt = std::make_shared<::torch::optim::SGD>(m->parameters(), ::torch::optim::SGDOptions(0.01).momentum(0.9));
  ts::TorchExecutorOptions o;
  o.inputs = w.input_specs(w.batch);
  o.executor.backend = "host";
  ts::TorchStepExecutor ex(
      m, opt,
      [w, m](ts::TorchStep& s) {
        return w.loss(*m, {{"x", s.input("x")}, {"y", s.input("y")}});
      },
      o);
  ex.prepare();
  std::size_t i = 0;
  for (auto _ : state) {
    rt::ReplayHandle h = ex.replay(data[i++ % data.size()]);
    if (h.wait() != rt::ReplayStatus::kDone) {
      state.SkipWithError("replay failed");
      h.release();
      break;
    }
    benchmark::DoNotOptimize(ex.output(h, "loss").item<float>());
    h.release();
  }
  state.SetLabel(td::to_string(w.model));
}

void register_all() {
  for (std::int64_t model : {0, 1}) {
    const std::int64_t iterations = model == 0 ? 2000 : 200;
    for (int rep = 0; rep < 2; ++rep) {
      benchmark::RegisterBenchmark("BM_Torch_Plain", BM_Torch_Plain)
          ->Arg(model)
          ->Iterations(iterations)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark("BM_Torch_Executor", BM_Torch_Executor)
          ->Arg(model)
          ->Iterations(iterations)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::torch::set_num_threads(1);
  return sgbench::run_with_json_default(argc, argv, "bm_torch.json", register_all);
}
