// `stepgraph torch-demo`'s models and runs (torch_demo.h).
#include "torch_demo.h"

#include <chrono>
#include <cstring>
#include <thread>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/core/error.h>

#include <fmt/format.h>
#include <stepgraph/runtime/backend.h>

namespace stepgraph::torch_demo {
namespace rt = stepgraph::runtime;
namespace ts = stepgraph::torchstep;

namespace {

constexpr int kIn = 16, kHidden = 64;              // MLP
constexpr int kSeq = 16, kModel = 32, kHeads = 4;  // transformer block

struct DemoNet : ::torch::nn::Module {
  virtual ::torch::Tensor forward(const ::torch::Tensor& x) = 0;
};

struct Mlp : DemoNet {
  Mlp()
      : fc1(register_module("fc1", ::torch::nn::Linear(kIn, kHidden))),
        fc2(register_module("fc2", ::torch::nn::Linear(kHidden, 1))) {}
  ::torch::Tensor forward(const ::torch::Tensor& x) override { return fc2(::torch::tanh(fc1(x))); }
  ::torch::nn::Linear fc1, fc2;
};

/// One encoder block (self-attention, feed-forward, two layer norms; no
/// dropout: the two runs must compute the same function), then a linear
/// head. Input [batch, seq, model].
struct Block : DemoNet {
  Block()
      : layer(register_module(
            "layer",
            ::torch::nn::TransformerEncoderLayer(
                ::torch::nn::TransformerEncoderLayerOptions(kModel, kHeads).dim_feedforward(2 * kModel).dropout(0.0)))),
        head(register_module("head", ::torch::nn::Linear(kModel, 1))) {}
  ::torch::Tensor forward(const ::torch::Tensor& x) override { return head(layer(x.transpose(0, 1)).transpose(0, 1)); }
  ::torch::nn::TransformerEncoderLayer layer;
  ::torch::nn::Linear head;
};

std::vector<std::int64_t> x_shape(Model m, int rows) {
  return m == Model::kMlp ? std::vector<std::int64_t>{rows, kIn} : std::vector<std::int64_t>{rows, kSeq, kModel};
}
std::vector<std::int64_t> y_shape(Model m, int rows) {
  return m == Model::kMlp ? std::vector<std::int64_t>{rows, 1} : std::vector<std::int64_t>{rows, kSeq, 1};
}

ts::TorchStepFn step_fn(const Workload& w, std::shared_ptr<::torch::nn::Module> m) {
  return [w, m](ts::TorchStep& s) { return w.loss(*m, {{"x", s.input("x")}, {"y", s.input("y")}}); };
}

std::shared_ptr<::torch::optim::Optimizer> make_optimizer(::torch::nn::Module& m) {
  return std::make_shared<::torch::optim::SGD>(m.parameters(), ::torch::optim::SGDOptions(0.01).momentum(0.9));
}

double us_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

const char* to_string(Model m) {
  return m == Model::kMlp ? "mlp" : "transformer";
}

std::shared_ptr<::torch::nn::Module> Workload::make_module() const {
  ::torch::manual_seed(static_cast<std::uint64_t>(seed));
  if (model == Model::kMlp) return std::make_shared<Mlp>();
  return std::make_shared<Block>();
}

std::map<std::string, ::torch::Tensor> Workload::batch_of(int step, int first, int rows) const {
  ::torch::manual_seed(static_cast<std::uint64_t>(seed) * 100003u + static_cast<std::uint64_t>(step));
  const ::torch::Tensor x = ::torch::randn(x_shape(model, batch));
  const ::torch::Tensor w = ::torch::linspace(-0.5, 0.5, x.size(-1));
  const ::torch::Tensor y = ::torch::tanh(x.matmul(w)).unsqueeze(-1);
  return {{"x", x.narrow(0, first, rows).contiguous()}, {"y", y.narrow(0, first, rows).contiguous()}};
}

std::vector<ts::TensorSpec> Workload::input_specs(int rows) const {
  return {{.name = "x", .shape = x_shape(model, rows)}, {.name = "y", .shape = y_shape(model, rows)}};
}

::torch::Tensor Workload::loss(::torch::nn::Module& module, const std::map<std::string, ::torch::Tensor>& in) const {
  return ::torch::mse_loss(static_cast<DemoNet&>(module).forward(in.at("x")), in.at("y"));
}

double max_param_diff(::torch::nn::Module& a, ::torch::nn::Module& b) {
  const auto pb = b.named_parameters();
  double d = 0;
  for (const auto& p : a.named_parameters()) d = std::max(d, (p.value() - pb[p.key()]).abs().max().item<double>());
  return d;
}

RunResult train_plain(const Workload& w, int steps) {
  RunResult r;
  r.module = w.make_module();
  auto opt = make_optimizer(*r.module);
  for (int i = 0; i < steps; ++i) {
    const auto in = w.batch_of(i, 0, w.batch);
    const auto t0 = std::chrono::steady_clock::now();
    opt->zero_grad();
    ::torch::Tensor loss = w.loss(*r.module, in);
    loss.backward();
    opt->step();
    r.step_us.push_back(us_since(t0));
    r.losses.push_back(loss.item<float>());
  }
  return r;
}

RunResult train_executor(const Workload& w, int steps, int devices) {
  STEPGRAPH_CHECK(devices >= 1 && w.batch % devices == 0, InvalidArgument,
                  "torch-demo: the batch ({}) must split evenly over {} device(s)", w.batch, devices);
  const int rows = w.batch / devices;
  std::shared_ptr<rt::Backend> backend;
  std::vector<std::shared_ptr<collectives::Communicator>> comms(static_cast<std::size_t>(devices));
  if (devices > 1) {
    rt::BackendOptions bo;
    bo.host_devices = devices;
    backend = rt::Backend::create("host", bo);
    std::vector<int> ids;
    for (int d = 0; d < devices; ++d) ids.push_back(d);
    comms = collectives::make_in_process_group(backend, ids);
  }
  std::vector<std::shared_ptr<::torch::nn::Module>> modules;
  std::vector<std::unique_ptr<ts::TorchStepExecutor>> execs;
  for (int d = 0; d < devices; ++d) {
    modules.push_back(w.make_module());
    ts::TorchExecutorOptions o;
    o.inputs = w.input_specs(rows);
    o.executor.backend = "host";
    o.communicator = comms[static_cast<std::size_t>(d)];
    execs.push_back(std::make_unique<ts::TorchStepExecutor>(modules.back(), make_optimizer(*modules.back()),
                                                            step_fn(w, modules.back()), o));
  }
  // Every batch made here, before the ranks start (torch's global RNG).
  std::vector<std::vector<std::map<std::string, ::torch::Tensor>>> data(static_cast<std::size_t>(devices));
  for (int d = 0; d < devices; ++d)
    for (int i = 0; i < steps; ++i) data[static_cast<std::size_t>(d)].push_back(w.batch_of(i, d * rows, rows));
  RunResult r;
  std::vector<std::string> errors(static_cast<std::size_t>(devices));
  auto run_rank = [&](int d) {
    auto& ex = *execs[static_cast<std::size_t>(d)];
    for (int i = 0; i < steps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      rt::ReplayHandle h = ex.replay(data[static_cast<std::size_t>(d)][static_cast<std::size_t>(i)]);
      const rt::ReplayStatus st = h.wait();
      if (d == 0) r.step_us.push_back(us_since(t0));
      if (st != rt::ReplayStatus::kDone) {
        errors[static_cast<std::size_t>(d)] = h.error() ? h.error()->message : std::string(rt::to_string(st));
        h.release();
        return;
      }
      if (d == 0) r.losses.push_back(ex.output(h, "loss").item<float>());
      h.release();
    }
  };
  if (devices == 1) {
    run_rank(0);
  } else {
    std::vector<std::thread> threads;
    for (int d = 0; d < devices; ++d) threads.emplace_back(run_rank, d);
    for (auto& t : threads) t.join();
  }
  for (const auto& e : errors) STEPGRAPH_CHECK(e.empty(), InvalidState, "torch-demo: a replay failed: {}", e);
  execs.clear();
  for (int d = 1; d < devices; ++d)
    r.replica_diff = std::max(r.replica_diff, max_param_diff(*modules[0], *modules[static_cast<std::size_t>(d)]));
  r.module = modules[0];
  return r;
}

RunResult train_executor_ranks(const Workload& w, int steps, std::shared_ptr<collectives::Communicator> comm,
                               std::shared_ptr<collectives::Communicator> verify) {
  const int n = comm->world_size(), rank = comm->rank();
  STEPGRAPH_CHECK(w.batch % n == 0, InvalidArgument,
                  "torch-demo --ranks: the batch ({}) must split evenly over {} ranks", w.batch, n);
  const int rows = w.batch / n;
  RunResult r;
  r.module = w.make_module();
  ts::TorchExecutorOptions o;
  o.inputs = w.input_specs(rows);
  o.communicator = comm;
  {
    ts::TorchStepExecutor ex(r.module, make_optimizer(*r.module), step_fn(w, r.module), o);
    for (int i = 0; i < steps; ++i) {
      const auto in = w.batch_of(i, rank * rows, rows);
      const auto t0 = std::chrono::steady_clock::now();
      rt::ReplayHandle h = ex.replay(in);
      const rt::ReplayStatus st = h.wait();
      r.step_us.push_back(us_since(t0));
      if (st != rt::ReplayStatus::kDone) {
        const std::string why = h.error() ? h.error()->message : std::string(rt::to_string(st));
        h.release();
        throw InvalidState(fmt::format("torch-demo --ranks: rank {} step {} failed: {}", rank, i, why));
      }
      r.losses.push_back(ex.output(h, "loss").item<float>());
      h.release();
    }
  }
  // The ranks' parameters: elementwise max and min over ranks, eagerly.
  std::vector<float> flat;
  for (const auto& p : r.module->parameters()) {
    const ::torch::Tensor c = p.detach().contiguous().view(-1);
    flat.insert(flat.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  }
  auto& backend = verify->backend();
  const std::size_t bytes = flat.size() * sizeof(float);
  rt::Buffer stage = backend.allocate_pinned(bytes), hi = backend.allocate(verify->device(), bytes),
             lo = backend.allocate(verify->device(), bytes);
  std::memcpy(stage.host_data(), flat.data(), bytes);
  rt::StreamRef s = verify->stream();
  s.copy(hi.slice(), stage.slice());
  s.copy(lo.slice(), stage.slice());
  verify->all_reduce(s, hi, 0, flat.size(), rt::DType::kFloat32, rt::ReduceOp::kMax, "params max");
  verify->all_reduce(s, lo, 0, flat.size(), rt::DType::kFloat32, rt::ReduceOp::kMin, "params min");
  std::vector<float> vhi(flat.size()), vlo(flat.size());
  s.copy(stage.slice(), hi.slice());
  s.synchronize();
  std::memcpy(vhi.data(), stage.host_data(), bytes);
  s.copy(stage.slice(), lo.slice());
  s.synchronize();
  std::memcpy(vlo.data(), stage.host_data(), bytes);
  verify->check();
  for (std::size_t i = 0; i < flat.size(); ++i)
    r.replica_diff = std::max(r.replica_diff, static_cast<double>(vhi[i]) - static_cast<double>(vlo[i]));
  return r;
}

}  // namespace stepgraph::torch_demo
