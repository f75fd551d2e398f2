// Lowering on the cuda backend (label gpu): two logical devices on one GPU,
// each with its own stream and arena, data moved between them by
// device-to-device copies; every final buffer must equal, bit for bit, the
// single-device run on the host backend (an independent executor; the mix
// kernels are exact uint64 arithmetic on both). Skips itself with the reason
// where no CUDA device is present.
#include <gtest/gtest.h>

#include <string>

#include <stepgraph/graphs/workloads.h>
#include <stepgraph/runtime/lowering.h>

#include "lowering_harness.h"

namespace rt = stepgraph::runtime;
namespace g = stepgraph::graphs;
namespace lw = sgtest::lowering;

namespace {

std::shared_ptr<rt::Backend> cuda_or_skip(std::string* reason) {
  if (!rt::Backend::cuda_available(reason)) return nullptr;
  return rt::Backend::create(rt::BackendKind::kCuda);
}

void expect_two_logical_devices_equal_host_reference(const g::StepGraph& graph, g::Algorithm algorithm, int runs,
                                                     const rt::LoweringOptions& options = {}) {
  std::string reason;
  auto be = cuda_or_skip(&reason);
  if (!be) GTEST_SKIP() << "no CUDA device: " << reason;
  const auto placement = lw::place(graph, lw::cpu_platform(2), algorithm);
  ASSERT_GE(lw::devices_used(graph, placement), 2);
  auto lowered = rt::lower(graph, placement, be, rt::DeviceMap::shared(2, 0), lw::mix_emitter(), options);
  EXPECT_NE(lowered.stream(0), lowered.stream(1));
  const auto info = lowered.info();
  std::size_t copies = 0;
  for (const auto& n : info.nodes)
    if (n.kind == rt::NodeKind::kMemcpy) {
      ++copies;
      EXPECT_EQ(n.copy_kind, rt::CopyKind::kDeviceToDevice) << n.name;
    }
  EXPECT_GT(copies, 0u);
  const auto got = lw::run_and_read(lowered, graph, runs);
  const auto want = lw::reference(graph, runs, options);
  for (std::size_t b = 0; b < got.size(); ++b)
    EXPECT_TRUE(got[b] == want[b]) << "buffer '" << graph.buffers()[b].name << "' differs from the host reference";
}

}  // namespace

TEST(LoweringCuda, TwoLogicalDevicesOnOneGpuEqualTheSingleDeviceRun) {
  const g::RandomDagSpec spec{.nodes = 60, .ccr = 0.5, .seed = 3};
  const auto graph = lw::with_dataflow(g::make_random_dag(spec), 4096);
  expect_two_logical_devices_equal_host_reference(graph, g::Algorithm::kHeft, 2);
  expect_two_logical_devices_equal_host_reference(graph, g::Algorithm::kRoundRobin, 2);
}

TEST(LoweringCuda, TransformerStepOnTwoLogicalDevicesEqualsTheSingleDeviceRun) {
  g::TransformerSpec spec;
  spec.layers = 3;
  spec.hidden = 32;
  spec.seq = 16;
  spec.batch = 2;
  spec.bytes_per_element = 8;
  rt::LoweringOptions o;
  o.collectives = rt::CollectiveLowering::kOnLogicalDeviceZero;
  expect_two_logical_devices_equal_host_reference(g::make_transformer(spec), g::Algorithm::kRoundRobin, 2, o);
}

TEST(LoweringCuda, ASingleDeviceLoweringOnTheGpuEqualsTheHostOne) {
  std::string reason;
  auto be = cuda_or_skip(&reason);
  if (!be) GTEST_SKIP() << "no CUDA device: " << reason;
  g::ForkJoinSpec spec;
  spec.stages = 3;
  spec.width = 8;
  const auto graph = lw::with_dataflow(g::make_fork_join(spec), 1024);
  auto lowered = rt::lower_single_device(graph, be, 0, lw::mix_emitter());
  EXPECT_TRUE(lowered.copies().empty());
  const auto got = lw::run_and_read(lowered, graph, 3);
  const auto want = lw::reference(graph, 3);
  for (std::size_t b = 0; b < got.size(); ++b) EXPECT_TRUE(got[b] == want[b]) << graph.buffers()[b].name;
}
