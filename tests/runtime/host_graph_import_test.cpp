// Graph import on the CPU (test_runtime_host, label cpu): the raw CUDA graph
// description -> StepGraph conversion (what describe_raw_cuda_graph gives is
// written here by hand), its refusal by place() and lower(), malformed
// descriptions and GraphInfos, and an imported host capture lowered onto two
// host devices, whose results must equal the original capture replayed and
// the values computed on the CPU.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/graphs/platform.h>
#include <stepgraph/runtime/graph_import.h>
#include <stepgraph/runtime/lowering.h>

#include "expect_throw.h"
#include "graph_import_step.h"
#include "lowering_harness.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;
namespace g = stepgraph::graphs;
namespace imp = sgtest::import;

namespace {

/// What a raw capture of "upload; fork; scale | shift; join; combine" looks
/// like to describe_raw_cuda_graph, plus a child graph after it and one node
/// of each opaque type.
rt::RawGraphDescription raw_step() {
  rt::RawGraphDescription d;
  using T = rt::RawNodeType;
  d.nodes = {
      {T::kMemcpy, "", 4096, 0},                                             // 0
      {T::kKernel, "raw_scale(float*, unsigned long, float)", 0, 0},         // 1
      {T::kKernel, "raw_shift(float*, float const*, unsigned long)", 0, 0},  // 2
      {T::kKernel, "", 0, 0},                                                // 3: a kernel CUDA could not name
      {T::kChildGraph, "", 0, 3},                                            // 4
      {T::kMemset, "", 1024, 0},                                             // 5
      {T::kConditional, "", 0, 0},                                           // 6
      {T::kEventRecord, "", 0, 0},                                           // 7
  };
  d.edges = {{0, 1}, {0, 2}, {1, 3}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 7}};
  return d;
}

}  // namespace

// ------------------------------------------------------------------ raw descriptions

TEST(RawGraphImport, DescriptionBecomesANamedGraphWithoutBuffers) {
  const auto graph = rt::step_graph_from_raw(raw_step());
  EXPECT_EQ(graph.origin(), g::GraphOrigin::kRawCudaGraph);
  EXPECT_TRUE(graph.buffers().empty());
  const std::vector<std::pair<std::string, g::NodeKind>> want = {
      {"memcpy_0 (4096 B)", g::NodeKind::kMemcpy},
      {"raw_scale(float*, unsigned long, float)", g::NodeKind::kKernel},
      {"raw_shift(float*, float const*, unsigned long)", g::NodeKind::kKernel},
      {"kernel_3", g::NodeKind::kKernel},
      {"child_graph_4 (3 nodes)", g::NodeKind::kEmpty},
      {"memset_5 (1024 B)", g::NodeKind::kMemset},
      {"conditional_6", g::NodeKind::kEmpty},
      {"event_record_7", g::NodeKind::kEventRecord},
  };
  ASSERT_EQ(graph.node_count(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const auto& n = graph.nodes()[i];
    EXPECT_EQ(n.name, want[i].first);
    EXPECT_EQ(n.kind, want[i].second) << n.name;
    EXPECT_TRUE(n.accesses.empty());
    EXPECT_TRUE(n.cost.empty()) << "a raw node has no cost estimate";
  }
  std::set<std::pair<g::NodeId, g::NodeId>> edges;
  for (const auto& e : graph.edges()) {
    EXPECT_EQ(e.bytes, 0u);
    edges.emplace(e.src, e.dst);
  }
  EXPECT_EQ(edges, (std::set<std::pair<g::NodeId, g::NodeId>>{
                       {0, 1}, {0, 2}, {1, 3}, {2, 3}, {3, 4}, {4, 5}, {5, 6}, {6, 7}}));
  EXPECT_NO_THROW(g::validate(graph));
  const auto dot = g::to_dot(graph);
  EXPECT_NE(dot.find("raw_scale"), std::string::npos);
  EXPECT_NE(dot.find("child_graph_4 (3 nodes)"), std::string::npos);
}

TEST(RawGraphImport, EveryNodeTypeMapsToItsDocumentedKind) {
  using T = rt::RawNodeType;
  using K = g::NodeKind;
  const std::vector<std::pair<T, K>> table = {
      {T::kKernel, K::kKernel},
      {T::kMemcpy, K::kMemcpy},
      {T::kMemset, K::kMemset},
      {T::kHost, K::kHost},
      {T::kChildGraph, K::kEmpty},
      {T::kEmpty, K::kEmpty},
      {T::kEventWait, K::kEventWait},
      {T::kEventRecord, K::kEventRecord},
      {T::kSemaphoreSignal, K::kEventRecord},
      {T::kSemaphoreWait, K::kEventWait},
      {T::kMemAlloc, K::kEmpty},
      {T::kMemFree, K::kEmpty},
      {T::kConditional, K::kEmpty},
      {T::kUnknown, K::kEmpty},
  };
  std::set<std::string> names;
  for (const auto& [type, kind] : table) {
    EXPECT_EQ(rt::to_graph_kind(type), kind) << rt::to_string(type);
    names.emplace(rt::to_string(type));
  }
  EXPECT_EQ(names.size(), table.size()) << "every type prints a name of its own";
}

TEST(RawGraphImport, PlacementRefusesARawGraphSayingWhy) {
  const auto graph = rt::step_graph_from_raw(raw_step());
  const auto platform = g::Platform::uniform(2, g::DeviceKind::kGpu, {.bandwidth_gbps = 50, .latency_us = 2});
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)g::place(graph, platform); },
                                                 {"raw CUDA graph", "declares no buffers", "cannot be placed"});
}

