// Lowering on the host backend (label cpu): a placed StepGraph, lowered onto
// 2-4 host devices whose memory is isolated, gives every buffer bit for bit
// what the single-device lowering gives; a copy left out makes the backend
// refuse the launch, or (given the stale local instance) the results differ.
// The reference is the single-device run of the same graph on its own
// backend, and for the hand-built cases hand-counted copies and waits.
#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/graphs/workloads.h>
#include <stepgraph/runtime/lowering.h>

#include "expect_throw.h"
#include "lowering_harness.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;
namespace g = stepgraph::graphs;
namespace lw = sgtest::lowering;

namespace {

std::shared_ptr<rt::Backend> host_backend(int devices, std::uint64_t seed) {
  rt::BackendOptions o;
  o.host_devices = devices;
  o.shuffle_seed = seed;
  return rt::Backend::create(rt::BackendKind::kHost, o);
}

std::size_t input_copies(const rt::LoweredGraph& l) {
  std::size_t n = 0;
  for (const auto& c : l.copies()) n += c.reason == rt::CopyReason::kInput ? 1 : 0;
  return n;
}

/// Lowers `graph` placed by `algorithm` on `devices` host devices, runs it
/// `runs` times and compares every buffer with the single-device run.
void expect_equal_to_single_device(const g::StepGraph& graph, int devices, g::Algorithm algorithm, std::uint64_t seed,
                                   int runs, const rt::LoweringOptions& options = {}) {
  SCOPED_TRACE(
      "devices=" + std::to_string(devices) + " algorithm=" + std::string(g::to_string(algorithm)) + " seed=" +
      std::to_string(seed) + (options.homes == rt::HomePolicy::kFirstUse ? " homes=first-use" : " homes=last-writer") +
      (options.copy_streams == rt::CopyStreams::kConsumerStream ? " copies=consumer-stream" : " copies=per-pair"));
  const auto placement = lw::place(graph, lw::cpu_platform(devices), algorithm);
  ASSERT_GE(lw::devices_used(graph, placement), 2) << "the placement must really spread the graph";
  auto be = host_backend(devices, seed);
  auto lowered = rt::lower(graph, placement, be, rt::DeviceMap::identity(devices), lw::mix_emitter(), options);
  EXPECT_GT(input_copies(lowered), 0u);
  EXPECT_GT(lowered.event_waits(), 0u);
  std::size_t bytes = 0;
  for (const auto& st : lowered.device_stats()) bytes += st.bytes_in;
  std::cout << "[ lowering ] " << graph.node_count() << " nodes, " << devices << " devices, " << g::to_string(algorithm)
            << (options.homes == rt::HomePolicy::kFirstUse ? ", first-use homes" : ", last-writer homes")
            << (options.copy_streams == rt::CopyStreams::kConsumerStream ? ", copies on the consumer's stream"
                                                                         : ", per-pair copy streams")
            << ": " << lowered.copies().size() << " copies (" << input_copies(lowered) << " inputs), " << bytes
            << " bytes, " << lowered.event_waits() << " cross-stream waits, " << lowered.copy_stream_count()
            << " copy streams, " << lowered.info().nodes.size() << " backend nodes\n";
  const auto got = lw::run_and_read(lowered, graph, runs);
  const auto want = lw::reference(graph, runs, options);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t b = 0; b < got.size(); ++b)
    EXPECT_TRUE(got[b] == want[b]) << "buffer '" << graph.buffers()[b].name << "' differs from the single-device run";
}

/// Two kernels on two devices: A (L0) writes x, B (L1) reads x and writes y.
struct TwoNodes {
  g::StepGraph graph;
  g::BufferId x = 0, y = 0;
  g::NodeId a = 0, b = 0;
  g::Placement placement;

  explicit TwoNodes(std::uint64_t read_bytes = 256) {
    x = graph.add_buffer("x", 256);
    y = graph.add_buffer("y", 256);
    a = graph.add_kernel("A", g::DeviceCosts::uniform(10), {{x, 0, 256, g::AccessMode::kWrite}});
    b = graph.add_kernel("B", g::DeviceCosts::uniform(10),
                         {{x, 0, read_bytes, g::AccessMode::kRead}, {y, 0, 256, g::AccessMode::kWrite}});
    graph.connect(a, b);
    const auto platform = lw::cpu_platform(2);  // CostModel keeps a reference
    const g::CostModel model(platform);
    placement = g::schedule_assignment(graph, model, {0, 1});
  }
};

}  // namespace

