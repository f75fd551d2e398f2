// StepExecutor tests, typed over the backends like the conformance suite:
// the host instance runs everywhere (label cpu), the cuda one on a GPU
// (label gpu). No wall-clock thresholds: ordering is shown with latches.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>

#include <stepgraph/core/log.h>
#include <stepgraph/runtime/executor.h>

#include "backend_tags.h"
#include "executor_kernels.h"
#include "expect_throw.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

constexpr std::size_t kN = 256;

template <class Tag>
class Executor : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Tag::kKind == rt::BackendKind::kCuda) {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    }
  }
  rt::ExecutorOptions options() const {
    rt::ExecutorOptions o;
    o.backend = Tag::kKind == rt::BackendKind::kCuda ? "cuda" : "host";
    o.backend_options.shuffle_seed = 0x5eed;
    return o;
  }
  /// x (input, kN floats), y (output, kN floats), w (state, kN floats).
  static rt::StepSpec spec() {
    rt::StepSpec s;
    s.inputs = {{"x", kN * sizeof(float)}, {"latch", 2 * sizeof(std::int32_t), rt::DType::kInt32}};
    s.outputs = {{"y", kN * sizeof(float)}, {"seen", 4 * sizeof(float)}};
    s.state = {{"w", kN * sizeof(float)}};
    s.scratch = {{"tmp", kN * sizeof(float)}};
    return s;
  }
};

using sgtest::Backends;
TYPED_TEST_SUITE(Executor, Backends);

// y = x + w (through scratch), w -= lr * x; seen = scalars.
void training_step(rt::StepContext& ctx) {
  const auto& x = ctx.input("x");
  const auto& y = ctx.output("y");
  const auto& w = ctx.state("w");
  const auto& tmp = ctx.scratch("tmp");
  auto s = ctx.stream();
  rt::launch(s, sgtest::fill_f32(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(tmp)}},
             tmp.data<float>(), kN, 0.0f);
  rt::launch(s, sgtest::axpy_f32(),
             {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(tmp), rt::read(x)}}, tmp.data<float>(),
             static_cast<const float*>(x.data<float>()), kN, 1.0f);
  rt::launch(s, sgtest::axpy_f32(),
             {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(tmp), rt::read(w)}}, tmp.data<float>(),
             static_cast<const float*>(w.data<float>()), kN, 1.0f);
  s.copy(y.slice(), tmp.slice(), "y <- tmp");
  rt::launch(
      s, sgtest::sgd(),
      {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(w), rt::read(x), rt::read(ctx.scalars())}},
      w.data<float>(), static_cast<const float*>(x.data<float>()), kN, ctx.scalars_ptr());
  rt::launch(s, sgtest::read_scalars(), {.accesses = {rt::write(ctx.output("seen")), rt::read(ctx.scalars())}},
             ctx.output("seen").data<float>(), ctx.scalars_ptr());
}

// Waits for the latch input, then writes its value to seen[0].
void latched_step(rt::StepContext& ctx) {
  const auto& latch = ctx.input("latch");
  rt::launch(ctx.stream(), sgtest::wait_flag(), {.name = "latch", .accesses = {rt::read_write(latch)}},
             static_cast<volatile std::int32_t*>(latch.data<std::int32_t>()), latch.data<std::int32_t>() + 1);
  training_step(ctx);
}

void fill(const rt::InputSlot& slot, float v) {
  for (auto& f : slot.input_span<float>("x")) f = v;
}

