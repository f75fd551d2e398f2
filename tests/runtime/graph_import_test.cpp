// Importing an annotated capture into a StepGraph: one typed suite,
// instantiated for the host backend (test_runtime_host, label cpu) and the
// cuda backend (test_runtime_cuda, label gpu; skipped with the reason where no
// device is present). The reference is the same step written by hand with the
// StepGraph builder (graph_import_step.h), compared by names: nodes, kinds,
// accesses, edges and edge bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/runtime/graph_import.h>

#include "backend_tags.h"
#include "graph_import_step.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;
namespace g = stepgraph::graphs;
namespace imp = sgtest::import;

namespace {

using AccessKey = std::tuple<std::string, std::uint64_t, std::uint64_t, g::AccessMode>;
using EdgeKey = std::tuple<std::string, std::string, std::uint64_t>;

std::vector<AccessKey> access_keys(const g::StepGraph& graph, const g::Node& n) {
  std::vector<AccessKey> out;
  for (const auto& a : n.accesses) out.emplace_back(graph.buffers()[a.buffer].name, a.offset, a.bytes, a.mode);
  std::sort(out.begin(), out.end());
  return out;
}

std::set<EdgeKey> edge_keys(const g::StepGraph& graph) {
  std::set<EdgeKey> out;
  for (const auto& e : graph.edges()) out.emplace(graph.node(e.src).name, graph.node(e.dst).name, e.bytes);
  return out;
}

/// Same nodes (by name: kind, accesses), same buffers (name, size), same edges
/// with the same bytes; node order may differ.
void expect_same_graph(const g::StepGraph& got, const g::StepGraph& want) {
  EXPECT_EQ(got.origin(), want.origin());
  ASSERT_EQ(got.node_count(), want.node_count());
  for (const auto& w : want.nodes()) {
    SCOPED_TRACE("node '" + w.name + "'");
    const auto id = got.find(w.name);
    ASSERT_TRUE(id.has_value());
    const auto& n = got.node(*id);
    EXPECT_EQ(n.kind, w.kind);
    EXPECT_EQ(access_keys(got, n), access_keys(want, w));
    EXPECT_FALSE(n.pinned_device.has_value());
  }
  std::set<std::pair<std::string, std::uint64_t>> got_buffers, want_buffers;
  for (const auto& b : got.buffers()) got_buffers.emplace(b.name, b.bytes);
  for (const auto& b : want.buffers()) want_buffers.emplace(b.name, b.bytes);
  EXPECT_EQ(got_buffers, want_buffers);
  EXPECT_EQ(edge_keys(got), edge_keys(want));
}

template <class Tag>
class GraphImport : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Tag::kKind == rt::BackendKind::kCuda) {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    }
    be_ = rt::Backend::create(Tag::kKind, {.host_devices = 1, .shuffle_seed = 0x1a2b});
  }
  std::shared_ptr<rt::Backend> be_;
};

using sgtest::Backends;
TYPED_TEST_SUITE(GraphImport, Backends);

}  // namespace

TYPED_TEST(GraphImport, MultiStreamCaptureEqualsTheStepWrittenByHand) {
  imp::Step step(this->be_);
  const auto imported = rt::import_captured_graph(step.graph, {.buffers = step.known()});
  expect_same_graph(imported.graph, imp::reference_graph());
  // IR node i is backend node i.
  const auto info = step.graph.info();
  for (std::size_t i = 0; i < info.nodes.size(); ++i) EXPECT_EQ(imported.graph.nodes()[i].name, info.nodes[i].name);
  EXPECT_NO_THROW(g::validate(imported.graph));
}

TYPED_TEST(GraphImport, BufferMappingRelatesIrAndBackendBuffers) {
  imp::Step step(this->be_);
  const auto imported = rt::import_captured_graph(step.graph, {.buffers = step.known()});
  ASSERT_EQ(imported.graph.buffers().size(), 5u);
  ASSERT_EQ(imported.backend_buffer.size(), 5u);
  const std::vector<std::pair<const rt::Buffer*, std::string>> buffers = {
      {&step.x, "x"}, {&step.y, "y"}, {&step.z, "z"}, {&step.h_in, "h_in"}, {&step.h_out, "h_out"}};
  for (const auto& [buffer, name] : buffers) {
    const auto ir = imported.buffer_of(*buffer);
    EXPECT_EQ(imported.graph.buffers()[ir].name, name);
    EXPECT_EQ(imported.graph.buffers()[ir].bytes, buffer->size());
    EXPECT_EQ(imported.backend_buffer[ir], buffer->id());
    EXPECT_EQ(imported.find_buffer(buffer->id()), ir);
  }
  rt::Buffer unused = this->be_->allocate(0, 64);
  EXPECT_FALSE(imported.find_buffer(unused.id()).has_value());
  EXPECT_THROW((void)imported.buffer_of(unused), sg::InvalidArgument);
}