// ------------------------------------------------------------------ equal to the single-device run

TEST(Lowering, RandomDagsEqualTheSingleDeviceRunBitForBit) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const g::RandomDagSpec spec{.nodes = 40, .shape = 1.0, .out_degree = 3, .ccr = 0.5, .seed = seed};
    const auto graph = lw::with_dataflow(g::make_random_dag(spec));
    for (int devices : {2, 3, 4})
      for (auto algorithm : {g::Algorithm::kHeft, g::Algorithm::kRoundRobin})
        for (auto homes : {rt::HomePolicy::kLastWriter, rt::HomePolicy::kFirstUse})
          for (auto copies : {rt::CopyStreams::kPerDevicePair, rt::CopyStreams::kConsumerStream})
            expect_equal_to_single_device(graph, devices, algorithm, 0x5eed + seed, 2,
                                          {.copy_streams = copies, .homes = homes});
  }
}

TEST(Lowering, WideRandomDagUnderSeveralShuffleSeedsEqualsTheSingleDeviceRun) {
  const g::RandomDagSpec spec{.nodes = 100, .shape = 2.0, .out_degree = 5, .ccr = 0.1, .seed = 7};
  const auto graph = lw::with_dataflow(g::make_random_dag(spec), 8);
  for (std::uint64_t shuffle : {11u, 12u, 13u}) {
    expect_equal_to_single_device(graph, 4, g::Algorithm::kHeft, shuffle, 1);
    expect_equal_to_single_device(graph, 4, g::Algorithm::kHeft, shuffle, 1,
                                  {.copy_streams = rt::CopyStreams::kConsumerStream});
  }
}

TEST(Lowering, ForkJoinEqualsTheSingleDeviceRunBitForBit) {
  g::ForkJoinSpec spec;
  spec.stages = 3;
  spec.width = 6;
  spec.bytes = 1024;
  const auto graph = lw::with_dataflow(g::make_fork_join(spec));
  for (int devices : {2, 3, 4}) {
    expect_equal_to_single_device(graph, devices, g::Algorithm::kHeft, 99, 3);
    expect_equal_to_single_device(graph, devices, g::Algorithm::kRoundRobin, 98, 3,
                                  {.homes = rt::HomePolicy::kFirstUse});
  }
}

TEST(Lowering, TransformerStepEqualsTheSingleDeviceRunBitForBit) {
  g::TransformerSpec spec;
  spec.layers = 3;
  spec.hidden = 8;
  spec.seq = 4;
  spec.batch = 1;
  spec.bytes_per_element = 8;  // whole uint64 words for the mix kernels
  const auto graph = g::make_transformer(spec);
  rt::LoweringOptions o;
  o.collectives = rt::CollectiveLowering::kOnLogicalDeviceZero;
  // Two steps: the second reads the weights the first updated, wherever the
  // optimizer ran (they were written back to their homes).
  for (int devices : {2, 4}) expect_equal_to_single_device(graph, devices, g::Algorithm::kRoundRobin, 5, 2, o);
  expect_equal_to_single_device(graph, 3, g::Algorithm::kHeft, 6, 2, o);
  o.homes = rt::HomePolicy::kFirstUse;
  expect_equal_to_single_device(graph, 3, g::Algorithm::kRoundRobin, 7, 2, o);
}

TEST(Lowering, LeaveInPlaceReadsEachRangeWhereItsLatestVersionLives) {
  const g::RandomDagSpec spec{.nodes = 30, .ccr = 0.5, .seed = 4};
  const auto graph = lw::with_dataflow(g::make_random_dag(spec));
  rt::LoweringOptions o;
  o.homes = rt::HomePolicy::kFirstUse;
  o.final_copies = rt::FinalCopies::kLeaveInPlace;
  const auto placement = lw::place(graph, lw::cpu_platform(3), g::Algorithm::kRoundRobin);
  auto lowered = rt::lower(graph, placement, host_backend(3, 21), rt::DeviceMap::identity(3), lw::mix_emitter(), o);
  for (const auto& c : lowered.copies()) EXPECT_EQ(c.reason, rt::CopyReason::kInput);
  const auto got = lw::run_and_read(lowered, graph, 1);
  const auto want = lw::reference(graph, 1);
  for (std::size_t b = 0; b < got.size(); ++b) EXPECT_TRUE(got[b] == want[b]) << graph.buffers()[b].name;
}