TEST(RawGraphImport, LoweringRefusesARawGraphSayingWhy) {
  const auto graph = rt::step_graph_from_raw(raw_step());
  auto be = rt::Backend::create(rt::BackendKind::kHost, {.host_devices = 1});
  g::Placement placement;
  placement.nodes.resize(graph.node_count());
  placement.device_order = {{}};
  for (g::NodeId n = 0; n < graph.node_count(); ++n) placement.device_order[0].push_back(n);
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(graph, placement, be, rt::DeviceMap::identity(1), [](const rt::NodeLaunch&) {}); },
      {"raw CUDA graph carries no buffers", "cannot be placed or lowered"});
}

TEST(RawGraphImport, EdgeToAMissingNodeIsNamed) {
  auto d = raw_step();
  d.edges.emplace_back(2, 8);
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::step_graph_from_raw(d); },
                                                 {"edge #8 (2 -> 8)", "node 8 which does not exist", "8 nodes"});
  d.edges.back() = {11, 0};
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::step_graph_from_raw(d); },
                                                 {"edge #8 (11 -> 0)", "node 11 which does not exist"});
}

TEST(RawGraphImport, SelfEdgeIsNamed) {
  auto d = raw_step();
  d.edges.emplace_back(3, 3);
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::step_graph_from_raw(d); },
                                                 {"edge #8", "node 3 ('kernel_3') to itself"});
}

TEST(RawGraphImport, CycleIsRefusedListingItsNodes) {
  auto d = raw_step();
  d.edges.emplace_back(3, 0);  // 0 -> 1 -> 3 -> 0
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::step_graph_from_raw(d); },
                                                 {"cycle", "memcpy_0 (4096 B)", "kernel_3"});
}

TEST(RawGraphImport, EmptyDescriptionIsAnEmptyGraph) {
  const auto graph = rt::step_graph_from_raw({});
  EXPECT_EQ(graph.node_count(), 0u);
  EXPECT_EQ(graph.origin(), g::GraphOrigin::kRawCudaGraph);
}

TEST(RawGraphImport, ReadingARawGraphNeedsCudaAndAGraph) {
  if (rt::Backend::cuda_compiled()) {
    // The null check comes before any CUDA call, so this runs without a device.
    sgtest::expect_throw_with<sg::InvalidArgument>([] { (void)rt::describe_raw_cuda_graph(nullptr); },
                                                   {"the graph is null"});
  } else {
    int not_a_graph = 0;
    sgtest::expect_throw_with<sg::InvalidState>([&] { (void)rt::import_raw_cuda_graph(&not_a_graph); },
                                                {"no CUDA support", "STEPGRAPH_WITH_CUDA=ON"});
  }
}

// ------------------------------------------------------------------ malformed GraphInfo

TEST(CapturedGraphImport, GraphInfoEdgeToAMissingNodeIsNamed) {
  rt::GraphInfo info;
  info.nodes.resize(2);
  info.nodes[0].name = "a";
  info.nodes[1].name = "b";
  info.edges = {{0, 1}, {1, 5}};
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::import_graph_info(info); },
                                                 {"edge #1 (1 -> 5)", "node 5 which does not exist", "2 nodes"});
  info.edges = {{1, 1}};
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::import_graph_info(info); },
                                                 {"node 1 ('b') to itself"});
}

TEST(CapturedGraphImport, KnownBufferListedTwiceOrTooSmallIsRefused) {
  rt::GraphInfo info;
  info.nodes.resize(1);
  info.nodes[0].name = "k";
  info.nodes[0].kind = rt::NodeKind::kKernel;
  info.nodes[0].accesses = {rt::AccessInfo{7, 0, rt::MemoryKind::kDevice, 0, 512, rt::Access::kWrite}};
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] {
        (void)rt::import_graph_info(info, {.buffers = {{7, "w", 512}, {7, "w2", 512}}});
      },
      {"#7 is listed twice"});
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] {
        (void)rt::import_graph_info(info, {.buffers = {{7, "w", 256}}});
      },
      {"node 'k'", "outside buffer 'w' of 256 bytes"});
  const auto ok = rt::import_graph_info(info, {.buffers = {{7, "w", 4096}, {99, "unused", 8}}});
  ASSERT_EQ(ok.graph.buffers().size(), 1u) << "buffers the graph does not touch get no IR buffer";
  EXPECT_EQ(ok.graph.buffers()[0].name, "w");
  EXPECT_EQ(ok.graph.buffers()[0].bytes, 4096u);
}

