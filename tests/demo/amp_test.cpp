// The AMP demo (issue 18, items 5 and 6): the GradScaler inside the
// captured step skips the optimizer on overflow and moves the scale exactly
// as PyTorch's GradScaler rules say, replay equals eager bit for bit, and a
// replayed step makes no host synchronisation.
//
// The reference below is written here, independently of the kernels: the
// MLP step in textbook form with binary16 rounding (GCC's _Float16) at the
// storage points docs/amp.md lists, and torch.amp.GradScaler's update rule
// (torch/amp/grad_scaler.py, _amp_update_scale_).
//
// Built for the host backend (label cpu).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <stepgraph/demo/amp.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/executor.h>

namespace {

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

float h(float v) {
  return static_cast<float>(static_cast<_Float16>(v));
}

/// PyTorch's GradScaler state and update rule.
struct ReferenceScaler {
  float scale = 65536.0f;
  float growth_factor = 2.0f;
  float backoff_factor = 0.5f;
  int growth_interval = 2000;
  int growth_tracker = 0;

  void update(bool found_inf) {
    if (found_inf) {
      scale *= backoff_factor;
      growth_tracker = 0;
      return;
    }
    const int successful = growth_tracker + 1;
    if (successful == growth_interval) {
      const float grown = scale * growth_factor;
      if (std::isfinite(grown)) scale = grown;
      growth_tracker = 0;
    } else {
      growth_tracker = successful;
    }
  }
};

/// One hidden ReLU layer and a linear output, mean squared error, SGD, in
/// mixed precision: binary16 activations and gradients, float32 master
/// weights and sums, the loss gradient scaled by `scale`.
struct ReferenceAmpMlp {
  int in = 0, hid = 0;
  std::vector<float> w1, b1, w2;
  float b2 = 0;

  struct Result {
    float loss = 0;
    bool found_inf = false;
  };

  Result step(const std::vector<float>& x, const std::vector<float>& y, int batch, float lr, float scale) {
    std::vector<float> act(static_cast<std::size_t>(batch * hid)), o(static_cast<std::size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      for (int j = 0; j < hid; ++j) {
        float z = h(b1[j]);
        for (int k = 0; k < in; ++k) {
          const float p = h(x[b * in + k]) * h(w1[j * in + k]);
          z = z + p;
        }
        act[b * hid + j] = h(z > 0.0f ? z : 0.0f);
      }
      float out = h(b2);
      for (int j = 0; j < hid; ++j) {
        const float p = act[b * hid + j] * h(w2[j]);
        out = out + p;
      }
      o[b] = h(out);
    }
    float sse = 0.0f;
    for (int b = 0; b < batch; ++b) {
      const float d = o[b] - y[b];
      const float sq = d * d;
      sse = sse + sq;
    }
    Result r;
    r.loss = sse / static_cast<float>(batch);

    // Backward of the scaled loss; sums over the batch in order.
    std::vector<float> gw1(w1.size(), 0.0f), gb1(b1.size(), 0.0f), gw2(w2.size(), 0.0f);
    float gb2 = 0.0f;
    for (int b = 0; b < batch; ++b) {
      const float d = o[b] - y[b];
      const float g = (2.0f * d) / static_cast<float>(batch);
      const float dout = h(g * scale);
      gb2 = gb2 + dout;
      for (int j = 0; j < hid; ++j) {
        const float p = dout * act[b * hid + j];
        gw2[j] = gw2[j] + p;
        const float dh = act[b * hid + j] > 0.0f ? h(dout * h(w2[j])) : 0.0f;
        gb1[j] = gb1[j] + dh;
        for (int k = 0; k < in; ++k) {
          const float q = dh * h(x[b * in + k]);
          gw1[j * in + k] = gw1[j * in + k] + q;
        }
      }
    }
    // binary16 gradients; overflow check; unscale; SGD unless overflowed.
    std::vector<float*> params;
    std::vector<float> grads;
    auto add = [&](std::vector<float>& p, const std::vector<float>& g) {
      for (std::size_t i = 0; i < p.size(); ++i) {
        params.push_back(&p[i]);
        grads.push_back(h(g[i]));
      }
    };
    add(w1, gw1);
    add(b1, gb1);
    add(w2, gw2);
    params.push_back(&b2);
    grads.push_back(h(gb2));
    for (float g : grads) r.found_inf = r.found_inf || !std::isfinite(g);
    if (!r.found_inf) {
      const float inv = 1.0f / scale;
      for (std::size_t i = 0; i < grads.size(); ++i) {
        const float step = lr * (grads[i] * inv);
        *params[i] = *params[i] - step;
      }
    }
    return r;
  }

