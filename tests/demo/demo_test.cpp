// The demo (issue 3, item 9): replayed training is bit-identical to eager
// training, the loss goes down, and the eager executor computes what a plain
// serial C++ implementation of the same MLP training computes (written here,
// independently of the kernels).
//
// Built twice: STEPGRAPH_TEST_BACKEND_HOST (label cpu) and
// STEPGRAPH_TEST_BACKEND_CUDA (label gpu; skips without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/demo/mlp.h>
#include <stepgraph/runtime/backend.h>

namespace {

namespace rt = stepgraph::runtime;
namespace demo = stepgraph::demo;

#if defined(STEPGRAPH_TEST_BACKEND_CUDA)
constexpr const char* kBackend = "cuda";
#define SG_DEMO_SUITE DemoCuda  // distinct ctest names for the two binaries
#else
constexpr const char* kBackend = "host";
#define SG_DEMO_SUITE DemoHost
#endif

class Demo : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string(kBackend) == "cuda") {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "cuda backend not available: " << reason;
    }
  }
  static demo::DemoOptions options(int steps, int warmup) {
    demo::DemoOptions o;
    o.backend = kBackend;
    o.steps = steps;
    o.warmup = warmup;
    o.seed = 20261122;
    return o;
  }
};

using SG_DEMO_SUITE = Demo;

// --- the independent reference: textbook backpropagation for one hidden
// ReLU layer and a linear output, batch-outer loops, float arithmetic.
struct ReferenceMlp {
  int in = 0, hid = 0;
  std::vector<float> w1, b1, w2;  // w1[j * in + k]
  float b2 = 0;

  // Returns the batch's mean squared error before the update.
  float train_step(const std::vector<float>& x, const std::vector<float>& y, int batch, float lr) {
    std::vector<float> h(static_cast<std::size_t>(batch * hid));
    std::vector<float> o(static_cast<std::size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      for (int j = 0; j < hid; ++j) {
        float z = b1[j];
        for (int k = 0; k < in; ++k) z += w1[j * in + k] * x[b * in + k];
        h[b * hid + j] = z > 0.0f ? z : 0.0f;
      }
      float out = b2;
      for (int j = 0; j < hid; ++j) out += h[b * hid + j] * w2[j];
      o[b] = out;
    }
    float sse = 0.0f;
    for (int b = 0; b < batch; ++b) sse += (o[b] - y[b]) * (o[b] - y[b]);
    const float loss = sse / static_cast<float>(batch);

    std::vector<float> gw1(w1.size(), 0.0f), gb1(b1.size(), 0.0f), gw2(w2.size(), 0.0f);
    float gb2 = 0.0f;
    for (int b = 0; b < batch; ++b) {
      const float dout = 2.0f * (o[b] - y[b]) / static_cast<float>(batch);  // d(mean sq. error)/d(out)
      gb2 += dout;
      for (int j = 0; j < hid; ++j) {
        gw2[j] += dout * h[b * hid + j];
        const float dh = h[b * hid + j] > 0.0f ? dout * w2[j] : 0.0f;
        gb1[j] += dh;
        for (int k = 0; k < in; ++k) gw1[j * in + k] += dh * x[b * in + k];
      }
    }
    for (std::size_t i = 0; i < w1.size(); ++i) w1[i] -= lr * gw1[i];
    for (std::size_t i = 0; i < b1.size(); ++i) b1[i] -= lr * gb1[i];
    for (std::size_t i = 0; i < w2.size(); ++i) w2[i] -= lr * gw2[i];
    b2 -= lr * gb2;
    return loss;
  }
};

TEST_F(SG_DEMO_SUITE, ReplayedParametersAreBitIdenticalToEager) {
  const auto r = demo::run_demo(options(40, 3));
  EXPECT_EQ(r.backend, kBackend);
  EXPECT_EQ(r.graph_nodes, 7u);  // the seven kernels of one step, nothing else
  EXPECT_EQ(r.max_abs_param_diff, 0.0);
  EXPECT_EQ(r.max_abs_loss_diff, 0.0);
  EXPECT_TRUE(r.identical());
  ASSERT_EQ(r.losses.size(), 40u);
}

TEST_F(SG_DEMO_SUITE, ReplayMatchesEagerWithoutWarmUp) {
  // Warm-up 0: the very first step is captured, so the graph's first
  // launch must also run the update the capture itself did not execute.
  const auto r = demo::run_demo(options(10, 0));
  EXPECT_EQ(r.max_abs_param_diff, 0.0);
  EXPECT_EQ(r.max_abs_loss_diff, 0.0);
}