TEST(Lowering, TwoLogicalDevicesOnOneHostDeviceKeepSeparateInstances) {
  g::ForkJoinSpec spec;
  spec.stages = 2;
  spec.width = 4;
  const auto graph = lw::with_dataflow(g::make_fork_join(spec));
  const auto placement = lw::place(graph, lw::cpu_platform(2), g::Algorithm::kRoundRobin);
  auto lowered = rt::lower(graph, placement, host_backend(1, 31), rt::DeviceMap::shared(2, 0), lw::mix_emitter());
  ASSERT_NE(lowered.instance(0, 0), nullptr);
  ASSERT_NE(lowered.instance(1, 0), nullptr);
  EXPECT_NE(lowered.instance(0, 0)->data(), lowered.instance(1, 0)->data());
  EXPECT_EQ(lowered.instance(0, 0)->device(), 0);
  EXPECT_EQ(lowered.instance(1, 0)->device(), 0);
  EXPECT_NE(lowered.stream(0), lowered.stream(1));
  const auto info = lowered.info();
  for (const auto& n : info.nodes)
    if (n.kind == rt::NodeKind::kMemcpy) {
      EXPECT_EQ(n.copy_kind, rt::CopyKind::kDeviceToDevice) << n.name;
    }
  EXPECT_GT(info.count(rt::NodeKind::kMemcpy), 0u);
  const auto got = lw::run_and_read(lowered, graph, 2);
  const auto want = lw::reference(graph, 2);
  for (std::size_t b = 0; b < got.size(); ++b) EXPECT_TRUE(got[b] == want[b]) << graph.buffers()[b].name;
}

// ------------------------------------------------------------------ what is inserted where

TEST(Lowering, OneCopyAndItsWaitsWhereDataCrossesDevices) {
  TwoNodes t;
  auto lowered = rt::lower(t.graph, t.placement, host_backend(2, 1), rt::DeviceMap::identity(2), lw::mix_emitter());
  ASSERT_EQ(lowered.copies().size(), 1u) << "x into B's device; nothing to write back";
  EXPECT_EQ(lowered.copy_stream_count(), 1u) << "one pair exchanges data: L0 -> L1";
  const auto& in = lowered.copies()[0];
  EXPECT_EQ(in.buffer, t.x);
  EXPECT_EQ(in.src_logical, 0);
  EXPECT_EQ(in.dst_logical, 1);
  EXPECT_EQ(in.bytes, 256u);
  EXPECT_EQ(in.before_node, t.b);
  EXPECT_EQ(in.reason, rt::CopyReason::kInput);
  // x's home is device 0, where it was last written; y's is device 1 (B
  // touches it first), where it was last written: no write-back.
  ASSERT_EQ(lowered.homes(t.x).size(), 1u);
  EXPECT_EQ(lowered.homes(t.x)[0].logical, 0);
  ASSERT_EQ(lowered.homes(t.y).size(), 1u);
  EXPECT_EQ(lowered.homes(t.y)[0].logical, 1);
  EXPECT_EQ(lowered.instance(0, t.y), nullptr) << "device 0 never touches y";
  EXPECT_EQ(lowered.event_waits(), 2u)
      << "the copy stream waits for A, B's stream for the copy; that implies B's edge from A";
  EXPECT_EQ(lowered.device_stats()[1].copies_in, 1u);
  EXPECT_EQ(lowered.device_stats()[1].event_waits, 2u);
  EXPECT_EQ(lowered.device_stats()[0].nodes, 1u);
  EXPECT_EQ(lowered.device_stats()[1].nodes, 1u);
  const auto info = lowered.info();
  EXPECT_EQ(info.count(rt::NodeKind::kMemcpy), 1u);
  const auto copy = info.find("copy x[0:+256] L0->L1 for B");
  EXPECT_EQ(info.nodes[copy].copy_kind, rt::CopyKind::kPeer);
  EXPECT_TRUE(info.reaches(info.find("A/w0/seed"), copy));
  EXPECT_TRUE(info.reaches(copy, info.find("B/w0/in0")));
  EXPECT_EQ(info.nodes[info.find("B/w0/in0")].device, 1);

  // On B's own stream the copy and the edge share one wait.
  auto on_stream = rt::lower(t.graph, t.placement, host_backend(2, 1), rt::DeviceMap::identity(2), lw::mix_emitter(),
                             {.copy_streams = rt::CopyStreams::kConsumerStream});
  ASSERT_EQ(on_stream.copies().size(), 1u);
  EXPECT_EQ(on_stream.copy_stream_count(), 0u);
  EXPECT_EQ(on_stream.event_waits(), 1u) << "B waits for A once: the copy and the edge share the wait";
  EXPECT_EQ(on_stream.device_stats()[1].event_waits, 1u);
  const auto info2 = on_stream.info();
  const auto copy2 = info2.find("copy x[0:+256] L0->L1 for B");
  EXPECT_TRUE(info2.reaches(info2.find("A/w0/seed"), copy2));
  EXPECT_TRUE(info2.reaches(copy2, info2.find("B/w0/in0")));
}

