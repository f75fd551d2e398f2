// Collective bytes and time per communicator (Note [Executor metrics]):
// two executors on two host devices, AllReduce inside the captured step,
// against the bytes the test knows each replay moves.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/runtime/executor.h>

namespace rt = stepgraph::runtime;
namespace col = stepgraph::collectives;

namespace {

constexpr std::size_t kCount = 4096;  // floats per AllReduce

double value(const rt::MetricsRegistry& r, const std::string& series) {
  std::istringstream in(r.render());
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  return -1;
}

}  // namespace

TEST(CollectiveMetrics, BytesAndSecondsPerCommunicatorFollowTheReplays) {
  rt::BackendOptions bo;
  bo.host_devices = 2;
  bo.bind_workers = false;
  auto backend = rt::Backend::create("host", bo);
  auto comms = col::make_in_process_group(backend, {0, 1});
  rt::StepSpec spec;
  spec.state = {{.name = "g", .bytes = kCount * sizeof(float)}};
  auto step = [](rt::StepContext& ctx) {
    ctx.collectives().all_reduce(ctx.stream(), ctx.state("g"), 0, kCount, rt::DType::kFloat32, rt::ReduceOp::kSum);
  };
  std::vector<std::shared_ptr<rt::MetricsRegistry>> registries;
  std::vector<std::unique_ptr<rt::StepExecutor>> ex;
  for (int d = 0; d < 2; ++d) {
    registries.push_back(rt::MetricsRegistry::create());
    rt::ExecutorOptions o;
    o.backend_instance = backend;
    o.device = d;
    o.warmup = 2;
    o.collectives = comms[static_cast<std::size_t>(d)];
    o.metrics = registries.back();
    ex.push_back(std::make_unique<rt::StepExecutor>(spec, step, o));
  }
  constexpr int kSteps = 12;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kSteps; ++i) {
    auto a = ex[0]->replay();
    auto b = ex[1]->replay();
    ASSERT_EQ(a.wait(), rt::ReplayStatus::kDone);
    ASSERT_EQ(b.wait(), rt::ReplayStatus::kDone);
    a.release();
    b.release();
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int replays = kSteps - 2;  // the warm-ups run eagerly: not graph replays
  for (int d = 0; d < 2; ++d) {
    ex[static_cast<std::size_t>(d)]->synchronize();
    const auto info = ex[static_cast<std::size_t>(d)]->graph_info();
    std::uint64_t comm = 0;
    int collectives = 0;
    for (const auto& n : info.nodes)
      if (n.collective) {
        comm = n.collective->communicator;
        ++collectives;
      }
    ASSERT_EQ(collectives, 1);
    const std::string label = "{communicator=\"" + std::to_string(comm) + "\"}";
    const auto& r = *registries[static_cast<std::size_t>(d)];
    EXPECT_EQ(value(r, "stepgraph_collective_bytes_total" + label),
              static_cast<double>(replays) * kCount * sizeof(float))
        << "device " << d;
    const double seconds = value(r, "stepgraph_collective_seconds_total" + label);
    EXPECT_GT(seconds, 0) << "device " << d;
    EXPECT_LT(seconds, wall) << "device " << d;
  }
}