TEST_F(SG_DEMO_SUITE, LossDecreases) {
  const auto r = demo::run_demo(options(200, 3));
  ASSERT_EQ(r.losses.size(), 200u);
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) {
    first += r.losses[static_cast<std::size_t>(i)];
    last += r.losses[r.losses.size() - 1 - static_cast<std::size_t>(i)];
  }
  EXPECT_LT(last, 0.5 * first) << "mean loss of the first 20 steps " << first / 20 << ", of the last 20 " << last / 20;
  EXPECT_EQ(r.max_abs_param_diff, 0.0);
}

TEST_F(SG_DEMO_SUITE, EagerExecutorEqualsSerialReference) {
  auto o = options(6, 3);
  const auto run = demo::train_mlp(o, rt::ExecutionMode::kEager);

  const auto& s = o.shape;
  const auto init = demo::mlp_init_params(s, o.seed);
  ReferenceMlp ref;
  ref.in = s.inputs;
  ref.hid = s.hidden;
  ref.w1.assign(init.begin(), init.begin() + static_cast<std::ptrdiff_t>(s.b1_offset()));
  ref.b1.assign(init.begin() + static_cast<std::ptrdiff_t>(s.b1_offset()),
                init.begin() + static_cast<std::ptrdiff_t>(s.w2_offset()));
  ref.w2.assign(init.begin() + static_cast<std::ptrdiff_t>(s.w2_offset()),
                init.begin() + static_cast<std::ptrdiff_t>(s.b2_offset()));
  ref.b2 = init[s.b2_offset()];

  std::vector<float> x(static_cast<std::size_t>(s.batch * s.inputs)), y(static_cast<std::size_t>(s.batch));
  std::vector<float> losses;
  for (int step = 0; step < o.steps; ++step) {
    demo::mlp_make_batch(s, o.seed, step, x, y);
    losses.push_back(ref.train_step(x, y, s.batch, demo::mlp_learning_rate(o.learning_rate, step, o.steps)));
  }
  std::vector<float> expected(ref.w1);
  expected.insert(expected.end(), ref.b1.begin(), ref.b1.end());
  expected.insert(expected.end(), ref.w2.begin(), ref.w2.end());
  expected.push_back(ref.b2);

  ASSERT_EQ(run.params.size(), expected.size());
  // Same IEEE operations in the same order, no fused multiply-adds
  // (Note [Deterministic MLP kernels]): equal, not merely close.
  EXPECT_EQ(demo::max_abs_diff(run.params, expected), 0.0);
  EXPECT_EQ(demo::max_abs_diff(run.losses, losses), 0.0);
  // The parameters really moved (the comparison is not of two untouched copies).
  EXPECT_GT(demo::max_abs_diff(run.params, init), 1e-4);
}

TEST_F(SG_DEMO_SUITE, RejectsAWarmUpThatLeavesNothingToReplay) {
  EXPECT_THROW((void)demo::run_demo(options(3, 3)), stepgraph::InvalidArgument);
}

#if !defined(STEPGRAPH_TEST_BACKEND_CUDA)  // backend-free helpers: tested once
TEST(DemoHelpers, MaxAbsDiffTreatsALoneNanAsInfinite) {
  const std::vector<float> a{1.0f, 2.0f}, b{1.0f, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_EQ(demo::max_abs_diff(a, a), 0.0);
  EXPECT_TRUE(std::isinf(demo::max_abs_diff(a, b)));
  EXPECT_EQ(demo::max_abs_diff(std::vector<float>{1.0f}, std::vector<float>{1.5f}), 0.5);
}

TEST(DemoHelpers, BatchIsAPureFunctionOfSeedAndStep) {
  demo::MlpShape s;
  std::vector<float> x1(static_cast<std::size_t>(s.batch * s.inputs)), y1(static_cast<std::size_t>(s.batch));
  auto x2 = x1, y2 = y1, x3 = x1, y3 = y1;
  demo::mlp_make_batch(s, 7, 5, x1, y1);
  demo::mlp_make_batch(s, 7, 5, x2, y2);
  demo::mlp_make_batch(s, 7, 6, x3, y3);
  EXPECT_EQ(x1, x2);
  EXPECT_EQ(y1, y2);
  EXPECT_NE(x1, x3);
}
#endif

}  // namespace