TYPED_TEST(Executor, WarmupsUpdateCaptureExecutesNothingReplaysMatchASerialLoop) {
  auto o = this->options();
  o.warmup = 3;
  rt::StepExecutor ex(this->spec(), training_step, o);
  EXPECT_EQ(ex.state(), rt::ExecutorState::kCreated);
  const std::vector<float> w0(kN, 0.5f);
  ex.write_state("w", w0.data(), w0.size() * sizeof(float));
  // Serial reference: y = x + w; w -= lr * x.
  std::vector<float> w = w0;
  for (int step = 0; step < 8; ++step) {
    const float lr = 0.01f * static_cast<float>(step + 1);
    const float xv = 1.0f + static_cast<float>(step);
    ex.set_learning_rate(lr);
    auto slot = ex.acquire_inputs();
    fill(slot, xv);
    auto h = ex.replay(std::move(slot));
    ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone) << (h.error() ? h.error()->message : "");
    EXPECT_EQ(h.step(), step);
    for (std::size_t i = 0; i < kN; ++i) {
      ASSERT_EQ(h.output_span<float>("y")[i], xv + w[i]) << "step " << step;
      w[i] -= lr * xv;
    }
    EXPECT_EQ(h.output_span<float>("seen")[0], lr);
    EXPECT_EQ(h.output_span<float>("seen")[1], static_cast<float>(step));
    h.release();
    EXPECT_EQ(ex.state(), step < 3 ? rt::ExecutorState::kWarmingUp : rt::ExecutorState::kReady);
  }
  std::vector<float> final_w(kN);
  ex.read_state("w", final_w.data(), final_w.size() * sizeof(float));
  EXPECT_EQ(final_w, w);
  EXPECT_EQ(ex.shape_buckets(), 1u);
}

TYPED_TEST(Executor, ReplayReturnsBeforeTheStepsFirstNodeStarts) {
  auto o = this->options();
  o.warmup = 0;
  rt::StepExecutor ex(this->spec(), latched_step, o);
  ex.prepare();  // capture executes nothing: the closed latch does not block it
  EXPECT_EQ(ex.state(), rt::ExecutorState::kReady);
  auto slot = ex.acquire_inputs();
  fill(slot, 1.0f);
  auto* latch = static_cast<std::int32_t*>(slot.input("latch").host_data());
  latch[0] = 0;
  latch[1] = 0;
  auto h = ex.replay(std::move(slot));
  // replay() has returned; the step's first node waits on a latch opened only now.
  EXPECT_FALSE(h.poll());
  EXPECT_EQ(std::atomic_ref<std::int32_t>(latch[1]).load(), 0);
  std::atomic_ref<std::int32_t>(latch[0]).store(5);
  EXPECT_EQ(h.wait(), rt::ReplayStatus::kDone);
  EXPECT_EQ(latch[1], 5);
  h.release();
}

TYPED_TEST(Executor, SlotsAreOwnedUntilReleaseAndOnBusyThrows) {
  auto o = this->options();
  o.warmup = 1;
  o.max_in_flight = 2;
  o.on_busy = rt::OnBusy::kThrow;
  rt::StepExecutor ex(this->spec(), training_step, o);
  const float w0 = 0.25f;
  const std::vector<float> w(kN, w0);
  ex.write_state("w", w.data(), w.size() * sizeof(float));  // lr is 0: w stays
  auto a = ex.acquire_inputs();
  auto b = ex.acquire_inputs();
  EXPECT_NE(a.index(), b.index());
  EXPECT_THROW((void)ex.acquire_inputs(), sg::InvalidState);
  fill(a, 1.0f);
  fill(b, 2.0f);
  auto ha = ex.replay(std::move(a));
  auto hb = ex.replay(std::move(b));
  ASSERT_EQ(ha.wait(), rt::ReplayStatus::kDone);
  ASSERT_EQ(hb.wait(), rt::ReplayStatus::kDone);
  // Both slots' outputs stay valid (and distinct) until released.
  EXPECT_EQ(ha.output_span<float>("y")[0], 1.0f + w0);
  EXPECT_EQ(hb.output_span<float>("y")[0], 2.0f + w0);
  EXPECT_THROW((void)ex.acquire_inputs(), sg::InvalidState);  // still busy until release
  ha.release();
  EXPECT_THROW((void)ha.output("y"), sg::InvalidState);
  auto c = ex.acquire_inputs();  // the released slot
  EXPECT_EQ(c.index(), 0);
  hb.release();
}

