// TorchStepExecutor on Debian's CPU libtorch (Note [Torch steps on the
// CPU]): replayed training against a plain libtorch loop written out here
// (the reference: zero_grad, forward, loss, backward, step), bad inputs,
// a torch exception inside a step, data-parallel ranks against one process
// on the whole batch, and check_against_eager.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <thread>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/core/error.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/torch/executor.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
namespace rt = stepgraph::runtime;
namespace ts = stepgraph::torchstep;

constexpr int kIn = 8, kHidden = 16, kBatch = 32;

struct MlpImpl : ::torch::nn::Module {
  MlpImpl()
      : fc1(register_module("fc1", ::torch::nn::Linear(kIn, kHidden))),
        fc2(register_module("fc2", ::torch::nn::Linear(kHidden, 1))) {}
  ::torch::Tensor forward(const ::torch::Tensor& x) { return fc2(::torch::tanh(fc1(x))); }
  ::torch::nn::Linear fc1, fc2;
};

std::shared_ptr<MlpImpl> make_mlp(std::uint64_t seed) {
  ::torch::manual_seed(seed);
  return std::make_shared<MlpImpl>();
}

/// Step i's batch: x ~ N(0, 1), y = tanh(x · w) for a fixed w
/// (deterministic in i; learnable by the MLP).
std::map<std::string, ::torch::Tensor> batch(int i, int rows = kBatch, int first_row = 0) {
  ::torch::manual_seed(1000 + i);
  const ::torch::Tensor x = ::torch::randn({kBatch, kIn});
  const ::torch::Tensor y = ::torch::tanh(x.matmul(::torch::linspace(-0.5, 0.5, kIn)).unsqueeze(1));
  return {{"x", x.narrow(0, first_row, rows).contiguous()}, {"y", y.narrow(0, first_row, rows).contiguous()}};
}

ts::TorchExecutorOptions options(int rows = kBatch) {
  ts::TorchExecutorOptions o;
  o.inputs = {{.name = "x", .shape = {rows, kIn}}, {.name = "y", .shape = {rows, 1}}};
  o.executor.backend = "host";
  o.executor.warmup = 2;
  return o;
}

ts::TorchStepFn mse_step(std::shared_ptr<MlpImpl> m) {
  return [m](ts::TorchStep& s) { return ::torch::mse_loss(m->forward(s.input("x")), s.input("y")); };
}

double max_param_diff(::torch::nn::Module& a, ::torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  double d = 0;
  for (const auto& p : pa) d = std::max(d, (p.value() - pb[p.key()]).abs().max().item<double>());
  return d;
}

class TorchExecutor : public ::testing::Test {
 protected:
  void SetUp() override { ::torch::set_num_threads(1); }
};

TEST_F(TorchExecutor, ReplayedTrainingEqualsAPlainLibtorchLoopBitForBit) {
  constexpr int kSteps = 12;
  auto model = make_mlp(7);
  auto opt = std::make_shared<::torch::optim::SGD>(model->parameters(), ::torch::optim::SGDOptions(0.05).momentum(0.9));
  std::vector<float> losses;
  {
    ts::TorchStepExecutor ex(model, opt, mse_step(model), options());
    EXPECT_EQ(ex.buckets(), 1u);
    for (int i = 0; i < kSteps; ++i) {
      rt::ReplayHandle h = ex.replay(batch(i));
      ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone) << (h.error() ? h.error()->message : "");
      losses.push_back(ex.output(h, "loss").item<float>());
      h.release();
    }
    EXPECT_EQ(ex.executor().state(), rt::ExecutorState::kReady) << "the later steps were graph replays";
  }

  // The reference: the plain libtorch loop, from the same initial weights.
  auto ref = make_mlp(7);
  ::torch::optim::SGD ref_opt(ref->parameters(), ::torch::optim::SGDOptions(0.05).momentum(0.9));
  for (int i = 0; i < kSteps; ++i) {
    const auto b = batch(i);
    ref_opt.zero_grad();
    ::torch::Tensor loss = ::torch::mse_loss(ref->forward(b.at("x")), b.at("y"));
    loss.backward();
    ref_opt.step();
    EXPECT_EQ(losses[static_cast<std::size_t>(i)], loss.item<float>()) << "step " << i;
  }
  EXPECT_EQ(max_param_diff(*model, *ref), 0.0);
  const auto last = batch(kSteps - 1);
  EXPECT_LT(::torch::mse_loss(model->forward(last.at("x")), last.at("y")).item<float>(),
            ::torch::mse_loss(make_mlp(7)->forward(last.at("x")), last.at("y")).item<float>())
      << "it trains";
}

