// JSON round trip, schema errors and DOT export.
#include <gtest/gtest.h>

#include <filesystem>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/io.h>

namespace sg = stepgraph::graphs;
using stepgraph::InvalidArgument;

namespace {
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

sg::StepGraph sample() {
  sg::StepGraph g(sg::GraphOrigin::kAnnotatedCapture);
  auto x = g.add_buffer("x", 4096);
  auto a = g.add_kernel("fill", sg::DeviceCosts::gpu_cpu(3.5, 40), {{x, 0, 4096, sg::AccessMode::kWrite}});
  sg::NodeSpec s;
  s.name = "copy";
  s.kind = sg::NodeKind::kMemcpy;
  s.cost.set(sg::DeviceKind::kGpu, 1.25);
  s.accesses = {{x, 1024, 1024, sg::AccessMode::kRead}};
  s.pinned_device = 1;
  auto b = g.add_node(s);
  auto c = g.add_collective("ar", {sg::CollectiveOp::kAllReduce, 4096}, {{x, 0, 4096, sg::AccessMode::kReadWrite}});
  g.connect(a, b);
  g.connect(b, c, 0);
  g.connect(a, c, 77);
  return g;
}
}  // namespace

TEST(GraphJson, RoundTripKeepsEveryField) {
  const auto g = sample();
  const auto back = sg::from_json(sg::to_json(g));
  EXPECT_EQ(back.origin(), sg::GraphOrigin::kAnnotatedCapture);
  ASSERT_EQ(back.node_count(), 3u);
  ASSERT_EQ(back.buffers().size(), 1u);
  EXPECT_EQ(back.buffers()[0].name, "x");
  const auto& copy = back.node(1);
  EXPECT_EQ(copy.name, "copy");
  EXPECT_EQ(copy.kind, sg::NodeKind::kMemcpy);
  EXPECT_EQ(copy.cost.get(sg::DeviceKind::kGpu), 1.25);
  EXPECT_FALSE(copy.cost.runs_on(sg::DeviceKind::kCpu));
  EXPECT_EQ(copy.pinned_device, 1);
  ASSERT_EQ(copy.accesses.size(), 1u);
  EXPECT_EQ(copy.accesses[0].offset, 1024u);
  EXPECT_EQ(copy.accesses[0].mode, sg::AccessMode::kRead);
  EXPECT_EQ(back.node(2).collective->bytes, 4096u);
  ASSERT_EQ(back.edge_count(), 3u);
  EXPECT_EQ(back.edges()[0].bytes, 1024u);  // derived from the overlap
  EXPECT_EQ(back.edges()[2].bytes, 77u);
  EXPECT_EQ(sg::to_json(back), sg::to_json(g));
}

TEST(GraphJson, RejectsOtherSchemaVersionNamingTheField) {
  auto msg = error_of([] { (void)sg::from_json(R"({"schema":"stepgraph.graph","version":2,"nodes":[],"edges":[]})"); });
  EXPECT_NE(msg.find("version"), std::string::npos) << msg;
  msg = error_of([] { (void)sg::from_json(R"({"schema":"other","version":1,"nodes":[],"edges":[]})"); });
  EXPECT_NE(msg.find("schema"), std::string::npos) << msg;
  EXPECT_THROW((void)sg::from_json("{not json"), InvalidArgument);
}

TEST(GraphJson, RejectsUnknownKindAndNegativeCostNamingThePath) {
  auto msg = error_of([] {
    (void)sg::from_json(R"({"schema":"stepgraph.graph","version":1,"nodes":[{"name":"a","kind":"warp"}],"edges":[]})");
  });
  EXPECT_NE(msg.find("nodes[0].kind"), std::string::npos) << msg;
  EXPECT_NE(msg.find("warp"), std::string::npos) << msg;
  msg = error_of([] {
    (void)sg::from_json(
        R"({"schema":"stepgraph.graph","version":1,"nodes":[{"name":"a","kind":"kernel","cost_us":{"gpu":-3}}],"edges":[]})");
  });
  EXPECT_NE(msg.find("nodes[0].cost_us.gpu"), std::string::npos) << msg;
  msg = error_of([] {
    (void)sg::from_json(
        R"({"schema":"stepgraph.graph","version":1,"nodes":[{"name":"a","kind":"kernel","cost_us":{"tpu":3}}],"edges":[]})");
  });
  EXPECT_NE(msg.find("tpu"), std::string::npos) << msg;
  msg = error_of([] { (void)sg::from_json(R"({"schema":"stepgraph.graph","version":1,"edges":[]})"); });
  EXPECT_NE(msg.find("nodes"), std::string::npos) << msg;
}

TEST(GraphJson, RejectsANumberBeyondADoubleAsInvalidArgument) {
  // nlohmann::json throws out_of_range (not parse_error) for 43183531e308;
  // it escaped load_json untyped. Found by fuzz/fuzz_graph_json.
  const auto file = std::filesystem::path(STEPGRAPH_TEST_DATA_DIR) / "fuzz_regressions" / "number-beyond-double.json";
  const auto msg = error_of([&] { (void)sg::load_json(file); });
  EXPECT_NE(msg.find("does not parse"), std::string::npos) << msg;
  EXPECT_NE(msg.find("number overflow"), std::string::npos) << msg;
}

TEST(GraphJson, ImportsDanglingEdgeForValidateToReport) {
  auto g = sg::from_json(
      R"({"schema":"stepgraph.graph","version":1,"nodes":[{"name":"a","kind":"empty"}],"edges":[{"src":0,"dst":3}]})");
  EXPECT_THROW(sg::validate(g), InvalidArgument);
}

TEST(GraphDot, ListsEveryNodeAndEdgeWithBytes) {
  const auto dot = sg::to_dot(sample());
  EXPECT_EQ(dot.rfind("digraph", 0), 0u);
  EXPECT_NE(dot.find("n0 [label=\"fill\\nkernel\"]"), std::string::npos) << dot;
  EXPECT_NE(dot.find("n0 -> n1 [label=\"1024B\"]"), std::string::npos) << dot;
  EXPECT_NE(dot.find("n1 -> n2;"), std::string::npos) << dot;
  EXPECT_NE(dot.find("hexagon"), std::string::npos) << dot;
}
