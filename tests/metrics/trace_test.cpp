// Replay traces (Note [Replay traces]) on the host backend, parsed back and
// checked against what the test ran: replays x nodes per replay, each node
// nested in its replay, nodes of a serial stream never overlapping, and
// parallel branches moved to lane tracks.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/executor.h>

namespace rt = stepgraph::runtime;
using nlohmann::json;

namespace {

void busy_add_host(float* out) {
  // A few microseconds of work, so that spans have a width.
  volatile float x = 0;
  for (int i = 0; i < 2000; ++i) x = x + 1.0f;
  *out += x;
}
const rt::Kernel<float*> kBusyAdd{"busy_add", busy_add_host, nullptr};

struct Span {
  std::string name, cat;
  int tid = 0;
  double ts = 0, end = 0;
  std::int64_t step = -1;
};

struct Parsed {
  std::map<int, std::string> tracks;  // tid -> name
  std::vector<Span> spans;
};

Parsed parse(const std::string& text) {
  Parsed p;
  const json j = json::parse(text);
  for (const auto& e : j.at("traceEvents")) {
    if (e.at("ph") == "M" && e.at("name") == "thread_name")
      p.tracks[e.at("tid").get<int>()] = e.at("args").at("name").get<std::string>();
    if (e.at("ph") != "X") continue;
    Span s;
    s.name = e.at("name");
    s.cat = e.at("cat");
    s.tid = e.at("tid");
    s.ts = e.at("ts");
    s.end = s.ts + e.at("dur").get<double>();
    if (e.at("args").contains("step")) s.step = e.at("args").at("step");
    p.spans.push_back(s);
  }
  return p;
}

int tid_of(const Parsed& p, const std::string& name) {
  for (const auto& [tid, n] : p.tracks)
    if (n == name) return tid;
  return -1;
}

}  // namespace

TEST(Trace, HostReplaysRecordEveryNodeNestedInItsReplayOnTheStreamTrack) {
  rt::StepSpec spec;
  spec.state = {{.name = "acc", .bytes = sizeof(float)}};
  constexpr int kChain = 4;
  auto step = [](rt::StepContext& ctx) {
    const auto& acc = ctx.state("acc");
    for (int i = 0; i < kChain; ++i)
      rt::launch(ctx.stream(), kBusyAdd, {.name = "add" + std::to_string(i), .accesses = {rt::read_write(acc)}},
                 acc.data<float>());
  };
  auto trace = rt::TraceRecorder::create();
  rt::ExecutorOptions o;
  o.backend = "host";
  o.warmup = 2;
  o.trace = trace;
  constexpr int kSteps = 9;
  std::vector<std::string> node_names;
  {
    rt::StepExecutor ex(spec, step, o);
    for (int i = 0; i < kSteps; ++i) {
      auto h = ex.replay();
      if (i % 2 == 0) h.on_complete([](const rt::ReplayHandle&) {});  // completed by the executor's thread
      ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
      h.release();
    }
    for (const auto& n : ex.graph_info().nodes) node_names.push_back(n.name);
  }
  ASSERT_EQ(node_names.size(), static_cast<std::size_t>(kChain));
  const Parsed p = parse(trace->to_json());
  const int stream = tid_of(p, "host device 0 stream");
  ASSERT_GT(stream, 0);
  ASSERT_GT(tid_of(p, "executor thread"), 0);

  std::map<std::int64_t, Span> replays;
  std::map<std::int64_t, std::vector<Span>> nodes;
  for (const auto& s : p.spans) {
    if (s.cat == "replay") {
      EXPECT_EQ(s.tid, stream);
      EXPECT_TRUE(replays.emplace(s.step, s).second) << "two spans for replay " << s.step;
    } else if (s.cat == "node") {
      EXPECT_EQ(s.tid, stream) << "a serial chain needs no lane track";
      nodes[s.step].push_back(s);
    }
  }
  // Steps 0 and 1 are eager warm-ups; 2..8 are replays of the captured graph.
  ASSERT_EQ(replays.size(), static_cast<std::size_t>(kSteps - o.warmup));
  for (std::int64_t step = o.warmup; step < kSteps; ++step) {
    ASSERT_TRUE(replays.contains(step)) << step;
    const Span& r = replays[step];
    ASSERT_EQ(nodes[step].size(), static_cast<std::size_t>(kChain)) << "step " << step;
    std::multiset<std::string> names;
    for (const auto& n : nodes[step]) {
      names.insert(n.name);
      EXPECT_GE(n.ts, r.ts) << n.name << " of step " << step << " starts before its replay";
      EXPECT_LE(n.end, r.end) << n.name << " of step " << step << " ends after its replay";
    }
    EXPECT_EQ(names, std::multiset<std::string>(node_names.begin(), node_names.end()));
  }
  // The same replays timed by the device's events (the spans cuda gets),
  // on their own track, in step order, each as wide as its nodes at least
  // (the anchor's placement on the host clock is approximate).
  std::map<std::int64_t, Span> timed;
  for (const auto& s : p.spans)
    if (s.cat == "replay_events") {
      EXPECT_EQ(s.tid, tid_of(p, "host device 0 stream (events)"));
      timed[s.step] = s;
    }
  ASSERT_EQ(timed.size(), replays.size());
  for (auto& [step, s] : timed) {
    ASSERT_TRUE(replays.contains(step));
    double nodes_us = 0;
    for (const auto& n : nodes[step]) nodes_us += n.end - n.ts;
    EXPECT_GE(s.end - s.ts, 0.9 * nodes_us) << "step " << step;
    if (timed.contains(step + 1)) {
      EXPECT_LE(s.end, timed[step + 1].ts + 1.0) << "step " << step;
    }
  }
  // One stream runs one node at a time: the node spans never overlap, and
  // each step's nodes run in the chain's order.
  std::vector<Span> all;
  for (auto& [step, v] : nodes) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end(), [](const Span& a, const Span& b) { return a.ts < b.ts; });
  for (std::size_t i = 1; i < all.size(); ++i) EXPECT_LE(all[i - 1].end, all[i].ts) << all[i].name;
  for (auto& [step, v] : nodes) {
    std::sort(v.begin(), v.end(), [](const Span& a, const Span& b) { return a.ts < b.ts; });
    for (int i = 0; i < kChain; ++i) EXPECT_EQ(v[static_cast<std::size_t>(i)].name, "add" + std::to_string(i));
  }
  // Launches on the caller's thread, warm-ups, capture and instantiate.
  std::map<std::string, int> executor_spans;
  for (const auto& s : p.spans)
    if (s.cat == "executor") ++executor_spans[s.name.substr(0, s.name.find(' '))];
  EXPECT_EQ(executor_spans["launch"], kSteps - o.warmup);
  EXPECT_EQ(executor_spans["warm-up"], o.warmup);
  EXPECT_EQ(executor_spans["capture"], o.max_in_flight);  // one graph per slot
  EXPECT_EQ(executor_spans["instantiate"], o.max_in_flight);
  EXPECT_EQ(executor_spans["acquire"], kSteps);
  EXPECT_GE(executor_spans["callbacks"], (kSteps + 1) / 2);
}