TEST(Lowering, ACopyWaitsForItsWriterNotForTheReadersEarlierWork) {
  // A (L0) writes x; on L1, D runs first (it touches nothing of A's), then
  // B reads x. On the pair's copy stream the copy of x depends on A alone,
  // so it can run while D does (a copy engine beside the SMs; the
  // simulator's transfer starts when A finishes). On B's own stream it
  // also waits for D.
  g::StepGraph graph;
  const auto x = graph.add_buffer("x", 256);
  const auto y = graph.add_buffer("y", 256);
  const auto z = graph.add_buffer("z", 256);
  const auto a = graph.add_kernel("A", g::DeviceCosts::uniform(10), {{x, 0, 256, g::AccessMode::kWrite}});
  const auto d = graph.add_kernel("D", g::DeviceCosts::uniform(100), {{z, 0, 256, g::AccessMode::kWrite}});
  const auto b = graph.add_kernel("B", g::DeviceCosts::uniform(10),
                                  {{x, 0, 256, g::AccessMode::kRead}, {y, 0, 256, g::AccessMode::kWrite}});
  graph.connect(a, b);
  graph.connect(d, b, 0);
  const auto platform = lw::cpu_platform(2);
  const g::CostModel model(platform);
  const auto placement = g::schedule_assignment(graph, model, {0, 1, 1});
  ASSERT_EQ(placement.device_order[1], (std::vector<g::NodeId>{d, b}));
  const auto want = lw::reference(graph, 2);
  for (auto copies : {rt::CopyStreams::kPerDevicePair, rt::CopyStreams::kConsumerStream}) {
    const bool per_pair = copies == rt::CopyStreams::kPerDevicePair;
    SCOPED_TRACE(per_pair ? "per-pair copy streams" : "copies on the consumer's stream");
    auto lowered = rt::lower(graph, placement, host_backend(2, 21), rt::DeviceMap::identity(2), lw::mix_emitter(),
                             {.copy_streams = copies});
    ASSERT_EQ(lowered.copies().size(), 1u);
    const auto info = lowered.info();
    const auto copy = info.find("copy x[0:+256] L0->L1 for B");
    const auto d_kernel = info.find("D/w0/seed");
    EXPECT_TRUE(info.reaches(info.find("A/w0/seed"), copy));
    EXPECT_TRUE(info.reaches(copy, info.find("B/w0/in0")));
    EXPECT_TRUE(info.reaches(d_kernel, info.find("B/w0/in0")));
    EXPECT_EQ(info.reaches(d_kernel, copy), !per_pair);
    EXPECT_FALSE(info.reaches(copy, d_kernel));
    const auto got = lw::run_and_read(lowered, graph, 2);
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == want[i]) << graph.buffers()[i].name;
  }
}

TEST(Lowering, APartialReadCopiesOnlyTheBytesRead) {
  TwoNodes t(64);
  auto lowered = rt::lower(t.graph, t.placement, host_backend(2, 2), rt::DeviceMap::identity(2), lw::mix_emitter(),
                           {.final_copies = rt::FinalCopies::kLeaveInPlace});
  ASSERT_EQ(lowered.copies().size(), 1u);
  EXPECT_EQ(lowered.copies()[0].offset, 0u);
  EXPECT_EQ(lowered.copies()[0].bytes, 64u);
  EXPECT_EQ(lowered.device_stats()[1].bytes_in, 64u);
}