  std::vector<float> flat() const {
    std::vector<float> p(w1);
    p.insert(p.end(), b1.begin(), b1.end());
    p.insert(p.end(), w2.begin(), w2.end());
    p.push_back(b2);
    return p;
  }
};

demo::AmpDemoOptions options(int steps, int warmup, std::vector<int> overflow, int growth_interval) {
  demo::AmpDemoOptions o;
  o.base.backend = "host";
  o.base.steps = steps;
  o.base.warmup = warmup;
  o.base.seed = 20261206;
  o.scaler.growth_interval = growth_interval;
  o.overflow_steps = std::move(overflow);
  return o;
}

bool same_bits(float a, float b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

TEST(AmpDemo, GradScalerDefaultsArePyTorchs) {
  const demo::GradScalerOptions o;
  EXPECT_EQ(o.init_scale, 65536.0f);
  EXPECT_EQ(o.growth_factor, 2.0f);
  EXPECT_EQ(o.backoff_factor, 0.5f);
  EXPECT_EQ(o.growth_interval, 2000);
}

TEST(AmpDemo, OverflowStepsAreSkippedAndTheScaleFollowsPyTorchsRulesStepByStep) {
  // Growth every 3 clean steps, so that growth happens often in 40 steps;
  // injected overflows at 9, 10 (two in a row) and 23.
  const auto o = options(40, 3, {9, 10, 23}, 3);
  const auto run = demo::train_mlp_amp(o, rt::ExecutionMode::kGraph);

  const auto& s = o.base.shape;
  const auto init = demo::mlp_init_params(s, o.base.seed);
  ReferenceAmpMlp ref;
  ref.in = s.inputs;
  ref.hid = s.hidden;
  ref.w1.assign(init.begin(), init.begin() + static_cast<std::ptrdiff_t>(s.b1_offset()));
  ref.b1.assign(init.begin() + static_cast<std::ptrdiff_t>(s.b1_offset()),
                init.begin() + static_cast<std::ptrdiff_t>(s.w2_offset()));
  ref.w2.assign(init.begin() + static_cast<std::ptrdiff_t>(s.w2_offset()),
                init.begin() + static_cast<std::ptrdiff_t>(s.b2_offset()));
  ref.b2 = init[s.b2_offset()];
  ReferenceScaler scaler;
  scaler.growth_interval = 3;

  ASSERT_EQ(run.scaler.size(), 40u);
  std::vector<float> x(static_cast<std::size_t>(s.batch * s.inputs)), y(static_cast<std::size_t>(s.batch));
  int growths = 0, backoffs = 0, skipped = 0;
  for (int step = 0; step < o.base.steps; ++step) {
    demo::mlp_make_batch(s, o.base.seed, step, x, y);
    const bool injected = step == 9 || step == 10 || step == 23;
    if (injected) x[0] = 1e6f;
    const float before = scaler.scale;
    const auto r = ref.step(x, y, s.batch, demo::mlp_learning_rate(o.base.learning_rate, step, o.base.steps), before);
    scaler.update(r.found_inf);
    skipped += r.found_inf ? 1 : 0;
    growths += scaler.scale > before ? 1 : 0;
    backoffs += scaler.scale < before ? 1 : 0;
    if (injected) {
      EXPECT_TRUE(r.found_inf) << "the reference did not see the injected overflow at step " << step;
    }

    const auto& got = run.scaler[static_cast<std::size_t>(step)];
    EXPECT_EQ(got.found_inf, r.found_inf) << "step " << step;
    EXPECT_EQ(got.scale, scaler.scale) << "step " << step;
    EXPECT_EQ(got.growth_tracker, scaler.growth_tracker) << "step " << step;
    EXPECT_EQ(got.skipped_steps, skipped) << "step " << step;
    EXPECT_TRUE(same_bits(run.losses[static_cast<std::size_t>(step)], r.loss))
        << "step " << step << ": loss " << run.losses[static_cast<std::size_t>(step)] << " vs reference " << r.loss;
  }
  // The schedule was exercised: growth on clean runs, backoff on overflow.
  EXPECT_GE(growths, 3);
  EXPECT_GE(backoffs, 3);
  const auto expected = ref.flat();
  ASSERT_EQ(run.params.size(), expected.size());
  EXPECT_EQ(demo::max_abs_diff(run.params, expected), 0.0);
  EXPECT_GT(demo::max_abs_diff(run.params, init), 1e-4);  // training really moved the weights
}

TEST(AmpDemo, ReplayedAmpTrainingEqualsEagerAmpTrainingBitForBit) {
  const auto r = demo::run_amp_demo(options(30, 2, {4, 17, 18}, 4));
  EXPECT_EQ(r.max_abs_param_diff, 0.0);
  EXPECT_TRUE(r.scaler_identical);
  EXPECT_GE(r.skipped_steps, 3);
  EXPECT_TRUE(r.ok());
}

TEST(AmpDemo, AReplayedStepMakesNoHostSynchronisation) {
  // A backend of its own, so that every wait counted is this run's.
  auto o = options(40, 3, {8, 20, 21, 33}, 5);
  o.base.backend_instance = rt::Backend::create("host");
  const auto run = demo::train_mlp_amp(o, rt::ExecutionMode::kGraph);
  ASSERT_EQ(run.replayed_steps, 36);
  // Over the replayed steps (overflows and scale changes among them): no
  // stream or device synchronisation at all...
  EXPECT_EQ(run.replay_waits.stream_synchronize, 0u);
  EXPECT_EQ(run.replay_waits.device_synchronize, 0u);
  // ...and every event wait was on an executor completion event: the whole
  // run waited on at most one event per slot.
  EXPECT_LE(run.events_waited_on, static_cast<std::uint64_t>(run.slots));
  // The counter does see the per-step completion waits (it is not blind).
  const auto completion =
      run.replay_waits.event_synchronize + run.replay_waits.event_wait_for + run.replay_waits.event_query;
  EXPECT_GE(completion, static_cast<std::uint64_t>(run.replayed_steps));
  // The injected overflows were decided on the device during those steps.
  EXPECT_TRUE(run.scaler[20].found_inf);
  EXPECT_TRUE(run.scaler[33].found_inf);
}

TEST(AmpDemo, AStepThatWaitsOnTheHostIsCounted) {
  // The negative control of the test above: the same counting sees a step
  // that reads its overflow flag on the host (what a host-side GradScaler
  // does: found_inf.item()), one stream synchronisation per step.
  auto backend = rt::Backend::create("host");
  auto stream = backend->create_stream(0);
  auto flag = backend->allocate(0, sizeof(std::int32_t));
  auto pinned = backend->allocate_pinned(sizeof(std::int32_t));
  const auto before = backend->sync_counts();
  for (int step = 0; step < 5; ++step) {
    stream.copy(pinned.slice(), flag.slice());
    stream.synchronize();
  }
  EXPECT_EQ(backend->sync_counts().stream_synchronize - before.stream_synchronize, 5u);
}

TEST(AmpDemo, TheCapturedStepHoldsTheOptimizerInAnIfNode) {
  const demo::MlpShape shape;
  rt::ExecutorOptions eo;
  eo.backend = "host";
  eo.warmup = 0;
  rt::StepExecutor ex(demo::amp_step_spec(shape), demo::amp_step_function(shape), eo);
  ex.prepare();
  const auto info = ex.graph_info();
  EXPECT_EQ(info.nodes.size(), 11u);  // six forward/backward kernels, memset, check, decide, IF, scale update
  EXPECT_EQ(info.count(rt::NodeKind::kConditional), 1u);
  EXPECT_EQ(info.count(rt::NodeKind::kHost), 0u);
  const auto& node = info.nodes[info.find("amp.optimizer_if_finite")];
  ASSERT_TRUE(node.conditional.has_value());
  EXPECT_EQ(node.conditional->kind, rt::ConditionalKind::kIf);
  ASSERT_EQ(node.conditional->body->nodes.size(), 1u);
  EXPECT_EQ(node.conditional->body->nodes[0].name, "amp.sgd_update");
  // Ordered: the check before the decision, the decision before the IF,
  // the IF before the scale update.
  EXPECT_TRUE(info.reaches(info.find("amp.unscale_check"), info.find("amp.decide_step")));
  EXPECT_TRUE(info.has_edge(info.find("amp.decide_step"), info.find("amp.optimizer_if_finite")));
  EXPECT_TRUE(info.reaches(info.find("amp.optimizer_if_finite"), info.find("amp.update_scale")));
  ex.close();
}

}  // namespace