TEST(Trace, ParallelBranchesGoToLaneTracks) {
  rt::StepSpec spec;
  spec.state = {{.name = "a", .bytes = sizeof(float)}, {.name = "b", .bytes = sizeof(float)}};
  rt::BackendOptions bo;
  bo.workers_per_device = 2;
  auto backend = rt::Backend::create("host", bo);
  // Fork and join through events: two independent chains of nodes.
  auto side = backend->create_stream(0);
  auto forked = backend->create_event(0);
  auto joined = backend->create_event(0);
  auto step = [&](rt::StepContext& ctx) {
    ctx.stream().record(forked);
    side.ref().wait(forked);
    for (int i = 0; i < 3; ++i) {
      rt::launch(ctx.stream(), kBusyAdd,
                 {.name = "a" + std::to_string(i), .accesses = {rt::read_write(ctx.state("a"))}},
                 ctx.state("a").data<float>());
      rt::launch(side.ref(), kBusyAdd, {.name = "b" + std::to_string(i), .accesses = {rt::read_write(ctx.state("b"))}},
                 ctx.state("b").data<float>());
    }
    side.ref().record(joined);
    ctx.stream().wait(joined);
  };
  auto trace = rt::TraceRecorder::create();
  rt::ExecutorOptions o;
  o.backend_instance = backend;
  o.warmup = 0;
  o.trace = trace;
  {
    rt::StepExecutor ex(spec, step, o);
    for (int i = 0; i < 20; ++i) {
      auto h = ex.replay();
      ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
      h.release();
    }
  }
  const Parsed p = parse(trace->to_json());
  // Whatever ran in parallel, no two node spans of one track overlap.
  std::map<int, std::vector<Span>> by_track;
  int nodes = 0;
  for (const auto& s : p.spans)
    if (s.cat == "node") {
      by_track[s.tid].push_back(s);
      ++nodes;
    }
  EXPECT_EQ(nodes, 20 * 6);
  for (auto& [tid, v] : by_track) {
    std::sort(v.begin(), v.end(), [](const Span& a, const Span& b) { return a.ts < b.ts; });
    for (std::size_t i = 1; i < v.size(); ++i) EXPECT_LE(v[i - 1].end, v[i].ts) << p.tracks.at(tid);
    if (tid != tid_of(p, "host device 0 stream")) {
      EXPECT_NE(p.tracks.at(tid).find("(parallel "), std::string::npos) << p.tracks.at(tid);
    }
  }
}

TEST(Trace, WritesAFileAndNamesAnUnwritableOne) {
  auto trace = rt::TraceRecorder::create();
  const auto t = std::chrono::steady_clock::now();
  trace->span(trace->track("t"), "x", "test", t, t + std::chrono::microseconds(5));
  const std::string path = ::testing::TempDir() + "/sg_trace_test.json";
  trace->write(path);
  std::ifstream f(path);
  const json j = json::parse(f);
  EXPECT_EQ(j.at("traceEvents").back().at("name"), "x");
  EXPECT_DOUBLE_EQ(j.at("traceEvents").back().at("dur").get<double>(), 5.0);
  std::remove(path.c_str());
  EXPECT_THROW(trace->write("/nonexistent-dir/x.json"), stepgraph::InvalidArgument);
}
