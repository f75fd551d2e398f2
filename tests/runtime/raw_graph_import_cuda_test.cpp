// Importing a raw CUDA graph (test_runtime_import_cuda, label gpu; skipped
// with the reason where no device is present): a graph captured with
// cudaStreamBeginCapture on raw streams, with raw __global__ kernels and no
// stepgraph annotation (raw_graph_kernels.cu). The reference is the structure
// the capture built: one memcpy of kRawBytes, three kernels, fork and join.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/graph_import.h>

#include "raw_graph_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;
namespace g = stepgraph::graphs;

namespace {

class RawCudaGraphImport : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    capture_ = sgtest::raw::capture_raw_graph();
    ASSERT_NE(capture_.graph, nullptr) << capture_.failed_call << ": " << capture_.error;
  }
  void TearDown() override { sgtest::raw::release(capture_); }

  /// The node whose name starts with `prefix`; fails the test if not exactly one.
  static g::NodeId named(const g::StepGraph& graph, const std::string& prefix) {
    std::vector<g::NodeId> found;
    for (const auto& n : graph.nodes())
      if (n.name.rfind(prefix, 0) == 0) found.push_back(n.id);
    EXPECT_EQ(found.size(), 1u) << "nodes named '" << prefix << "...'";
    return found.empty() ? g::kNoNode : found.front();
  }

  sgtest::raw::RawCapture capture_;
};

}  // namespace

TEST_F(RawCudaGraphImport, DescriptionHasTheCapturedNodesAndEdges) {
  const auto d = rt::describe_raw_cuda_graph(capture_.graph);
  ASSERT_EQ(d.nodes.size(), 4u);
  std::map<rt::RawNodeType, int> count;
  for (const auto& n : d.nodes) ++count[n.type];
  EXPECT_EQ(count[rt::RawNodeType::kMemcpy], 1);
  EXPECT_EQ(count[rt::RawNodeType::kKernel], 3);
  for (const auto& n : d.nodes) {
    if (n.type == rt::RawNodeType::kMemcpy) {
      EXPECT_EQ(n.bytes, sgtest::raw::kRawBytes);
    }
    if (n.type == rt::RawNodeType::kKernel) {
      EXPECT_FALSE(n.name.empty()) << "cudaFuncGetName named no kernel";
    }
  }
  EXPECT_EQ(d.edges.size(), 4u);
}

TEST_F(RawCudaGraphImport, ImportHasCountsEdgesAndKernelNamesOfTheCapture) {
  const auto graph = rt::import_raw_cuda_graph(capture_.graph);
  EXPECT_EQ(graph.origin(), g::GraphOrigin::kRawCudaGraph);
  EXPECT_TRUE(graph.buffers().empty());
  ASSERT_EQ(graph.node_count(), 4u);
  std::map<g::NodeKind, int> count;
  for (const auto& n : graph.nodes()) ++count[n.kind];
  EXPECT_EQ(count[g::NodeKind::kMemcpy], 1);
  EXPECT_EQ(count[g::NodeKind::kKernel], 3);

  const auto copy = named(graph, "memcpy_");
  const auto scale = named(graph, "raw_scale");
  const auto shift = named(graph, "raw_shift");
  const auto combine = named(graph, "raw_combine");
  ASSERT_NE(copy, g::kNoNode);
  EXPECT_NE(graph.node(copy).name.find("(4096 B)"), std::string::npos) << graph.node(copy).name;
  std::set<std::pair<g::NodeId, g::NodeId>> edges;
  for (const auto& e : graph.edges()) edges.emplace(e.src, e.dst);
  const std::set<std::pair<g::NodeId, g::NodeId>> want = {
      {copy, scale}, {copy, shift}, {scale, combine}, {shift, combine}};
  EXPECT_EQ(edges, want);

  const auto dot = g::to_dot(graph);
  for (const char* name : {"raw_scale", "raw_shift", "raw_combine", "memcpy_"})
    EXPECT_NE(dot.find(name), std::string::npos) << name << " not in the DOT text";
}

TEST_F(RawCudaGraphImport, PlacementRefusesTheImport) {
  const auto graph = rt::import_raw_cuda_graph(capture_.graph);
  const auto platform = g::Platform::uniform(2, g::DeviceKind::kGpu, {.bandwidth_gbps = 50, .latency_us = 2});
  try {
    (void)g::place(graph, platform);
    FAIL() << "place() accepted a raw CUDA graph";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("raw CUDA graph"), std::string::npos) << e.what();
  }
}

TEST_F(RawCudaGraphImport, NullGraphIsRefused) {
  EXPECT_THROW((void)rt::describe_raw_cuda_graph(nullptr), sg::InvalidArgument);
}
