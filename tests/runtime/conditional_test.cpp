// Conditional nodes (IF, WHILE) on both backends: one typed suite,
// instantiated for the host backend (test_runtime_host, label cpu) and the
// cuda backend (test_runtime_cuda, label gpu; skipped without a device).
// Every decision is made by a kernel at replay time; each test compares
// with a count the test keeps itself.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <stepgraph/runtime/backend.h>

#include "backend_tags.h"
#include "conditional_kernels.h"
#include "expect_throw.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

template <class Tag>
class Conditional : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Tag::kKind == rt::BackendKind::kCuda) {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    }
    rt::BackendOptions o;
    o.host_devices = 1;
    o.shuffle_seed = 0xc0de;  // a missing edge around a conditional node shows up as a wrong count
    be_ = rt::Backend::create(Tag::kKind, o);
    s_ = be_->create_stream(0);
    flag_ = be_->allocate_pinned(sizeof(std::int32_t));
    set_flag(0);
  }

  void set_flag(std::int32_t v) { std::memcpy(flag_.host_data(), &v, sizeof v); }
  std::int32_t* flag() { return flag_.template data<std::int32_t>(); }

  /// A device int32 set to `v` (through a pinned staging buffer).
  rt::Buffer device_i32(std::int32_t v) {
    auto d = be_->allocate(0, sizeof(std::int32_t));
    auto p = be_->allocate_pinned(sizeof(std::int32_t));
    std::memcpy(p.host_data(), &v, sizeof v);
    s_.copy(d.slice(), p.slice());
    s_.synchronize();
    return d;
  }
  std::int32_t read_i32(const rt::Buffer& d) {
    auto p = be_->allocate_pinned(sizeof(std::int32_t));
    s_.copy(p.slice(), d.slice());
    s_.synchronize();
    std::int32_t v = 0;
    std::memcpy(&v, p.host_data(), sizeof v);
    return v;
  }

  void add(rt::StreamRef s, const rt::Buffer& b, std::int32_t v, std::string name) {
    rt::launch(s, sgtest::add_i32(), {.name = std::move(name), .accesses = {rt::read_write(b)}},
               b.template data<std::int32_t>(), v);
  }
  void decide(rt::StreamRef s, const rt::Buffer& value, rt::ConditionHandle c, std::string name) {
    rt::launch(s, sgtest::cond_from_value(), {.name = std::move(name), .accesses = {rt::read(value)}},
               value.template data<const std::int32_t>(), c);
  }
  void count_down(rt::StreamRef s, const rt::Buffer& left, const rt::Buffer& iterations, rt::ConditionHandle c) {
    rt::launch(s, sgtest::count_down(),
               {.name = "count_down", .accesses = {rt::read_write(left), rt::read_write(iterations)}},
               left.template data<std::int32_t>(), iterations.template data<std::int32_t>(), c);
  }

  std::shared_ptr<rt::Backend> be_;
  rt::Stream s_;
  rt::Buffer flag_;  // pinned, read in place by the deciding kernel
};

using sgtest::Backends;
TYPED_TEST_SUITE(Conditional, Backends);

TYPED_TEST(Conditional, IfRunsItsBodyOnlyWhenAKernelSetsTheConditionAtReplay) {
  auto taken = this->device_i32(0);
  auto after = this->device_i32(0);
  this->s_.begin_capture();
  const auto c = this->s_.create_condition();
  this->decide(this->s_, this->flag_, c, "decide");
  this->s_.capture_if(c, [&](rt::StreamRef body) { this->add(body, taken, 1, "taken"); });
  this->add(this->s_, after, 1, "after");  // runs after the IF node, taken or not
  auto exec = this->s_.end_capture().instantiate();

  const std::vector<std::int32_t> flags = {1, 0, 0, 1, 1, 0, 1};
  std::int32_t expected = 0;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    this->set_flag(flags[i]);
    exec.launch(this->s_);
    this->s_.synchronize();
    expected += flags[i] != 0 ? 1 : 0;
    EXPECT_EQ(this->read_i32(taken), expected) << "after replay " << i;
    EXPECT_EQ(this->read_i32(after), static_cast<std::int32_t>(i + 1));
  }
}