TEST(Lowering, ASecondReaderOnTheSameDeviceReusesTheCopy) {
  g::StepGraph graph;
  const auto x = graph.add_buffer("x", 128);
  const auto y = graph.add_buffer("y", 128);
  const auto z = graph.add_buffer("z", 128);
  const auto a = graph.add_kernel("A", g::DeviceCosts::uniform(1), {{x, 0, 128, g::AccessMode::kWrite}});
  const auto b = graph.add_kernel("B", g::DeviceCosts::uniform(1),
                                  {{x, 0, 128, g::AccessMode::kRead}, {y, 0, 128, g::AccessMode::kWrite}});
  const auto c = graph.add_kernel("C", g::DeviceCosts::uniform(1),
                                  {{x, 0, 128, g::AccessMode::kRead}, {z, 0, 128, g::AccessMode::kWrite}});
  graph.connect(a, b);
  graph.connect(a, c);
  const auto platform = lw::cpu_platform(2);
  const g::CostModel model(platform);
  const auto placement = g::schedule_assignment(graph, model, {0, 1, 1});
  auto lowered = rt::lower(graph, placement, host_backend(2, 3), rt::DeviceMap::identity(2), lw::mix_emitter(),
                           {.final_copies = rt::FinalCopies::kLeaveInPlace});
  ASSERT_EQ(lowered.copies().size(), 1u);
  EXPECT_EQ(lowered.event_waits(), 2u)
      << "the copy stream waits for A and B for the copy; C's edge from A is implied by B's wait on the same stream";
  const auto got = lw::run_and_read(lowered, graph, 1);
  const auto want = lw::reference(graph, 1);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == want[i]) << graph.buffers()[i].name;
}

TEST(Lowering, AWriteAfterReadEdgeBecomesAWaitWithoutACopy) {
  // A (L0) reads x and writes y; B (L1) then overwrites x: the edge carries
  // no bytes, but B must not write x before A has read it. With first-use
  // homes x lives on L0 (A touches it first), so its final version is
  // written back there; with last-writer homes it lives on L1 and A's read
  // is the copy.
  g::StepGraph graph;
  const auto x = graph.add_buffer("x", 64);
  const auto y = graph.add_buffer("y", 64);
  const auto a = graph.add_kernel("A", g::DeviceCosts::uniform(1),
                                  {{x, 0, 64, g::AccessMode::kRead}, {y, 0, 64, g::AccessMode::kWrite}});
  const auto b = graph.add_kernel("B", g::DeviceCosts::uniform(1), {{x, 0, 64, g::AccessMode::kWrite}});
  graph.connect(a, b, 0);
  const auto platform = lw::cpu_platform(2);
  const g::CostModel model(platform);
  const auto placement = g::schedule_assignment(graph, model, {0, 1});
  auto lowered = rt::lower(graph, placement, host_backend(2, 8), rt::DeviceMap::identity(2), lw::mix_emitter(),
                           {.homes = rt::HomePolicy::kFirstUse});
  ASSERT_EQ(lowered.copies().size(), 1u);
  EXPECT_EQ(lowered.copies()[0].reason, rt::CopyReason::kWriteBack);
  EXPECT_EQ(lowered.copies()[0].src_logical, 1);
  EXPECT_EQ(lowered.copies()[0].dst_logical, 0);
  EXPECT_EQ(lowered.event_waits(), 2u) << "B waits for A; the write-back on L0 waits for B";
  const auto info = lowered.info();
  const auto a_in = info.find("A/w0/in0"), b_seed = info.find("B/w0/seed"),
             wb = info.find("copy x[0:+64] L1->L0 write-back");
  EXPECT_TRUE(info.reaches(a_in, b_seed));
  EXPECT_TRUE(info.reaches(b_seed, wb));
  const auto want = lw::reference(graph, 2);
  auto got = lw::run_and_read(lowered, graph, 2);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == want[i]) << graph.buffers()[i].name;

  auto by_last_writer = rt::lower(graph, placement, host_backend(2, 9), rt::DeviceMap::identity(2), lw::mix_emitter());
  EXPECT_EQ(by_last_writer.homes(x)[0].logical, 1);
  ASSERT_EQ(by_last_writer.copies().size(), 1u);
  EXPECT_EQ(by_last_writer.copies()[0].reason, rt::CopyReason::kInput);
  EXPECT_EQ(by_last_writer.copies()[0].src_logical, 1);
  EXPECT_EQ(by_last_writer.copies()[0].before_node, a);
  EXPECT_EQ(by_last_writer.event_waits(), 2u)
      << "A waits for the copy of x's starting contents, which waits for nothing; B waits for A";
  // The copy reads L1's instance of x, which B then overwrites: B waits for
  // A, which waited for the copy.
  const auto info2 = by_last_writer.info();
  EXPECT_TRUE(info2.reaches(info2.find("copy x[0:+64] L1->L0 for A"), info2.find("B/w0/seed")));
  got = lw::run_and_read(by_last_writer, graph, 2);
  for (std::size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(got[i] == want[i]) << graph.buffers()[i].name;
}