TEST(CapturedGraphImport, EmptyGraphHandleIsRefused) {
  const rt::Graph empty;
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { (void)rt::import_captured_graph(empty); },
                                                 {"Graph handle is empty"});
}

// ------------------------------------------------------------------ lowering an imported capture

namespace {

/// Re-emits each node of the imported step by its name, on the resolved
/// instances (the real work of the original launch).
rt::NodeEmitter step_emitter() {
  return [](const rt::NodeLaunch& n) {
    const auto& name = n.ir->name;
    auto by_mode = [&](g::AccessMode mode) -> const rt::ResolvedAccess& {
      for (const auto& a : n.accesses)
        if (a.mode == mode) return a;
      throw sg::InvalidArgument("step emitter: node '" + name + "' has no access of that mode");
    };
    auto slice = [](const rt::ResolvedAccess& a) { return a.instance->slice(a.offset, a.bytes); };
    if (name == "zero y") {
      n.stream.memset(slice(by_mode(g::AccessMode::kWrite)), 0, name);
    } else if (name == "upload x" || name == "download y") {
      n.stream.copy(slice(by_mode(g::AccessMode::kWrite)), slice(by_mode(g::AccessMode::kRead)), name);
    } else if (name == "fill z") {
      const auto& z = by_mode(g::AccessMode::kWrite);
      rt::launch(n.stream, sgtest::fill_f32(), {.name = name, .accesses = n.declarations()}, z.data<float>(),
                 z.bytes / sizeof(float), 1.5F);
    } else {
      const auto& y = by_mode(g::AccessMode::kReadWrite);
      const auto& x = by_mode(g::AccessMode::kRead);
      const float a = name == "axpy lo" ? 2.0F : name == "axpy hi" ? 3.0F : 1.0F;
      rt::launch(n.stream, sgtest::axpy_f32(), {.name = name, .accesses = n.declarations()}, y.data<float>(),
                 static_cast<const float*>(x.data<float>()), y.bytes / sizeof(float), a);
    }
  };
}

std::vector<float> as_floats(const std::vector<std::byte>& bytes) {
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

}  // namespace

TEST(CapturedGraphImport, ImportedStepLoweredOnTwoDevicesEqualsTheCaptureReplayed) {
  // The original capture, replayed on its own backend.
  imp::Step step(rt::Backend::create(rt::BackendKind::kHost, {.host_devices = 1, .shuffle_seed = 3}));
  auto exec = step.graph.instantiate();
  exec.launch(step.s0);
  step.s0.synchronize();
  const auto out = step.h_out.host_span<float>();
  const std::vector<float> replayed(out.begin(), out.end());
  for (std::size_t i = 0; i < imp::kN; ++i) ASSERT_EQ(replayed[i], imp::expected_y(i)) << "index " << i;

  // The import, placed by hand so that "axpy hi" and "fill z" run on the
  // second device, lowered onto two host devices with isolated memory.
  const auto imported = rt::import_captured_graph(step.graph, {.buffers = step.known()});
  const auto& graph = imported.graph;
  const auto platform = sgtest::lowering::cpu_platform(2);
  const g::CostModel model(platform);
  std::vector<int> device_of(graph.node_count(), 0);
  device_of[*graph.find("axpy hi")] = 1;
  device_of[*graph.find("fill z")] = 1;
  const auto placement = g::schedule_assignment(graph, model, device_of);
  auto be = rt::Backend::create(rt::BackendKind::kHost, {.host_devices = 2, .shuffle_seed = 4});
  auto lowered = rt::lower(graph, placement, be, rt::DeviceMap::identity(2), step_emitter());
  EXPECT_GT(lowered.copies().size(), 0u) << "x must reach device 1, and y[hi] and z come back";
  EXPECT_GT(lowered.event_waits(), 0u);

  const auto h_in = imported.buffer_of(step.h_in);
  const auto in = step.h_in.host_span<const float>();
  lowered.upload(h_in, std::as_bytes(std::span(in.data(), in.size())));
  lowered.fill(imported.buffer_of(step.h_out), 0);
  for (int run = 0; run < 2; ++run) {
    lowered.run();
    EXPECT_EQ(as_floats(lowered.read(imported.buffer_of(step.h_out))), replayed) << "run " << run;
    EXPECT_EQ(as_floats(lowered.read(imported.buffer_of(step.y))), replayed) << "run " << run;
  }
}