TYPED_TEST(Conditional, TheConditionIsResetToItsDefaultAtEachLaunch) {
  // Default 1: the body runs unless a kernel clears the condition, and a
  // value set by one launch does not leak into the next.
  auto taken = this->device_i32(0);
  this->s_.begin_capture();
  const auto c = this->s_.create_condition(1);
  this->s_.capture_if(c, [&](rt::StreamRef body) {
    this->add(body, taken, 1, "taken");
    this->decide(body, this->flag_, c, "clear");  // flag 0: the condition ends the launch cleared
  });
  auto exec = this->s_.end_capture().instantiate();
  for (int i = 0; i < 3; ++i) exec.launch(this->s_);
  this->s_.synchronize();
  EXPECT_EQ(this->read_i32(taken), 3);
}

TYPED_TEST(Conditional, WhileRunsAsManyIterationsAsTheDeviceDecides) {
  auto start = this->be_->allocate_pinned(sizeof(std::int32_t));  // the loop count, read by a copy node
  auto left = this->device_i32(0);
  auto iterations = this->device_i32(0);
  this->s_.begin_capture();
  this->s_.copy(left.slice(), start.slice(), "load count");
  const auto c = this->s_.create_condition();
  this->decide(this->s_, left, c, "enter");
  this->s_.capture_while(c, [&](rt::StreamRef body) { this->count_down(body, left, iterations, c); });
  auto exec = this->s_.end_capture().instantiate();

  std::int32_t expected = 0;
  for (std::int32_t n : {3, 0, 7, 1, 0, 12}) {
    std::memcpy(start.host_data(), &n, sizeof n);
    exec.launch(this->s_);
    this->s_.synchronize();
    expected += n;
    EXPECT_EQ(this->read_i32(iterations), expected) << "loop count " << n;
    EXPECT_EQ(this->read_i32(left), n > 0 ? 0 : n);
  }
}

TYPED_TEST(Conditional, NestedConditionalsRunTheInnerLoopOnlyInTakenBranches) {
  auto start = this->be_->allocate_pinned(sizeof(std::int32_t));
  auto left = this->device_i32(0);
  auto iterations = this->device_i32(0);
  auto branches = this->device_i32(0);
  this->s_.begin_capture();
  this->s_.copy(left.slice(), start.slice(), "load count");
  const auto outer = this->s_.create_condition();
  this->decide(this->s_, this->flag_, outer, "decide outer");
  this->s_.capture_if(
      outer,
      [&](rt::StreamRef body) {
        this->add(body, branches, 1, "branch");
        const auto inner = body.create_condition();
        this->decide(body, left, inner, "enter");
        body.capture_while(inner, [&](rt::StreamRef loop) { this->count_down(loop, left, iterations, inner); });
      },
      "outer if");
  auto graph = this->s_.end_capture();
  const auto info = graph.info();
  const auto& outer_node = info.nodes[info.find("outer if")];
  ASSERT_TRUE(outer_node.conditional.has_value());
  const auto& body = *outer_node.conditional->body;
  EXPECT_EQ(body.count(rt::NodeKind::kConditional), 1u);
  auto exec = graph.instantiate();

  std::int32_t want_iterations = 0, want_branches = 0;
  const std::vector<std::pair<std::int32_t, std::int32_t>> steps = {{1, 4}, {0, 9}, {1, 2}, {1, 0}, {0, 3}};
  for (auto [f, n] : steps) {
    this->set_flag(f);
    std::memcpy(start.host_data(), &n, sizeof n);
    exec.launch(this->s_);
    this->s_.synchronize();
    if (f != 0) {
      ++want_branches;
      want_iterations += n;
    }
    EXPECT_EQ(this->read_i32(branches), want_branches);
    EXPECT_EQ(this->read_i32(iterations), want_iterations) << "flag " << f << " count " << n;
  }
}