TYPED_TEST(Executor, OnBusyBlockWaitsForARelease) {
  auto o = this->options();
  o.warmup = 0;
  o.max_in_flight = 1;
  rt::StepExecutor ex(this->spec(), training_step, o);
  auto h = ex.replay();
  ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
  std::atomic<bool> acquired{false};
  std::thread t([&] {
    auto s = ex.acquire_inputs();  // blocks: the only slot is held by h
    acquired = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(acquired.load());
  h.release();
  t.join();
  EXPECT_TRUE(acquired.load());
}

TYPED_TEST(Executor, CallbacksRunOnTheExecutorsThreadAndMayReplay) {
  auto o = this->options();
  o.warmup = 0;
  o.max_in_flight = 3;
  rt::StepExecutor ex(this->spec(), training_step, o);
  std::mutex m;
  std::vector<std::thread::id> threads;
  std::vector<rt::ReplayHandle> chained;
  std::promise<void> all_done;
  auto h = ex.replay();
  h.on_complete([&](const rt::ReplayHandle& done) {
    std::lock_guard lock(m);
    threads.push_back(std::this_thread::get_id());
    done.release();
    auto next = ex.replay();  // re-entrant
    chained.push_back(next);
    next.on_complete([&](const rt::ReplayHandle& d2) {
      std::lock_guard lock2(m);
      threads.push_back(std::this_thread::get_id());
      d2.release();
      all_done.set_value();
    });
  });
  ASSERT_EQ(all_done.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
  std::lock_guard lock(m);
  ASSERT_EQ(threads.size(), 2u);
  EXPECT_NE(threads[0], std::this_thread::get_id());
  EXPECT_EQ(threads[0], threads[1]);
  EXPECT_EQ(chained.at(0).step(), 1);
}

TYPED_TEST(Executor, ACallbackExceptionIsCaughtAndReported) {
  auto o = this->options();
  o.warmup = 0;
  std::promise<rt::StepError> reported;
  o.on_error = [&](const rt::StepError& e) { reported.set_value(e); };
  rt::StepExecutor ex(this->spec(), training_step, o);
  auto h = ex.replay();
  h.on_complete([](const rt::ReplayHandle&) { throw std::runtime_error("user callback broke"); });
  auto f = reported.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const auto e = f.get();
  EXPECT_EQ(e.kind, rt::StepErrorKind::kCallback);
  EXPECT_NE(e.message.find("user callback broke"), std::string::npos);
  EXPECT_EQ(h.wait(), rt::ReplayStatus::kDone);
  h.release();
  EXPECT_NE(ex.state(), rt::ExecutorState::kFailed);  // a callback's error does not fail the executor
}

TYPED_TEST(Executor, TheWatchdogFailsAReplayPastItsDeadline) {
  auto o = this->options();
  o.warmup = 0;
  o.deadline = std::chrono::milliseconds(50);
  std::promise<rt::StepError> reported;
  o.on_error = [&](const rt::StepError& e) { reported.set_value(e); };
  rt::StepExecutor ex(this->spec(), latched_step, o);
  ex.prepare();
  auto slot = ex.acquire_inputs();
  auto latch = static_cast<std::int32_t*>(slot.input("latch").host_data());
  latch[0] = 0;
  auto h = ex.replay(std::move(slot));
  auto f = reported.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const auto e = f.get();
  EXPECT_EQ(e.kind, rt::StepErrorKind::kTimeout);
  EXPECT_EQ(e.step, 0);
  EXPECT_EQ(h.wait(), rt::ReplayStatus::kFailed);
  EXPECT_EQ(ex.state(), rt::ExecutorState::kFailed);
  EXPECT_THROW((void)ex.replay(), sg::InvalidState);
  std::atomic_ref<std::int32_t>(latch[0]).store(1);  // let the device drain before close
}

// A step that never finishes (its first kernel spins on a latch: on CUDA a
// kernel reading mapped host memory, on the host backend a worker): the
// watchdog reports it once, and close() returns within a bound while the
// step still spins, instead of waiting for the device (Note [Closing a wedged
// executor]). The latch is opened only after close(), so that the kernel
// ends and the process can exit.
TYPED_TEST(Executor, CloseAfterATimeoutReturnsWhileTheStepStillSpins) {
  auto o = this->options();
  o.warmup = 0;
  o.deadline = std::chrono::milliseconds(300);
  std::atomic<int> errors{0};
  std::promise<rt::StepError> first;
  o.on_error = [&](const rt::StepError& e) {
    if (errors.fetch_add(1) == 0) first.set_value(e);
  };
  auto ex = std::make_unique<rt::StepExecutor>(this->spec(), latched_step, o);
  ex->prepare();
  auto slot = ex->acquire_inputs();
  // The test's own reference keeps the latch memory alive whatever close() does.
  const rt::Buffer latch_buffer = rt::sub_buffer(slot.input("latch"), 0, 2 * sizeof(std::int32_t));
  auto* latch = static_cast<std::int32_t*>(latch_buffer.host_data());
  latch[0] = 0;
  latch[1] = 0;
  auto h = ex->replay(std::move(slot));
  auto f = first.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const auto e = f.get();
  EXPECT_EQ(e.kind, rt::StepErrorKind::kTimeout);
  EXPECT_EQ(e.step, 0);
  EXPECT_NE(e.message.find("leaked"), std::string::npos) << e.message;
  EXPECT_EQ(h.wait(), rt::ReplayStatus::kFailed);
  const auto before = std::chrono::steady_clock::now();
  ex->close();
  ex.reset();
  const auto took = std::chrono::steady_clock::now() - before;
  EXPECT_LT(took, std::chrono::seconds(10)) << "close() waited for a step that does not finish";
  EXPECT_EQ(std::atomic_ref<std::int32_t>(latch[1]).load(), 0) << "the step must still be spinning";
  EXPECT_EQ(errors.load(), 1) << "one report: the timeout";
  // Open the latch: the kernel writes the value back and ends.
  std::atomic_ref<std::int32_t>(latch[0]).store(3);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::atomic_ref<std::int32_t>(latch[1]).load() != 3 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(std::atomic_ref<std::int32_t>(latch[1]).load(), 3) << "the spinning kernel never ended";
}

TYPED_TEST(Executor, AFaultFailsTheExecutorWithTheStepAndSaysSoOnEveryCall) {
  if (sgtest::fault_would_poison_other_tests(TypeParam::kKind)) GTEST_SKIP() << sgtest::kRunFaultTestsAlone;
  auto o = this->options();
  o.warmup = 1;
  std::promise<rt::StepError> reported;
  std::thread::id reporting_thread;
  o.on_error = [&](const rt::StepError& e) {
    reporting_thread = std::this_thread::get_id();
    reported.set_value(e);
  };
  bool faulty = false;
  rt::StepExecutor ex(
      this->spec(),
      [&](rt::StepContext& ctx) {
        training_step(ctx);
        if (faulty) {
          rt::launch(ctx.stream(), sgtest::fault(), {.name = "bad-kernel", .accesses = {rt::write(ctx.scratch("tmp"))}},
                     ctx.scratch("tmp").data<std::int32_t>());
        }
      },
      o);
  auto h0 = ex.replay();  // warm-up, fine
  ASSERT_EQ(h0.wait(), rt::ReplayStatus::kDone);
  h0.release();
  faulty = true;  // the capture (next replay) records the faulting kernel
  auto h1 = ex.replay();
  EXPECT_EQ(h1.wait(), rt::ReplayStatus::kFailed);
  auto f = reported.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  const auto e = f.get();
  EXPECT_EQ(e.kind, rt::StepErrorKind::kDeviceFault);
  EXPECT_EQ(e.step, 1);
  // Wherever the fault surfaced (the executor's poll, or the next launch on
  // this thread), the callback runs on the executor's thread.
  EXPECT_NE(reporting_thread, std::this_thread::get_id());
  if (TypeParam::kKind == rt::BackendKind::kHost) {
    ASSERT_TRUE(e.node.has_value());
    EXPECT_EQ(*e.node, "bad-kernel");
  }
  ASSERT_TRUE(h1.error().has_value());
  EXPECT_EQ(h1.error()->step, 1);
  EXPECT_EQ(ex.state(), rt::ExecutorState::kFailed);
  sgtest::expect_throw_with<sg::InvalidState>([&] { (void)ex.acquire_inputs(); }, {"failed at step 1"});
  EXPECT_THROW((void)ex.check_against_eager(1), sg::InvalidState);
}

TYPED_TEST(Executor, ScalarChangesAreSeenByTheNextReplay) {
  auto o = this->options();
  o.warmup = 1;
  rt::StepExecutor ex(this->spec(), training_step, o);
  for (float lr : {0.5f, 0.25f, 2.0f}) {
    ex.set_learning_rate(lr);
    ex.set_loss_scale(lr * 4);
    auto h = ex.replay();
    ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
    EXPECT_EQ(h.output_span<float>("seen")[0], lr);
    EXPECT_EQ(h.output_span<float>("seen")[2], lr * 4);
    h.release();
  }
}

TYPED_TEST(Executor, TheCheckerCatchesAHostValueBakedIntoTheGraph) {
  auto o = this->options();
  o.warmup = 1;
  // Correct: the learning rate is read from device-visible scalars.
  rt::StepExecutor good(this->spec(), training_step, o);
  good.set_learning_rate(0.1f);
  auto c0 = good.check_against_eager(1);  // captures with lr 0.1
  EXPECT_EQ(c0.worst(), 0.0);
  good.set_learning_rate(0.7f);
  {
    auto s = good.acquire_inputs();
    fill(s, 1.0f);
  }
  auto c1 = good.check_against_eager(3);
  EXPECT_EQ(c1.worst(), 0.0);
  // Wrong: the step passes the host copy of the learning rate by value.
  rt::StepExecutor bad(
      this->spec(),
      [](rt::StepContext& ctx) {
        const auto& w = ctx.state("w");
        const auto& x = ctx.input("x");
        rt::launch(ctx.stream(), sgtest::axpy_f32(), {.accesses = {rt::read_write(w), rt::read(x)}}, w.data<float>(),
                   static_cast<const float*>(x.data<float>()), kN, -ctx.host_scalars().learning_rate);
      },
      o);
  {
    auto s = bad.acquire_inputs();
    fill(s, 1.0f);
  }
  bad.set_learning_rate(0.1f);
  EXPECT_EQ(bad.check_against_eager(1).worst(), 0.0) << "same lr as at capture: no difference yet";
  bad.set_learning_rate(0.7f);
  const auto c2 = bad.check_against_eager(2);
  EXPECT_GT(c2.max_abs_diff.at("w"), 0.5) << "the baked learning rate must show";
}

TYPED_TEST(Executor, ShapeBucketsAreCapturedOnFirstUseAndBounded) {
  auto o = this->options();
  o.warmup = 0;
  o.max_shape_buckets = 2;
  std::vector<std::string> warnings;
  std::mutex wm;
  sg::log::set_sink([&](sg::log::Level l, sg::log::Subsystem, std::string_view msg) {
    std::lock_guard lock(wm);
    if (l == sg::log::Level::kWarn) warnings.emplace_back(msg);
  });
  rt::StepExecutor ex(
      this->spec(),
      [](rt::StepContext& ctx) {
        // The key is the number of leading elements of y set to the key.
        const auto n = static_cast<std::size_t>(ctx.shape_key());
        rt::launch(ctx.stream(), sgtest::fill_f32(), {.accesses = {rt::write(ctx.output("y"))}},
                   ctx.output("y").data<float>(), kN, 0.0f);
        rt::launch(ctx.stream(), sgtest::fill_f32(), {.accesses = {rt::write(ctx.output("y"), 0, n * sizeof(float))}},
                   ctx.output("y").data<float>(), n, static_cast<float>(n));
      },
      o);
  for (std::uint64_t key : {3u, 5u, 3u, 9u, 5u}) {
    auto h = ex.replay(key);
    ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
    auto y = h.output_span<float>("y");
    for (std::size_t i = 0; i < kN; ++i) ASSERT_EQ(y[i], i < key ? static_cast<float>(key) : 0.0f) << key;
    h.release();
    EXPECT_LE(ex.shape_buckets(), 2u);
  }
  sg::log::set_sink(nullptr);
  std::lock_guard lock(wm);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings.front().find("max_shape_buckets"), std::string::npos);
}

TYPED_TEST(Executor, QueuedReplaysCanBeCancelled) {
  auto o = this->options();
  o.warmup = 0;
  o.max_in_flight = 3;
  o.launch_ahead = 1;
  rt::StepExecutor ex(this->spec(), latched_step, o);
  ex.prepare();
  std::vector<std::int32_t*> latches;
  std::vector<rt::ReplayHandle> hs;
  for (int i = 0; i < 3; ++i) {
    auto s = ex.acquire_inputs();
    auto* l = static_cast<std::int32_t*>(s.input("latch").host_data());
    l[0] = 0;
    latches.push_back(l);
    hs.push_back(ex.replay(std::move(s)));
  }
  EXPECT_EQ(hs[0].status(), rt::ReplayStatus::kRunning);
  EXPECT_EQ(hs[2].status(), rt::ReplayStatus::kQueued);
  EXPECT_TRUE(hs[2].cancel());
  EXPECT_EQ(hs[2].status(), rt::ReplayStatus::kCancelled);
  EXPECT_FALSE(hs[0].cancel()) << "a replay on the device cannot be cancelled";
  for (auto* l : latches) std::atomic_ref<std::int32_t>(l[0]).store(1);
  EXPECT_EQ(hs[0].wait(), rt::ReplayStatus::kDone);
  EXPECT_EQ(hs[1].wait(), rt::ReplayStatus::kDone);
  EXPECT_EQ(hs[1].step(), 1);
  auto s = ex.acquire_inputs();  // the cancelled replay's slot came back
  EXPECT_EQ(s.index(), 2);
}

TYPED_TEST(Executor, DestroyingTheExecutorWaitsForReplaysInFlight) {
  auto o = this->options();
  o.warmup = 0;
  rt::ReplayHandle h;
  std::int32_t* latch = nullptr;
  std::thread opener;
  {
    rt::StepExecutor ex(this->spec(), latched_step, o);
    ex.prepare();
    auto s = ex.acquire_inputs();
    latch = static_cast<std::int32_t*>(s.input("latch").host_data());
    latch[0] = 0;
    h = ex.replay(std::move(s));
    opener = std::thread([latch] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      std::atomic_ref<std::int32_t>(latch[0]).store(1);
    });
  }  // ~StepExecutor waits for the replay, then releases exec, graph, memory
  opener.join();
  EXPECT_EQ(h.status(), rt::ReplayStatus::kDone);
  EXPECT_THROW((void)h.output("y"), sg::InvalidState);
}

TYPED_TEST(Executor, CopyInInputsBecomeACopyNodeInsideTheGraph) {
  auto spec = this->spec();
  spec.inputs[0].mode = rt::InputMode::kCopyIn;
  auto o = this->options();
  o.warmup = 0;
  rt::StepExecutor ex(spec, training_step, o);
  auto s = ex.acquire_inputs();
  fill(s, 4.0f);
  auto h = ex.replay(std::move(s));
  ASSERT_EQ(h.wait(), rt::ReplayStatus::kDone);
  EXPECT_EQ(h.output_span<float>("y")[7], 4.0f);
  const auto info = ex.graph_info(0, 0);
  const auto copy = info.find("copy-in x");
  EXPECT_EQ(info.nodes[copy].copy_kind, rt::CopyKind::kHostToDevice);
  EXPECT_EQ(info.nodes[copy].kind, rt::NodeKind::kMemcpy);
  const auto m = ex.memory_report();
  EXPECT_GE(m.arena_bytes, m.state_bytes + 2 * m.per_slot_device);
  EXPECT_EQ(m.per_slot_device, kN * sizeof(float) /*tmp*/ + kN * sizeof(float) /*x copy*/);
  EXPECT_EQ(m.pinned_bytes, 2 * m.per_slot_pinned);
  h.release();
}

TYPED_TEST(Executor, BadOptionsAreTypedErrors) {
  auto o = this->options();
  o.max_in_flight = 0;
  EXPECT_THROW(rt::StepExecutor(this->spec(), training_step, o), sg::InvalidArgument);
  o = this->options();
  o.device = 99;
  EXPECT_THROW(rt::StepExecutor(this->spec(), training_step, o), sg::InvalidArgument);
  auto spec = this->spec();
  spec.state.push_back({"w", 4});
  EXPECT_THROW(rt::StepExecutor(spec, training_step, this->options()), sg::InvalidArgument);
  EXPECT_THROW(rt::StepExecutor(this->spec(), nullptr, this->options()), sg::InvalidArgument);
}

}  // namespace