TEST(Lowering, ThereIsOneCaptureWithEveryStreamJoined) {
  TwoNodes t;
  auto be = host_backend(2, 4);
  auto lowered = rt::lower(t.graph, t.placement, be, rt::DeviceMap::identity(2), lw::mix_emitter());
  EXPECT_EQ(lowered.stream(0).capture_status(), rt::CaptureStatus::kNone);
  EXPECT_EQ(lowered.stream(1).capture_status(), rt::CaptureStatus::kNone);
  EXPECT_EQ(lowered.stream(0).device(), 0);
  EXPECT_EQ(lowered.stream(1).device(), 1);
  EXPECT_EQ(lowered.emission_order(), (std::vector<g::NodeId>{t.a, t.b}));
  // One graph holds the work of both streams: A's kernel on device 0, B's
  // on device 1, the copy between them.
  const auto info = lowered.info();
  EXPECT_EQ(info.nodes[info.find("A/w0/seed")].device, 0);
  EXPECT_EQ(info.nodes[info.find("B/w0/seed")].device, 1);
  EXPECT_EQ(info.count(rt::NodeKind::kMemcpy), 1u);
}

// ------------------------------------------------------------------ the copies are needed

TEST(Lowering, ACopyLeftOutMakesTheHostBackendRefuseTheLaunch) {
  const g::RandomDagSpec spec{.nodes = 30, .seed = 9};
  const auto graph = lw::with_dataflow(g::make_random_dag(spec));
  const auto placement = lw::place(graph, lw::cpu_platform(2), g::Algorithm::kRoundRobin);
  auto be = host_backend(2, 5);
  const auto full = rt::lower(graph, placement, be, rt::DeviceMap::identity(2), lw::mix_emitter());
  ASSERT_GT(input_copies(full), 0u);
  rt::LoweringOptions o;
  o.skip_copy_for_test = 0;
  o.skipped_copy_access = rt::SkippedCopyAccess::kRemoteInstance;
  try {
    (void)rt::lower(graph, placement, be, rt::DeviceMap::identity(2), lw::mix_emitter(), o);
    FAIL() << "the launch reading another device's memory without the copy was accepted";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("without a copy or peer access"), std::string::npos) << e.what();
  }
  // The streams are usable after the refused capture.
  EXPECT_EQ(full.stream(0).capture_status(), rt::CaptureStatus::kNone);
}

TEST(Lowering, ACopyLeftOutWithTheStaleInstanceGivesDifferentResults) {
  const g::RandomDagSpec spec{.nodes = 30, .seed = 9};
  const auto graph = lw::with_dataflow(g::make_random_dag(spec));
  const auto placement = lw::place(graph, lw::cpu_platform(2), g::Algorithm::kRoundRobin);
  rt::LoweringOptions o;
  o.skip_copy_for_test = 0;
  o.skipped_copy_access = rt::SkippedCopyAccess::kLocalInstance;
  auto lowered = rt::lower(graph, placement, host_backend(2, 6), rt::DeviceMap::identity(2), lw::mix_emitter(), o);
  EXPECT_TRUE(lowered.copies()[0].skipped);
  const auto got = lw::run_and_read(lowered, graph, 1);
  const auto want = lw::reference(graph, 1);
  bool any_differs = false;
  for (std::size_t b = 0; b < got.size(); ++b) any_differs = any_differs || got[b] != want[b];
  EXPECT_TRUE(any_differs) << "the comparison must be able to fail";
}

// ------------------------------------------------------------------ bad input

