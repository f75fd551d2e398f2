// The fault matrix (issue 19, item 4): a StepExecutor on the host backend
// runs a 100-node random DAG over three streams; a fault (a kernel that
// throws), a blocked node past the watchdog's deadline, or a fault with an
// error callback that itself throws is injected at every node position under
// 20 shuffle seeds. Each case asserts, against counts the test keeps itself:
// exactly one error callback for the executor, naming the step (and, for a
// fault, the node) the test injected into; no hang (every wait bounded); the
// executor failed and every later call a typed error; nothing lost (no
// thread gained over the matrix; memory: the asan preset runs this binary
// under LeakSanitizer). Steps before the injected one must equal a serial
// evaluation of the DAG.
//
// Size (Note [Fault matrix size]): the full matrix is 100 positions x 20
// seeds per kind. By default every position runs under a stride of the
// seeds (fault: all 20 seeds, 5 under a sanitizer; error callback that
// throws: 5 seeds, 2 under a sanitizer; timeout, which costs a deadline per
// case: 1 seed); SG_FAULT_MATRIX=full runs all of it for every kind.
// docs/reliability.md, "Fault matrix", has the times.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/core/log.h>
#include <stepgraph/runtime/executor.h>

#include "expect_throw.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

constexpr int kNodes = 100;
constexpr int kStreams = 3;
constexpr int kMaxDeps = 3;
constexpr int kSeeds = 20;
constexpr auto kBound = std::chrono::seconds(60);  // every wait of the test; a hang fails it instead

/// A random DAG: node i runs on stream[i] after deps[i] (earlier nodes).
struct Dag {
  std::array<int, kNodes> stream{};
  std::array<std::vector<int>, kNodes> deps;
};

Dag random_dag(std::uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ULL + 1);
  Dag d;
  for (int i = 0; i < kNodes; ++i) {
    d.stream[static_cast<std::size_t>(i)] = static_cast<int>(rng() % kStreams);
    if (i == 0) continue;
    const int n = static_cast<int>(rng() % (kMaxDeps + 1));
    for (int k = 0; k < n; ++k) {
      const int dep = static_cast<int>(rng() % static_cast<std::uint64_t>(i));
      auto& deps = d.deps[static_cast<std::size_t>(i)];
      if (std::find(deps.begin(), deps.end(), dep) == deps.end()) deps.push_back(dep);
    }
  }
  return d;
}

/// The serial reference: value[i] = (i + 1) * (step + 1) + sum of value[dep].
std::vector<std::uint64_t> serial_values(const Dag& d, std::uint64_t step) {
  std::vector<std::uint64_t> v(kNodes);
  for (int i = 0; i < kNodes; ++i) {
    std::uint64_t x = static_cast<std::uint64_t>(i + 1) * (step + 1);
    for (int dep : d.deps[static_cast<std::size_t>(i)]) x += v[static_cast<std::size_t>(dep)];
    v[static_cast<std::size_t>(i)] = x;
  }
  return v;
}

enum class Inject : std::int32_t { kNone = 0, kThrow = 1, kBlock = 2 };

/// What one node's kernel gets, by value.
struct NodeArgs {
  std::uint64_t* values = nullptr;
  const std::int32_t* control = nullptr;  // [node to inject at, Inject]
  const rt::StepScalars* scalars = nullptr;
  const std::atomic<int>* unblock = nullptr;  // the test's, for Inject::kBlock
  int self = 0;
  int ndeps = 0;
  std::array<int, kMaxDeps> deps{};
};

