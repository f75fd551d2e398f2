// The data-parallel demo on host devices: within the stated bound of the
// float64 single-device reference, captured equal to eager bit for bit, and
// bucketed equal to one AllReduce after backward (the same element-wise sums
// in rank order, only grouped differently).
#include <gtest/gtest.h>

#include <stepgraph/demo/data_parallel.h>

namespace {

using namespace stepgraph;
namespace demo = stepgraph::demo;

demo::DataParallelDemoOptions options(int devices) {
  demo::DataParallelDemoOptions o;
  o.base.backend = "host";
  o.base.steps = 60;
  o.devices = devices;
  return o;
}

TEST(DataParallelDemo, MatchesTheFloat64ReferenceAndCapturedEqualsEager) {
  for (int devices : {2, 4}) {
    const auto r = demo::run_data_parallel_demo(options(devices));
    EXPECT_EQ(r.buckets, 2u);
    EXPECT_EQ(r.collective_nodes, 2u);
    EXPECT_LE(r.dp_vs_f64, r.bound) << devices << " devices";
    EXPECT_EQ(r.captured_vs_eager, 0.0) << devices << " devices";
    EXPECT_EQ(r.replica_diff, 0.0) << devices << " devices";
    EXPECT_LT(r.last_loss, r.first_loss);
  }
}

TEST(DataParallelDemo, ASkippedAllReduceLeavesTheBound) {
  // The bound has teeth: one replica training on its own shard alone (no
  // AllReduce) ends far outside it.
  auto o = options(1);
  o.base.shape.batch = 32;  // one replica, half the batch, nothing to average with
  const auto alone = demo::train_mlp_data_parallel(o, runtime::ExecutionMode::kGraph);
  auto full = options(2).base;
  const auto ref = demo::mlp_reference_train_f64(full);
  const auto single = demo::train_mlp(full, runtime::ExecutionMode::kGraph);
  double d_alone = 0, d_single = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    d_alone = std::max(d_alone, std::abs(alone.params[i] - ref[i]));
    d_single = std::max(d_single, std::abs(single.params[i] - ref[i]));
  }
  EXPECT_GT(d_alone, std::max(8 * d_single, 1e-6) * 100);
}

TEST(DataParallelDemo, BucketedEqualsOneAllReduceAfterBackward) {
  auto o = options(2);
  const auto bucketed = demo::train_mlp_data_parallel(o, runtime::ExecutionMode::kGraph);
  o.bucketed = false;
  const auto single = demo::train_mlp_data_parallel(o, runtime::ExecutionMode::kGraph);
  EXPECT_EQ(bucketed.buckets, 2u);
  EXPECT_EQ(single.collective_nodes, 1u);
  EXPECT_EQ(demo::max_abs_diff(bucketed.params, single.params), 0.0);
  EXPECT_EQ(demo::max_abs_diff(bucketed.losses, single.losses), 0.0);
}

}  // namespace