TEST(Lowering, ARawCudaGraphIsRefusedNamingTheOrigin) {
  g::StepGraph raw(g::GraphOrigin::kRawCudaGraph);
  raw.add_kernel("k", g::DeviceCosts::uniform(1));
  g::Placement p;
  p.nodes.resize(1);
  p.device_order = {{0}};
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(raw, p, host_backend(1, 0), rt::DeviceMap::identity(1), lw::mix_emitter()); },
      {"raw CUDA graph"});
}

TEST(Lowering, UnplacedNodesAreRefusedNamingTheNode) {
  TwoNodes t;
  auto be = host_backend(2, 0);
  g::Placement short_placement = t.placement;
  short_placement.nodes.pop_back();
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(t.graph, short_placement, be, rt::DeviceMap::identity(2), lw::mix_emitter()); }, {"'B'"});
  g::Placement not_ordered = t.placement;
  not_ordered.device_order[1].clear();
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(t.graph, not_ordered, be, rt::DeviceMap::identity(2), lw::mix_emitter()); },
      {"'B'", "unplaced"});
}

TEST(Lowering, ADeviceWithoutMappingIsRefusedNamingTheNode) {
  TwoNodes t;
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(t.graph, t.placement, host_backend(2, 0), rt::DeviceMap::identity(1), lw::mix_emitter()); },
      {"'B'", "DeviceMap"});
  // A mapping to a backend device that does not exist.
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(t.graph, t.placement, host_backend(1, 0), rt::DeviceMap::identity(2), lw::mix_emitter()); },
      {"host_devices"});
}

TEST(Lowering, OtherBadInputIsRefusedWithTypedErrors) {
  TwoNodes t;
  auto be = host_backend(2, 0);
  EXPECT_THROW((void)rt::lower(t.graph, t.placement, be, rt::DeviceMap::identity(2), rt::NodeEmitter{}),
               sg::InvalidArgument);
  EXPECT_THROW((void)rt::lower(t.graph, t.placement, nullptr, rt::DeviceMap::identity(2), lw::mix_emitter()),
               sg::InvalidArgument);
  rt::LoweringOptions o;
  o.skip_copy_for_test = 7;
  EXPECT_THROW((void)rt::lower(t.graph, t.placement, be, rt::DeviceMap::identity(2), lw::mix_emitter(), o),
               sg::InvalidArgument);
  // A collective needs an explicit choice.
  g::TransformerSpec spec;
  spec.layers = 1;
  spec.hidden = 8;
  spec.seq = 4;
  spec.batch = 1;
  spec.bytes_per_element = 8;
  const auto tf = g::make_transformer(spec);
  const auto placement = lw::place(tf, lw::cpu_platform(2), g::Algorithm::kRoundRobin);
  sgtest::expect_throw_with<sg::InvalidArgument>(
      [&] { (void)rt::lower(tf, placement, be, rt::DeviceMap::identity(2), lw::mix_emitter()); }, {"allreduce0"});
  // An order that contradicts the edges.
  g::Placement swapped = t.placement;
  swapped.nodes[t.b].device = 0;
  swapped.device_order = {{t.b, t.a}, {}};
  EXPECT_THROW((void)rt::lower(t.graph, swapped, be, rt::DeviceMap::identity(2), lw::mix_emitter()),
               sg::InvalidArgument);
  EXPECT_THROW((void)rt::DeviceMap::identity(0), sg::InvalidArgument);
  EXPECT_THROW((void)rt::DeviceMap::identity(1).backend_device(1), sg::InvalidArgument);
}

// ------------------------------------------------------------------ the handle

TEST(Lowering, LoweredGraphMovesLikeAnOwner) {
  TwoNodes t;
  auto lowered = rt::lower(t.graph, t.placement, host_backend(2, 7), rt::DeviceMap::identity(2), lw::mix_emitter());
  lowered.launch();
  rt::LoweredGraph moved = std::move(lowered);
  EXPECT_FALSE(lowered.valid());  // NOLINT(bugprone-use-after-move): tested on purpose
  EXPECT_THROW(lowered.launch(), sg::InvalidState);
  auto& self = moved;
  moved = std::move(self);
  ASSERT_TRUE(moved.valid());
  moved.synchronize();
  rt::LoweredGraph other;
  other = std::move(moved);
  EXPECT_TRUE(other.valid());
  other.run();
  // y depends only on what A writes, not on the initial contents.
  const auto first = other.read(t.y);
  EXPECT_TRUE(first == lw::run_and_read(other, t.graph, 1)[t.y]);
}