TYPED_TEST(GraphImport, UnknownBuffersGetDefaultNamesAndTheirLargestExtent) {
  rt::Buffer big = this->be_->allocate(0, 1024);
  rt::Buffer pinned = this->be_->allocate_pinned(512);
  auto s = this->be_->create_stream(0);
  rt::Graph graph;
  {
    rt::CaptureSession session(s);
    // Touches bytes [64, 192) of a 1024-byte buffer, and [0, 128) of a pinned one.
    rt::launch(s, sgtest::fill_f32(), {.name = "partial", .accesses = {rt::write(big, 64, 128)}},
               big.data<float>() + 16, std::size_t{32}, 2.0F);
    s.copy(pinned.slice(0, 128), big.slice(64, 128), "read back");
    graph = session.end();
  }
  const auto imported = rt::import_captured_graph(graph);
  ASSERT_EQ(imported.graph.buffers().size(), 2u);
  const auto& b = imported.graph.buffers()[imported.buffer_of(big)];
  EXPECT_EQ(b.name, "b" + std::to_string(big.id()) + "@dev0");
  EXPECT_EQ(b.bytes, 192u);  // offset 64 + 128 bytes: the largest extent, not the allocation
  const auto& p = imported.graph.buffers()[imported.buffer_of(pinned)];
  EXPECT_EQ(p.name, "b" + std::to_string(pinned.id()) + "@pinned");
  EXPECT_EQ(p.bytes, 128u);
  ASSERT_EQ(imported.graph.edge_count(), 1u);
  EXPECT_EQ(imported.graph.edges()[0].bytes, 128u);
  // Default costs: 1 µs for work on every device kind.
  for (const auto& n : imported.graph.nodes()) {
    EXPECT_EQ(n.cost.get(g::DeviceKind::kGpu), 1.0) << n.name;
    EXPECT_EQ(n.cost.get(g::DeviceKind::kCpu), 1.0) << n.name;
  }
}

TYPED_TEST(GraphImport, CostCallbackSetsEveryNodesCost) {
  imp::Step step(this->be_);
  std::size_t calls = 0;
  const auto imported =
      rt::import_captured_graph(step.graph, {.buffers = step.known(), .cost = [&](const rt::NodeInfo& n) {
                                               ++calls;
                                               // Copies and memsets only on the GPU, by size; kernels anywhere.
                                               if (n.kind == rt::NodeKind::kMemcpy || n.kind == rt::NodeKind::kMemset) {
                                                 g::DeviceCosts c;
                                                 c.set(g::DeviceKind::kGpu, static_cast<double>(n.bytes) / 1000.0);
                                                 return c;
                                               }
                                               return g::DeviceCosts::gpu_cpu(2.0, 20.0);
                                             }});
  EXPECT_EQ(calls, imported.graph.node_count());
  const auto& up = imported.graph.node(*imported.graph.find("upload x"));
  EXPECT_EQ(up.cost.get(g::DeviceKind::kGpu), static_cast<double>(imp::kBytes) / 1000.0);
  EXPECT_FALSE(up.cost.runs_on(g::DeviceKind::kCpu));
  const auto& sum = imported.graph.node(*imported.graph.find("sum"));
  EXPECT_EQ(sum.cost.get(g::DeviceKind::kGpu), 2.0);
  EXPECT_EQ(sum.cost.get(g::DeviceKind::kCpu), 20.0);
}