TEST_F(TorchExecutor, ZeroCopyInputsAreTensorsOverThePinnedSlot) {
  auto model = make_mlp(3);
  auto opt = std::make_shared<::torch::optim::SGD>(model->parameters(), ::torch::optim::SGDOptions(0.1));
  ts::TorchStepExecutor ex(model, opt, mse_step(model), options());
  auto ref = make_mlp(3);
  ::torch::optim::SGD ref_opt(ref->parameters(), ::torch::optim::SGDOptions(0.1));
  for (int i = 0; i < 5; ++i) {
    const auto b = batch(i);
    rt::InputSlot slot = ex.acquire_inputs();
    ::torch::Tensor x = ex.slot_input(slot, "x");
    EXPECT_EQ(x.data_ptr(), slot.input("x").host_data()) << "a view, not a copy";
    x.copy_(b.at("x"));
    ex.slot_input(slot, "y").copy_(b.at("y"));
    rt::ReplayHandle h = ex.replay(std::move(slot));
    ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
    h.release();
    ref_opt.zero_grad();
    ::torch::mse_loss(ref->forward(b.at("x")), b.at("y")).backward();
    ref_opt.step();
  }
  EXPECT_EQ(max_param_diff(*model, *ref), 0.0);
}

TEST_F(TorchExecutor, BadInputsAreTypedErrorsBeforeAnythingRuns) {
  auto model = make_mlp(1);
  auto opt = std::make_shared<::torch::optim::SGD>(model->parameters(), ::torch::optim::SGDOptions(0.1));
  ts::TorchStepExecutor ex(model, opt, mse_step(model), options());
  auto good = batch(0);
  auto with = [&](const std::string& name, ::torch::Tensor t) {
    auto b = good;
    b[name] = std::move(t);
    return b;
  };
  sgtest::expect_throw_with<InvalidArgument>(
      [&] {
        (void)ex.replay(with("x", ::torch::zeros({kBatch, kIn + 1})));
      },
      {"'x'", "[32, 9]", "[32, 8]"});
  sgtest::expect_throw_with<InvalidArgument>(
      [&] {
        (void)ex.replay(with("y", ::torch::zeros({kBatch, 1}, ::torch::kFloat64)));
      },
      {"'y'", "Double", "Float"});
  auto missing = good;
  missing.erase("y");
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)ex.replay(missing); }, {"'y' is missing"});
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)ex.replay(with("z", ::torch::zeros({1}))); },
                                             {"'z' was not declared"});
  EXPECT_EQ(ex.executor().state(), rt::ExecutorState::kCreated) << "nothing ran";
  // Declarations are checked too.
  auto bad = options();
  bad.outputs = {{.name = "loss", .shape = {}}};
  sgtest::expect_throw_with<InvalidArgument>([&] { ts::TorchStepExecutor e(model, opt, mse_step(model), bad); },
                                             {"'loss'"});
  bad = options();
  bad.inputs.push_back({.name = "h", .shape = {2}, .dtype = ::torch::kFloat16});
  sgtest::expect_throw_with<InvalidArgument>([&] { ts::TorchStepExecutor e(model, opt, mse_step(model), bad); },
                                             {"'h'", "Half"});
}

TEST_F(TorchExecutor, ATorchExceptionInAStepIsAStepErrorNamingTheStepAndTheNode) {
  auto model = make_mlp(2);
  auto opt = std::make_shared<::torch::optim::SGD>(model->parameters(), ::torch::optim::SGDOptions(0.1));
  auto fail_at = std::make_shared<std::atomic<int>>(-1);
  auto count = std::make_shared<std::atomic<int>>(0);
  ts::TorchStepFn fn = [model, fail_at, count](ts::TorchStep& s) {
    ::torch::Tensor x = s.input("x");
    if ((*count)++ == fail_at->load()) x = x.narrow(1, 0, 3);  // [32, 3] into Linear(8, 16): torch throws
    return ::torch::mse_loss(model->forward(x), s.input("y"));
  };
  ts::TorchStepExecutor ex(model, opt, fn, options());
  fail_at->store(4);  // the closure runs once per step (warm-ups eagerly, then every replay): call 4 is step 4
  std::optional<rt::StepError> err;
  for (int i = 0; i < 6 && !err; ++i) {
    rt::ReplayHandle h = ex.replay(batch(i));
    if (h.wait() != rt::ReplayStatus::kDone) err = h.error();
    h.release();
  }
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->kind, rt::StepErrorKind::kDeviceFault);
  EXPECT_EQ(err->step, 4);
  ASSERT_TRUE(err->node.has_value());
  EXPECT_EQ(*err->node, "torch forward+backward");
  EXPECT_NE(err->message.find("mat1 and mat2 shapes cannot be multiplied"), std::string::npos) << err->message;
  // The executor is failed before the failed replay's handle completes.
  EXPECT_EQ(ex.executor().state(), rt::ExecutorState::kFailed);
  ASSERT_TRUE(ex.executor().failure().has_value());
  EXPECT_EQ(ex.executor().failure()->step, 4);
}