TYPED_TEST(Conditional, IntrospectionShowsTheNodeItsBodyAndItsEdges) {
  auto taken = this->device_i32(0);
  auto after = this->device_i32(0);
  this->s_.begin_capture();
  const auto c = this->s_.create_condition(0);
  this->decide(this->s_, this->flag_, c, "decide");
  this->s_.capture_if(
      c,
      [&](rt::StreamRef body) {
        this->add(body, taken, 1, "body 1");
        this->add(body, taken, 2, "body 2");
      },
      "maybe");
  this->add(this->s_, after, 1, "after");
  const auto info = this->s_.end_capture().info();
  ASSERT_EQ(info.nodes.size(), 3u);
  const auto d = info.find("decide");
  const auto m = info.find("maybe");
  const auto a = info.find("after");
  EXPECT_EQ(info.nodes[m].kind, rt::NodeKind::kConditional);
  ASSERT_TRUE(info.nodes[m].conditional.has_value());
  EXPECT_EQ(info.nodes[m].conditional->kind, rt::ConditionalKind::kIf);
  EXPECT_EQ(info.nodes[m].conditional->handle, c.value);
  EXPECT_EQ(info.nodes[m].conditional->default_value, 0u);
  const auto& body = *info.nodes[m].conditional->body;
  ASSERT_EQ(body.nodes.size(), 2u);
  EXPECT_EQ(body.nodes[body.find("body 1")].kind, rt::NodeKind::kKernel);
  EXPECT_TRUE(body.has_edge(body.find("body 1"), body.find("body 2")));
  EXPECT_TRUE(info.has_edge(d, m));
  EXPECT_TRUE(info.has_edge(m, a));
  // The node declares what its body touches.
  bool declares_taken = false;
  for (const auto& acc : info.nodes[m].accesses) declares_taken |= acc.buffer_id == taken.id();
  EXPECT_TRUE(declares_taken);
}

TYPED_TEST(Conditional, UpdateTakesANewBodyOfTheSameShapeAndRefusesAnotherKindOrShape) {
  auto taken = this->device_i32(0);
  auto capture = [&](rt::ConditionalKind kind, std::int32_t add, int body_nodes) {
    this->s_.begin_capture();
    const auto c = this->s_.create_condition();
    this->decide(this->s_, this->flag_, c, "decide");
    auto body = [&](rt::StreamRef b) {
      for (int i = 0; i < body_nodes; ++i) this->add(b, taken, add, "add");
      if (kind == rt::ConditionalKind::kWhile) this->decide(b, this->flag_, c, "again");
    };
    if (kind == rt::ConditionalKind::kIf)
      this->s_.capture_if(c, body);
    else
      this->s_.capture_while(c, body);
    return this->s_.end_capture();
  };
  auto exec = capture(rt::ConditionalKind::kIf, 1, 1).instantiate();
  this->set_flag(1);
  exec.launch(this->s_);
  this->s_.synchronize();
  EXPECT_EQ(this->read_i32(taken), 1);

  const auto ok = exec.update(capture(rt::ConditionalKind::kIf, 5, 1));
  ASSERT_TRUE(ok.ok()) << ok.message;
  exec.launch(this->s_);
  this->s_.synchronize();
  EXPECT_EQ(this->read_i32(taken), 6);  // the new body's parameter

  const auto kind = exec.update(capture(rt::ConditionalKind::kWhile, 5, 1));
  EXPECT_FALSE(kind.ok());
  const auto shape = exec.update(capture(rt::ConditionalKind::kIf, 5, 2));
  EXPECT_EQ(shape.result, rt::UpdateResult::kTopologyChanged);
  ASSERT_TRUE(shape.node.has_value());
  EXPECT_EQ(*shape.node, 1u);  // the conditional node, whose body changed

  // Refused updates leave the executable as it was (adds 5 once when taken).
  this->set_flag(0);
  exec.launch(this->s_);
  this->s_.synchronize();  // the next flag must not reach this launch
  this->set_flag(1);
  exec.launch(this->s_);
  this->s_.synchronize();
  EXPECT_EQ(this->read_i32(taken), 11);
}