TYPED_TEST(GraphImport, ImportedCaptureCanBePlaced) {
  imp::Step step(this->be_);
  const auto imported = rt::import_captured_graph(step.graph, {.buffers = step.known()});
  const auto platform = g::Platform::uniform(2, g::DeviceKind::kGpu, {.bandwidth_gbps = 50, .latency_us = 2});
  const auto placement = g::place(imported.graph, platform);
  ASSERT_EQ(placement.nodes.size(), imported.graph.node_count());
  for (const auto& n : placement.nodes) {
    EXPECT_GE(n.device, 0);
    EXPECT_LT(n.device, 2);
    EXPECT_GE(n.finish_us, n.start_us + 1.0 - 1e-9);  // every node costs 1 µs by default
  }
  // "sum" starts after both its predecessors finish.
  const auto& order = placement.nodes;
  const auto id = [&](const char* name) { return *imported.graph.find(name); };
  EXPECT_GE(order[id("sum")].start_us, order[id("axpy lo")].finish_us - 1e-9);
  EXPECT_GE(order[id("sum")].start_us, order[id("fill z")].finish_us - 1e-9);
}

TYPED_TEST(GraphImport, UnorderedWritersImportButFailValidationNamingBoth) {
  rt::Buffer buf = this->be_->allocate(0, 256);
  auto s0 = this->be_->create_stream(0);
  auto s1 = this->be_->create_stream(0);
  auto fork = this->be_->create_event(0);
  auto join = this->be_->create_event(0);
  rt::Graph graph;
  {
    rt::CaptureSession session(s0);
    s0.record(fork);
    s1.wait(fork);
    // Two streams write overlapping bytes with nothing ordering them: a race.
    rt::launch(s0, sgtest::fill_f32(), {.name = "writer a", .accesses = {rt::write(buf, 0, 128)}}, buf.data<float>(),
               std::size_t{32}, 1.0F);
    rt::launch(s1, sgtest::fill_f32(), {.name = "writer b", .accesses = {rt::write(buf, 64, 128)}},
               buf.data<float>() + 16, std::size_t{32}, 2.0F);
    s1.record(join);
    s0.wait(join);
    graph = session.end();
  }
  const auto imported = rt::import_captured_graph(graph);
  EXPECT_EQ(imported.graph.edge_count(), 0u);
  try {
    g::validate(imported.graph);
    FAIL() << "validate accepted two unordered writers";
  } catch (const sg::InvalidArgument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("writer a"), std::string::npos) << what;
    EXPECT_NE(what.find("writer b"), std::string::npos) << what;
  }
}

TYPED_TEST(GraphImport, ChildGraphBecomesAKernelNodeWithTheAccessesIntrospectionReports) {
  rt::Buffer buf = this->be_->allocate(0, 256);
  auto s = this->be_->create_stream(0);
  rt::Graph inner;
  {
    rt::CaptureSession session(s);
    rt::launch(s, sgtest::fill_f32(), {.name = "inner fill", .accesses = {rt::write(buf, 0, 128)}}, buf.data<float>(),
               std::size_t{32}, 1.0F);
    inner = session.end();
  }
  auto exec = inner.instantiate();
  rt::Graph outer;
  {
    rt::CaptureSession session(s);
    exec.launch(s);
    rt::launch(s, sgtest::fill_f32(), {.name = "after", .accesses = {rt::write(buf, 128, 128)}}, buf.data<float>() + 32,
               std::size_t{32}, 2.0F);
    outer = session.end();
  }
  const auto info = outer.info();
  ASSERT_EQ(info.nodes.size(), 2u);
  ASSERT_EQ(info.nodes[0].kind, rt::NodeKind::kOther);
  const auto imported = rt::import_captured_graph(outer);
  const auto& child = imported.graph.node(0);
  EXPECT_EQ(child.name, info.nodes[0].name);
  EXPECT_EQ(child.kind, g::NodeKind::kKernel);
  // The child node carries what introspection reports for it: on both
  // backends a node called "graph_launch" with the children's accesses (the
  // write of [0, 128)).
  EXPECT_EQ(info.nodes[0].name, "graph_launch");
  ASSERT_EQ(child.accesses.size(), info.nodes[0].accesses.size());
  for (std::size_t i = 0; i < child.accesses.size(); ++i) {
    EXPECT_EQ(child.accesses[i].offset, info.nodes[0].accesses[i].offset);
    EXPECT_EQ(child.accesses[i].bytes, info.nodes[0].accesses[i].bytes);
    EXPECT_EQ(child.accesses[i].mode, g::AccessMode::kWrite);
  }
  EXPECT_EQ(child.accesses.size(), 1u);
  ASSERT_EQ(imported.graph.edge_count(), 1u);
  EXPECT_EQ(imported.graph.edges()[0].src, 0u);
  EXPECT_EQ(imported.graph.edges()[0].dst, 1u);
  EXPECT_NO_THROW(g::validate(imported.graph));
}