TEST_F(TorchExecutor, CheckAgainstEagerFindsNoDifferenceAndLeavesTheReplayedState) {
  auto model = make_mlp(5);
  auto opt = std::make_shared<::torch::optim::Adam>(model->parameters(), ::torch::optim::AdamOptions(1e-2));
  ts::TorchStepExecutor ex(model, opt, mse_step(model), options());
  const ts::EagerComparison c = ex.check_against_eager(6, [](int i) { return batch(i); });
  EXPECT_TRUE(c.identical()) << "worst " << c.worst << ", fc1.weight " << c.max_abs_diff.at("param fc1.weight");
  EXPECT_EQ(c.max_abs_diff.size(), 4u);  // fc1/fc2 weight and bias
  // The checker can fail: a closure whose loss depends on a counter it
  // keeps itself computes other values in the eager run (calls 4-7) than in
  // the replays (calls 0-3).
  auto m2 = make_mlp(5);
  auto o2 = std::make_shared<::torch::optim::SGD>(m2->parameters(), ::torch::optim::SGDOptions(0.1));
  auto calls = std::make_shared<int>(0);
  ts::TorchStepExecutor ex2(
      m2, o2,
      [m2, calls](ts::TorchStep& s) {
        return ::torch::mse_loss(m2->forward(s.input("x")), s.input("y")) * (1.0 + 0.1 * (*calls)++);
      },
      options());
  const ts::EagerComparison c2 = ex2.check_against_eager(4, [](int i) { return batch(i); });
  EXPECT_GT(c2.worst, 1e-4) << "a closure whose result depends on how often it ran differs between the two runs; "
                            << *calls << " calls";
}

TEST_F(TorchExecutor, DataParallelRanksAgreeAndMatchOneProcessOnTheWholeBatch) {
  constexpr int kRanks = 2, kSteps = 8, kRows = kBatch / kRanks;
  rt::BackendOptions bo;
  bo.host_devices = kRanks;
  auto backend = rt::Backend::create("host", bo);
  auto comms = collectives::make_in_process_group(backend, {0, 1});
  std::vector<std::shared_ptr<MlpImpl>> models;
  std::vector<std::unique_ptr<ts::TorchStepExecutor>> execs;
  for (int r = 0; r < kRanks; ++r) {
    models.push_back(make_mlp(9));
    auto opt = std::make_shared<::torch::optim::SGD>(models.back()->parameters(), ::torch::optim::SGDOptions(0.05));
    auto o = options(kRows);
    o.communicator = comms[static_cast<std::size_t>(r)];
    o.first_bucket_cap_bytes = 64;  // several buckets
    o.bucket_cap_bytes = 256;
    execs.push_back(std::make_unique<ts::TorchStepExecutor>(models.back(), opt, mse_step(models.back()), o));
  }
  EXPECT_GT(execs[0]->buckets(), 1u);
  // The shards, made here: torch's global generator (manual_seed) is not
  // for two threads at once.
  std::vector<std::vector<std::map<std::string, ::torch::Tensor>>> shards(kRanks);
  for (int r = 0; r < kRanks; ++r)
    for (int i = 0; i < kSteps; ++i) shards[static_cast<std::size_t>(r)].push_back(batch(i, kRows, r * kRows));
  std::vector<std::thread> threads;
  std::vector<std::string> errors(kRanks);
  for (int r = 0; r < kRanks; ++r)
    threads.emplace_back([&, r] {
      for (int i = 0; i < kSteps; ++i) {
        rt::ReplayHandle h = execs[static_cast<std::size_t>(r)]->replay(
            shards[static_cast<std::size_t>(r)][static_cast<std::size_t>(i)]);
        if (h.wait() != rt::ReplayStatus::kDone) errors[static_cast<std::size_t>(r)] = h.error()->message;
        h.release();
        if (!errors[static_cast<std::size_t>(r)].empty()) return;
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) ASSERT_TRUE(e.empty()) << e;
  EXPECT_EQ(max_param_diff(*models[0], *models[1]), 0.0) << "replicas identical";

  // One process on the whole batch: the average of the shards' mean-squared
  // errors is the whole batch's, so the trajectories agree up to float32
  // rounding of the sums.
  auto ref = make_mlp(9);
  ::torch::optim::SGD ref_opt(ref->parameters(), ::torch::optim::SGDOptions(0.05));
  for (int i = 0; i < kSteps; ++i) {
    const auto b = batch(i);
    ref_opt.zero_grad();
    ::torch::mse_loss(ref->forward(b.at("x")), b.at("y")).backward();
    ref_opt.step();
  }
  const double d = max_param_diff(*models[0], *ref);
  EXPECT_LT(d, 1e-5);
  EXPECT_GT(max_param_diff(*make_mlp(9), *ref), 1e-3) << "and training moved the parameters far more than that";
}

}  // namespace
