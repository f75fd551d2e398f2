// A placed data-parallel StepGraph lowered with real collectives: the gang
// AllReduce node runs as one in-process AllReduce per logical device
// (LoweringOptions::collectives = kCommunicators), against a serial
// reference computed here.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <stepgraph/collectives/in_process.h>
#include <stepgraph/graphs/cost_model.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/runtime/lowering.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
namespace g = stepgraph::graphs;
namespace rt = stepgraph::runtime;
namespace col = stepgraph::collectives;

constexpr std::size_t kElems = 64;

void bwd_host(float* grad, const float* w, float scale, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) grad[i] = w[i] * scale + static_cast<float>(i);
}
void opt_host(float* w, const float* grad, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) w[i] = w[i] - 0.001f * grad[i];
}
const rt::Kernel<float*, const float*, float, std::size_t> kBwd{"bwd", bwd_host, nullptr};
const rt::Kernel<float*, const float*, std::size_t> kOpt{"opt", opt_host, nullptr};

/// One replica: bwd writes grad from w, the AllReduce sums grad, opt
/// updates w from it; replicated over `replicas`.
g::StepGraph data_parallel_step(int replicas) {
  g::StepGraph step;
  const auto grad = step.add_buffer("grad", kElems * 4);
  const auto w = step.add_buffer("w", kElems * 4);
  const auto bwd =
      step.add_kernel("bwd", g::DeviceCosts::uniform(10),
                      {{w, 0, kElems * 4, g::AccessMode::kRead}, {grad, 0, kElems * 4, g::AccessMode::kWrite}});
  const auto ar = step.add_collective("allreduce", g::CollectiveSpec{g::CollectiveOp::kAllReduce, kElems * 4},
                                      {{grad, 0, kElems * 4, g::AccessMode::kReadWrite}});
  const auto opt =
      step.add_kernel("opt", g::DeviceCosts::uniform(10),
                      {{grad, 0, kElems * 4, g::AccessMode::kRead}, {w, 0, kElems * 4, g::AccessMode::kReadWrite}});
  step.connect(bwd, ar);
  step.connect(ar, opt);
  return g::replicate_data_parallel(step, replicas);
}

int replica_of(const std::string& name) {
  return std::stoi(name.substr(1, name.find('/') - 1));  // "r<k>/..."
}

rt::NodeEmitter emitter() {
  return [](const rt::NodeLaunch& nl) {
    const auto& a = nl.accesses;
    if (nl.ir->name.ends_with("/bwd")) {
      const float scale = static_cast<float>(replica_of(nl.ir->name) + 1);
      rt::launch(nl.stream, kBwd, {.name = nl.ir->name, .accesses = nl.declarations()},
                 static_cast<float*>(a[1].data()), static_cast<const float*>(a[0].data()), scale, kElems);
    } else {
      rt::launch(nl.stream, kOpt, {.name = nl.ir->name, .accesses = nl.declarations()},
                 static_cast<float*>(a[1].data()), static_cast<const float*>(a[0].data()), kElems);
    }
  };
}

TEST(LoweredCollectives, AGangAllReduceRunsOnEveryDeviceAndMatchesTheSerialReference) {
  for (int replicas : {2, 3}) {
    const g::StepGraph graph = data_parallel_step(replicas);
    std::vector<g::Device> devices;
    for (int i = 0; i < replicas; ++i) devices.push_back({"numa" + std::to_string(i), g::DeviceKind::kCpu, 1.0, i});
    const g::Platform platform(devices, g::Link{10.0, 5.0});
    const g::CostModel model(platform);
    std::vector<int> device_of;
    for (const auto& n : graph.nodes())
      device_of.push_back(n.kind == g::NodeKind::kCollective ? 0 : replica_of(n.name));
    const auto placement = g::schedule_assignment(graph, model, device_of);

    rt::BackendOptions bo;
    bo.host_devices = replicas;
    bo.bind_workers = false;
    bo.shuffle_seed = 5;
    auto backend = rt::Backend::create("host", bo);
    std::vector<int> ids;
    for (int i = 0; i < replicas; ++i) ids.push_back(i);
    auto comms = col::make_in_process_group(backend, ids);
    rt::LoweringOptions lo;
    lo.collectives = rt::CollectiveLowering::kCommunicators;
    lo.communicators.assign(comms.begin(), comms.end());
    auto lowered = rt::lower(graph, placement, backend, rt::DeviceMap::identity(replicas), emitter(), lo);
    const auto info = lowered.info();
    EXPECT_EQ(info.count(rt::NodeKind::kCollective), static_cast<std::size_t>(replicas));

    // Every replica starts from the same w; 3 runs.
    std::vector<float> w0(kElems);
    for (std::size_t i = 0; i < kElems; ++i) w0[i] = 0.01f * static_cast<float>(i);
    for (g::BufferId b = 0; b < graph.buffers().size(); ++b)
      if (graph.buffers()[b].name.ends_with("/w")) lowered.upload(b, std::as_bytes(std::span<const float>(w0)));
    constexpr int kRuns = 3;
    for (int run = 0; run < kRuns; ++run) lowered.run();
    for (auto& c : comms) ASSERT_FALSE(c->async_error().has_value()) << *c->async_error();

    // The serial reference: the same float operations in the same order
    // (the AllReduce sums in rank order).
    std::vector<float> w = w0, sum(kElems);
    for (int run = 0; run < kRuns; ++run) {
      for (std::size_t i = 0; i < kElems; ++i) {
        float acc = w[i] * 1.0f + static_cast<float>(i);
        for (int r = 1; r < replicas; ++r) acc = acc + (w[i] * static_cast<float>(r + 1) + static_cast<float>(i));
        sum[i] = acc;
      }
      for (std::size_t i = 0; i < kElems; ++i) w[i] = w[i] - 0.001f * sum[i];
    }
    for (g::BufferId b = 0; b < graph.buffers().size(); ++b) {
      if (!graph.buffers()[b].name.ends_with("/w")) continue;
      const auto bytes = lowered.read(b);
      std::vector<float> got(kElems);
      std::memcpy(got.data(), bytes.data(), kElems * 4);
      for (std::size_t i = 0; i < kElems; ++i)
        ASSERT_EQ(got[i], w[i]) << graph.buffers()[b].name << " element " << i << ", " << replicas << " replicas";
    }
  }
}

TEST(LoweredCollectives, WithoutOneCommunicatorPerDeviceItIsRefused) {
  const g::StepGraph graph = data_parallel_step(2);
  std::vector<g::Device> devices{{"numa0", g::DeviceKind::kCpu, 1.0, 0}, {"numa1", g::DeviceKind::kCpu, 1.0, 1}};
  const g::Platform platform(devices, g::Link{10.0, 5.0});
  const g::CostModel model(platform);
  const auto placement = g::schedule_assignment(graph, model, {0, 1, 0, 0, 1});
  rt::BackendOptions bo;
  bo.host_devices = 2;
  bo.bind_workers = false;
  auto backend = rt::Backend::create("host", bo);
  rt::LoweringOptions lo;
  lo.collectives = rt::CollectiveLowering::kCommunicators;
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { (void)rt::lower(graph, placement, backend, rt::DeviceMap::identity(2), emitter(), lo); },
      {"one communicator per logical device (2); 0 given"});
  lo.collectives = rt::CollectiveLowering::kReject;
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { (void)rt::lower(graph, placement, backend, rt::DeviceMap::identity(2), emitter(), lo); },
      {"allreduce", "kCommunicators"});
}

}  // namespace