void dag_node_host(NodeArgs a) {
  if (a.control[0] == a.self) {
    if (a.control[1] == static_cast<std::int32_t>(Inject::kThrow))
      throw std::runtime_error("fault injected at node n" + std::to_string(a.self));
    if (a.control[1] == static_cast<std::int32_t>(Inject::kBlock)) {
      // Blocks until the test lets it go; bounded, so that a broken test
      // cannot wedge the process (the test fails on its own bound first).
      const auto until = std::chrono::steady_clock::now() + 2 * kBound;
      while (a.unblock->load(std::memory_order_acquire) == 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  std::uint64_t x = static_cast<std::uint64_t>(a.self + 1) * (static_cast<std::uint64_t>(a.scalars->step) + 1);
  for (int k = 0; k < a.ndeps; ++k) x += a.values[a.deps[static_cast<std::size_t>(k)]];
  a.values[a.self] = x;
}

rt::Kernel<NodeArgs> dag_node() {
  return {"dag_node", dag_node_host, nullptr};
}

rt::StepSpec dag_spec() {
  rt::StepSpec s;
  s.inputs = {{"control", 2 * sizeof(std::int32_t), rt::DType::kInt32}};
  s.outputs = {{"values", kNodes * sizeof(std::uint64_t), rt::DType::kInt64}};
  s.scratch = {{"values", kNodes * sizeof(std::uint64_t), rt::DType::kInt64}};
  s.state = {{"untouched", sizeof(std::uint64_t), rt::DType::kInt64}};  // for read_state/write_state
  return s;
}

/// The DAG enqueued on the executor's stream and two side streams: a fork
/// from the origin, one event per node for its cross-stream successors, a
/// join back, and a copy of every value to the output.
struct DagStep {
  const Dag* dag = nullptr;
  std::shared_ptr<rt::Backend> backend;
  std::vector<rt::Stream> side;
  std::vector<rt::Event> node_done;
  rt::Event fork;
  std::vector<rt::Event> joins;
  const std::atomic<int>* unblock = nullptr;

  DagStep(const Dag& d, std::shared_ptr<rt::Backend> be, const std::atomic<int>* release)
      : dag(&d), backend(std::move(be)), unblock(release) {
    for (int s = 1; s < kStreams; ++s) {
      side.push_back(backend->create_stream(0));
      joins.push_back(backend->create_event(0));
    }
    for (int i = 0; i < kNodes; ++i) node_done.push_back(backend->create_event(0));
    fork = backend->create_event(0);
  }

  void operator()(rt::StepContext& ctx) {
    const auto origin = ctx.stream();
    auto stream_of = [&](int s) { return s == 0 ? origin : side[static_cast<std::size_t>(s - 1)].ref(); };
    const auto& values = ctx.scratch("values");
    const auto& control = ctx.input("control");
    origin.record(fork);
    for (auto& s : side) s.wait(fork);
    for (int i = 0; i < kNodes; ++i) {
      const auto si = static_cast<std::size_t>(i);
      const auto s = stream_of(dag->stream[si]);
      NodeArgs a;
      a.values = values.data<std::uint64_t>();
      a.control = control.data<std::int32_t>();
      a.scalars = ctx.scalars_ptr();
      a.unblock = unblock;
      a.self = i;
      rt::LaunchSpec spec{.name = "n" + std::to_string(i),
                          .accesses = {rt::write(values, si * sizeof(std::uint64_t), sizeof(std::uint64_t)),
                                       rt::read(control), rt::read(ctx.scalars())}};
      for (int dep : dag->deps[si]) {
        const auto sd = static_cast<std::size_t>(dep);
        if (dag->stream[sd] != dag->stream[si]) s.wait(node_done[sd]);
        a.deps[static_cast<std::size_t>(a.ndeps++)] = dep;
        spec.accesses.push_back(rt::read(values, sd * sizeof(std::uint64_t), sizeof(std::uint64_t)));
      }
      rt::launch(s, dag_node(), std::move(spec), a);
      s.record(node_done[si]);
    }
    for (std::size_t k = 0; k < side.size(); ++k) {
      side[k].record(joins[k]);
      origin.wait(joins[k]);
    }
    origin.copy(ctx.output("values").slice(), values.slice(), "values out");
  }
};

enum class Kind { kFault, kThrowingErrorCallback, kTimeout };

bool full_matrix() {
  const char* v = std::getenv("SG_FAULT_MATRIX");
  return v != nullptr && std::string(v) == "full";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kSanitizerSlowdown = 4;  // the asan and tsan presets run a quarter of the fault cases
#else
constexpr int kSanitizerSlowdown = 1;
#endif

/// Note [Fault matrix size]: the seeds a kind runs by default, as a stride
/// over the 20 (each position starts at another seed, so that every seed
/// still meets many positions). A timeout case costs its deadline (150 ms).
int seed_stride(Kind k) {
  if (full_matrix()) return 1;
  switch (k) {
    case Kind::kFault:
      return kSanitizerSlowdown;
    case Kind::kThrowingErrorCallback:
      return 4 * kSanitizerSlowdown;
    case Kind::kTimeout:
      return 20;
  }
  return 1;
}

int thread_count() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// One case: `kind` injected at node `node` in step `step` under `seed`.
/// Returns a description of what broke ("" if nothing), so that the caller
/// can stop at the first broken case instead of printing thousands.
void run_case(Kind kind, int node, std::uint64_t seed) {
  SCOPED_TRACE("node n" + std::to_string(node) + ", shuffle seed " + std::to_string(seed));
  const Dag dag = random_dag(seed);
  rt::BackendOptions bo;
  bo.shuffle_seed = seed;
  bo.bind_workers = false;
  auto backend = rt::Backend::create("host", bo);
  std::atomic<int> unblock{0};

  struct Reports {
    std::mutex m;
    std::vector<rt::StepError> errors;
  };
  auto reports = std::make_shared<Reports>();
  rt::ExecutorOptions o;
  o.backend_instance = backend;
  o.max_in_flight = 2;
  o.launch_ahead = 2;
  // Timeouts block step 0, as an eager warm-up (odd seeds) or as the first
  // graph replay (even seeds, no warm-up): no earlier step runs under the
  // deadline, where a loaded machine could time it out too. The fault kinds
  // have one eager warm-up (step 0) to inject into.
  o.warmup = kind == Kind::kTimeout ? static_cast<int>(seed % 2) : 1;
  if (kind == Kind::kTimeout) o.deadline = std::chrono::milliseconds(150);
  o.on_error = [reports, kind, seed](const rt::StepError& e) {
    {
      std::lock_guard lock(reports->m);
      reports->errors.push_back(e);
    }
    if (kind == Kind::kThrowingErrorCallback) {
      if (seed % 2 == 0) throw std::runtime_error("the error callback broke");
      throw 42;  // not a std::exception
    }
  };
  // The step the injection happens in: 0 is the eager warm-up, 1 the first
  // graph replay (its capture runs first), 2 a later replay.
  const std::int64_t inject_step = kind == Kind::kTimeout ? 0 : static_cast<std::int64_t>(seed % 3);
  DagStep step(dag, backend, &unblock);
  auto ex = std::make_unique<rt::StepExecutor>(dag_spec(), std::ref(step), o);

  auto replay_with = [&](Inject what) {
    auto slot = ex->acquire_inputs();
    auto control = slot.input_span<std::int32_t>("control");
    control[0] = what == Inject::kNone ? -1 : node;
    control[1] = static_cast<std::int32_t>(what);
    return ex->replay(std::move(slot));
  };
  for (std::int64_t s = 0; s < inject_step; ++s) {
    auto h = replay_with(Inject::kNone);
    ASSERT_EQ(h.wait_for(kBound), rt::ReplayStatus::kDone) << "step " << s;
    const auto out = h.output_span<std::uint64_t>("values");
    ASSERT_EQ(std::vector<std::uint64_t>(out.begin(), out.end()), serial_values(dag, static_cast<std::uint64_t>(s)))
        << "step " << s << " differs from the serial evaluation";
    h.release();
  }
  auto bad = replay_with(kind == Kind::kTimeout ? Inject::kBlock : Inject::kThrow);
  // A second step pipelined behind it: it must fail or be cancelled without
  // a second report, or be refused at the call if the failure came first.
  rt::ReplayHandle next;
  try {
    next = replay_with(Inject::kNone);
  } catch (const sg::InvalidState& e) {
    EXPECT_NE(std::string(e.what()).find("failed at step " + std::to_string(inject_step)), std::string::npos)
        << e.what();
  }
  if (kind == Kind::kTimeout) {
    // The watchdog fails the replay while its node still blocks; only then
    // does the test let the node go, and wait for the device to drain, so
    // that close() finds nothing running (it would leave the memory to a
    // step that may never end: Note [Closing a wedged executor]).
    const auto st = bad.wait_for(kBound);
    ASSERT_EQ(st, rt::ReplayStatus::kFailed) << "the watchdog did not fire";
    unblock.store(1, std::memory_order_release);
    backend->synchronize_device(0);
  } else {
    ASSERT_EQ(bad.wait_for(kBound), rt::ReplayStatus::kFailed);
  }
  if (next.valid()) {
    const auto st = next.wait_for(kBound);
    ASSERT_TRUE(st.has_value()) << "the step behind the failed one hangs";
    // Behind a fault nothing runs: failed or cancelled. Behind a timeout
    // the step was already on the device and runs once the blocked node
    // goes on, so it may also end done (and then it computed what it should).
    const bool done_ok = kind == Kind::kTimeout && *st == rt::ReplayStatus::kDone;
    EXPECT_TRUE(*st == rt::ReplayStatus::kFailed || *st == rt::ReplayStatus::kCancelled || done_ok)
        << "the step behind the failed one ended " << rt::to_string(*st);
    if (done_ok) {
      const auto out = next.output_span<std::uint64_t>("values");
      EXPECT_EQ(std::vector<std::uint64_t>(out.begin(), out.end()),
                serial_values(dag, static_cast<std::uint64_t>(inject_step + 1)));
    }
  }
  // The executor is failed, says where, and refuses every later call.
  EXPECT_EQ(ex->state(), rt::ExecutorState::kFailed);
  const auto failure = ex->failure();
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(failure->step, inject_step);
  const std::string where = "failed at step " + std::to_string(inject_step);
  sgtest::expect_throw_with<sg::InvalidState>([&] { (void)ex->acquire_inputs(); }, {where});
  sgtest::expect_throw_with<sg::InvalidState>([&] { (void)ex->replay(); }, {where});
  sgtest::expect_throw_with<sg::InvalidState>([&] { ex->prepare(); }, {where});
  sgtest::expect_throw_with<sg::InvalidState>([&] { (void)ex->check_against_eager(1); }, {where});
  std::uint64_t host = 0;
  sgtest::expect_throw_with<sg::InvalidState>([&] { ex->read_state("untouched", &host, sizeof host); }, {where});
  sgtest::expect_throw_with<sg::InvalidState>([&] { ex->write_state("untouched", &host, sizeof host); }, {where});
  bad.release();
  if (next.valid()) next.release();
  ex->close();
  ex.reset();  // the executor's thread is joined: no report can come later

  std::lock_guard lock(reports->m);
  ASSERT_EQ(reports->errors.size(), 1u) << "exactly one error callback per failed executor";
  const auto& e = reports->errors.front();
  EXPECT_EQ(e.step, inject_step);
  if (kind == Kind::kTimeout) {
    EXPECT_EQ(e.kind, rt::StepErrorKind::kTimeout) << e.message;
  } else {
    EXPECT_EQ(e.kind, rt::StepErrorKind::kDeviceFault) << e.message;
    ASSERT_TRUE(e.node.has_value()) << e.message;
    EXPECT_EQ(*e.node, "n" + std::to_string(node));
    EXPECT_NE(e.message.find("fault injected at node n" + std::to_string(node)), std::string::npos) << e.message;
  }
  EXPECT_EQ(e.step, failure->step);
}

void run_matrix(Kind kind) {
  // The executor warns once per failure; thousands of warnings are noise.
  sg::log::set_sink([](sg::log::Level, sg::log::Subsystem, std::string_view) {});
  // One case first, uncounted: threads a runtime starts once and keeps
  // (ThreadSanitizer's background thread) then exist before the count.
  run_case(kind, 0, 1);
  const int threads_before = thread_count();
  const auto start = std::chrono::steady_clock::now();
  int cases = 0;
  for (int node = 0; node < kNodes; ++node) {
    for (int seed = node % seed_stride(kind); seed < kSeeds; seed += seed_stride(kind)) {
      run_case(kind, node, static_cast<std::uint64_t>(seed) + 1);
      ++cases;
      if (::testing::Test::HasFailure()) {
        sg::log::set_sink(nullptr);
        FAIL() << "stopped at the first broken case (" << cases << " run)";
      }
    }
  }
  sg::log::set_sink(nullptr);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  // Threads are joined when a backend dies; the reaper may still be joining
  // the last one's, so allow it a moment.
  const auto until = std::chrono::steady_clock::now() + kBound;
  while (thread_count() > threads_before && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(thread_count(), threads_before) << "threads gained over the matrix";
  std::printf("fault matrix: %d case(s) in %lld ms\n", cases, static_cast<long long>(ms.count()));
  ::testing::Test::RecordProperty("cases", cases);
}

TEST(FaultMatrix, AFaultAtEveryNodeFailsTheExecutorOnceNamingStepAndNode) {
  run_matrix(Kind::kFault);
}

TEST(FaultMatrix, AnErrorCallbackThatThrowsIsCalledOnceAndTheExecutorStillFails) {
  run_matrix(Kind::kThrowingErrorCallback);
}

TEST(FaultMatrix, ANodeBlockedPastTheDeadlineTimesTheStepOutOnce) {
  run_matrix(Kind::kTimeout);
}

// A completion callback that throws is reported once (kCallback, its step)
// and does not fail the executor (executor.h): the next steps still run and
// equal the serial evaluation.
TEST(FaultMatrix, ACompletionCallbackThatThrowsIsReportedOnceAndTheExecutorGoesOn) {
  for (std::uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE("shuffle seed " + std::to_string(seed));
    const Dag dag = random_dag(seed);
    rt::BackendOptions bo;
    bo.shuffle_seed = seed;
    bo.bind_workers = false;
    auto backend = rt::Backend::create("host", bo);
    std::atomic<int> unblock{1};
    std::mutex m;
    std::vector<rt::StepError> errors;
    rt::ExecutorOptions o;
    o.backend_instance = backend;
    o.warmup = 1;
    o.on_error = [&](const rt::StepError& e) {
      std::lock_guard lock(m);
      errors.push_back(e);
    };
    DagStep step(dag, backend, &unblock);
    rt::StepExecutor ex(dag_spec(), std::ref(step), o);
    const std::int64_t throwing_step = static_cast<std::int64_t>(seed % 3);
    for (std::int64_t s = 0; s < 4; ++s) {
      auto slot = ex.acquire_inputs();
      slot.input_span<std::int32_t>("control")[0] = -1;
      auto h = ex.replay(std::move(slot));
      std::promise<void> called;
      h.on_complete([&, s](const rt::ReplayHandle&) {
        called.set_value();
        if (s == throwing_step) throw std::runtime_error("completion callback broke");
      });
      ASSERT_EQ(h.wait_for(kBound), rt::ReplayStatus::kDone);
      ASSERT_EQ(called.get_future().wait_for(kBound), std::future_status::ready);
      const auto out = h.output_span<std::uint64_t>("values");
      ASSERT_EQ(std::vector<std::uint64_t>(out.begin(), out.end()), serial_values(dag, static_cast<std::uint64_t>(s)));
      h.release();
    }
    ex.synchronize();
    EXPECT_NE(ex.state(), rt::ExecutorState::kFailed);
    ex.close();
    std::lock_guard lock(m);
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].kind, rt::StepErrorKind::kCallback);
    EXPECT_EQ(errors[0].step, throwing_step);
    EXPECT_NE(errors[0].message.find("completion callback broke"), std::string::npos) << errors[0].message;
  }
}

}  // namespace