TYPED_TEST(Conditional, ABodyWithAHostFunctionOrAnEventIsATypedErrorAndTheCaptureGoesOn) {
  auto taken = this->device_i32(0);
  auto ev = this->be_->create_event(0);
  this->s_.begin_capture();
  const auto c = this->s_.create_condition();
  this->decide(this->s_, this->flag_, c, "decide");
  try {
    this->s_.capture_if(
        c, [&](rt::StreamRef body) { body.host_fn("log", [] {}); }, "with host fn");
    ADD_FAILURE() << "a host function inside a conditional body was accepted";
  } catch (const rt::ConditionalBodyError& e) {
    EXPECT_EQ(e.node(), "log");
    EXPECT_NE(std::string(e.what()).find("with host fn"), std::string::npos) << e.what();
  }
  EXPECT_THROW(this->s_.capture_if(c, [&](rt::StreamRef body) { body.record(ev); }), rt::ConditionalBodyError);
  EXPECT_THROW(this->s_.capture_if(c, [&](rt::StreamRef body) { body.wait(ev); }), rt::ConditionalBodyError);
  // An empty loop could only never run or never end.
  EXPECT_THROW(this->s_.capture_while(c, [](rt::StreamRef) {}), sg::InvalidArgument);
  // The capture goes on: a valid IF after the refusals, and the graph holds only it.
  EXPECT_EQ(this->s_.capture_status(), rt::CaptureStatus::kActive);
  this->s_.capture_if(c, [&](rt::StreamRef body) { this->add(body, taken, 1, "taken"); });
  auto graph = this->s_.end_capture();
  EXPECT_EQ(graph.info().count(rt::NodeKind::kConditional), 1u);
  auto exec = graph.instantiate();
  this->set_flag(1);
  exec.launch(this->s_);
  this->s_.synchronize();
  EXPECT_EQ(this->read_i32(taken), 1);
}

TYPED_TEST(Conditional, ConditionsBelongToTheirCapture) {
  EXPECT_THROW((void)this->s_.create_condition(), sg::InvalidState);
  EXPECT_THROW(this->s_.capture_if(rt::ConditionHandle{1}, [](rt::StreamRef) {}), sg::InvalidState);
  this->s_.begin_capture();
  const auto c = this->s_.create_condition();
  auto g1 = this->s_.end_capture();
  this->s_.begin_capture();
  // A handle of another graph.
  EXPECT_THROW(this->s_.capture_if(c, [](rt::StreamRef) {}), sg::InvalidArgument);
  (void)this->s_.end_capture();
}

TYPED_TEST(Conditional, RunAsGraphRunsConditionalWorkEagerlyWithoutAHostWait) {
  auto taken = this->device_i32(0);
  const auto before = this->be_->sync_counts();
  const std::vector<std::int32_t> flags = {1, 1, 0, 1};
  std::vector<rt::Buffer> keep;
  for (std::int32_t f : flags) {
    // The flag each call reads: its own pinned buffer, so that no call
    // needs the previous one to have finished.
    auto fb = this->be_->allocate_pinned(sizeof(std::int32_t));
    std::memcpy(fb.host_data(), &f, sizeof f);
    rt::run_as_graph(this->s_, [&](rt::StreamRef s) {
      const auto c = s.create_condition();
      this->decide(s, fb, c, "decide");
      s.capture_if(c, [&](rt::StreamRef body) { this->add(body, taken, 1, "taken"); });
    });
    keep.push_back(std::move(fb));
  }
  const auto after = this->be_->sync_counts();
  EXPECT_EQ(after.blocking(), before.blocking()) << "run_as_graph waited on the host";
  EXPECT_EQ(this->read_i32(taken), 3);
}

TYPED_TEST(Conditional, SyncCountsCountEveryHostWait) {
  auto ev = this->be_->create_event(0);
  const auto a = this->be_->sync_counts();
  this->s_.synchronize();
  this->s_.record(ev);
  ev.synchronize();
  (void)ev.wait_for(std::chrono::milliseconds(100));
  (void)ev.query();
  (void)this->s_.query();
  this->be_->synchronize_device(0);
  const auto b = this->be_->sync_counts();
  EXPECT_EQ(b.stream_synchronize - a.stream_synchronize, 1u);
  EXPECT_EQ(b.event_synchronize - a.event_synchronize, 1u);
  EXPECT_EQ(b.event_wait_for - a.event_wait_for, 1u);
  EXPECT_EQ(b.event_query - a.event_query, 1u);
  EXPECT_EQ(b.stream_query - a.stream_query, 1u);
  EXPECT_EQ(b.device_synchronize - a.device_synchronize, 1u);
  EXPECT_EQ(b.blocking() - a.blocking(), 4u);
  EXPECT_EQ(b.events_waited_on - a.events_waited_on, 1u);  // one event, waited on three ways
}

}  // namespace
