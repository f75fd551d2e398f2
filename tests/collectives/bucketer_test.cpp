// Gradient buckets: the plan against a hand-computed layout, the overlap as
// graph introspection shows it, the values after replay, and a device fault
// inside a data-parallel step failing every replica.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

#include <stepgraph/collectives/bucketer.h>
#include <stepgraph/collectives/data_parallel.h>
#include <stepgraph/collectives/in_process.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::runtime;
using namespace stepgraph::collectives;

std::shared_ptr<Backend> host_backend(int devices) {
  BackendOptions o;
  o.host_devices = devices;
  o.bind_workers = false;
  o.shuffle_seed = 11;
  return Backend::create("host", o);
}

TEST(Buckets, PlanFillsBucketsInReadyOrderAndStoresThemInReverse) {
  // Ready order a(100 floats), b(300), c(200), d(50); first cap 800 B, cap 1600 B.
  BucketOptions o;
  o.first_bucket_cap_bytes = 800;
  o.bucket_cap_bytes = 1600;
  const auto plan = plan_buckets({{"a", 100}, {"b", 300}, {"c", 200}, {"d", 50}}, o);
  ASSERT_EQ(plan.buckets.size(), 3u);
  EXPECT_EQ(plan.buckets[0].gradients, (std::vector<std::size_t>{0}));     // a: 400 B; a+b > 800
  EXPECT_EQ(plan.buckets[1].gradients, (std::vector<std::size_t>{1}));     // b: 1200 B; b+c > 1600
  EXPECT_EQ(plan.buckets[2].gradients, (std::vector<std::size_t>{2, 3}));  // c+d: 1000 B
  // Storage, last-ready first: d at 0, c at 200, b at 1000, a at 2200.
  EXPECT_EQ(plan.gradients[3].offset, 0u);
  EXPECT_EQ(plan.gradients[2].offset, 200u);
  EXPECT_EQ(plan.gradients[1].offset, 1000u);
  EXPECT_EQ(plan.gradients[0].offset, 2200u);
  EXPECT_EQ(plan.buckets[2].offset, 0u);
  EXPECT_EQ(plan.buckets[2].count, 250u);
  EXPECT_EQ(plan.buckets[0].offset, 2200u);
  EXPECT_EQ(plan.storage_bytes, 2600u);
}

TEST(Buckets, ADtypeChangeStartsABucketAndTheDefaultsAreDdps) {
  const BucketOptions defaults;
  EXPECT_EQ(defaults.bucket_cap_bytes, 25u << 20);
  EXPECT_EQ(defaults.first_bucket_cap_bytes, 1u << 20);
  EXPECT_EQ(defaults.reduce, ReduceOp::kAverage);
  const auto plan = plan_buckets({{"x", 10, DType::kFloat32}, {"y", 3, DType::kFloat16}, {"z", 5, DType::kFloat16}});
  ASSERT_EQ(plan.buckets.size(), 2u);
  EXPECT_EQ(plan.buckets[1].dtype, DType::kFloat16);
  EXPECT_EQ(plan.buckets[1].count, 8u);
  EXPECT_EQ(plan.buckets[0].offset % 4, 0u);  // float32 bucket aligned after the float16 one
  EXPECT_EQ(plan.buckets[0].offset, 16u);
  sgtest::expect_throw_with<InvalidArgument>([] { (void)plan_buckets({}); }, {"no gradients"});
  sgtest::expect_throw_with<InvalidArgument>([] { (void)plan_buckets({{"g", 0}}); }, {"('g') has no elements"});
}

void fill_host(float* p, float v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) p[i] = v;
}
void add_host(float* dst, const float* src, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] += src[i];
}
const Kernel<float*, float, std::size_t> kFill{"fill", fill_host, nullptr};
const Kernel<float*, const float*, std::size_t> kAdd{"add", add_host, nullptr};

TEST(Buckets, EachBucketWaitsOnlyForItsGradientsWritersAndTheOptimizerForAll) {
  constexpr int kRanks = 2;
  constexpr std::size_t kA = 64, kB = 96;  // ready order: a (bucket 0), then b (bucket 1)
  auto backend = host_backend(kRanks);
  auto comms = make_in_process_group(backend, {0, 1});
  BucketOptions o;
  o.first_bucket_cap_bytes = kA * 4;
  const auto plan = plan_buckets({{"a", kA}, {"b", kB}}, o);
  ASSERT_EQ(plan.buckets.size(), 2u);

  std::vector<Stream> streams;
  std::vector<Buffer> storage, params, stage;
  std::vector<GraphExec> execs;
  GraphInfo info0;
  for (int r = 0; r < kRanks; ++r) {
    streams.push_back(backend->create_stream(r));
    storage.push_back(backend->allocate(r, plan.storage_bytes));
    params.push_back(backend->allocate(r, plan.storage_bytes));
    stage.push_back(backend->allocate_pinned(plan.storage_bytes));
    streams.back().memset(params.back().slice(), 0);
    GradientBucketer bucketer(plan, comms[static_cast<std::size_t>(r)]);
    const auto& s = streams.back();
    const auto& st = storage.back();
    const std::size_t ao = plan.gradients[0].offset, bo = plan.gradients[1].offset;
    CaptureSession cap(s);
    bucketer.begin(s, st);
    launch(s, kFill, {.name = "backward a", .accesses = {write(st, ao, kA * 4)}},
           reinterpret_cast<float*>(static_cast<char*>(st.data()) + ao), static_cast<float>(r + 1), kA);
    bucketer.ready(s, 0);
    launch(s, kFill, {.name = "backward b", .accesses = {write(st, bo, kB * 4)}},
           reinterpret_cast<float*>(static_cast<char*>(st.data()) + bo), static_cast<float>(10 * (r + 1)), kB);
    bucketer.ready(s, 1);
    bucketer.finish(s);
    launch(s, kAdd, {.name = "optimizer", .accesses = {read_write(params.back()), read(st)}},
           params.back().data<float>(), st.data<const float>(), (kA + kB));
    Graph g = cap.end();
    if (r == 0) info0 = g.info();
    execs.push_back(g.instantiate());
  }
  const auto bwd_a = info0.find("backward a"), bwd_b = info0.find("backward b"), opt = info0.find("optimizer");
  const auto ar0 = info0.find("allreduce bucket 0"), ar1 = info0.find("allreduce bucket 1");
  EXPECT_EQ(info0.nodes[ar0].kind, NodeKind::kCollective);
  EXPECT_EQ(info0.nodes[ar0].collective->reduce, "avg");
  EXPECT_TRUE(info0.reaches(bwd_a, ar0));
  EXPECT_FALSE(info0.reaches(bwd_b, ar0)) << "bucket 0 must not wait for a gradient of bucket 1";
  EXPECT_FALSE(info0.reaches(ar0, bwd_b)) << "later backward work must not wait for bucket 0";
  EXPECT_TRUE(info0.reaches(bwd_b, ar1));
  EXPECT_TRUE(info0.reaches(ar0, ar1));  // one order on the communication stream
  EXPECT_TRUE(info0.reaches(ar0, opt));
  EXPECT_TRUE(info0.reaches(ar1, opt));

  // Two replays: params = 2 x the average gradient.
  for (int step = 0; step < 2; ++step)
    for (int r = 0; r < kRanks; ++r) execs[static_cast<std::size_t>(r)].launch(streams[static_cast<std::size_t>(r)]);
  for (int r = 0; r < kRanks; ++r) {
    streams[static_cast<std::size_t>(r)].copy(stage[static_cast<std::size_t>(r)].slice(),
                                              params[static_cast<std::size_t>(r)].slice());
    streams[static_cast<std::size_t>(r)].synchronize();
    const auto* p = static_cast<const float*>(stage[static_cast<std::size_t>(r)].host_data());
    const std::size_t ao = plan.gradients[0].offset / 4, bo = plan.gradients[1].offset / 4;
    for (std::size_t i = 0; i < kA; ++i) ASSERT_EQ(p[ao + i], 2 * 1.5f) << "rank " << r;   // avg(1, 2)
    for (std::size_t i = 0; i < kB; ++i) ASSERT_EQ(p[bo + i], 2 * 15.0f) << "rank " << r;  // avg(10, 20)
  }
  sgtest::expect_throw_with<InvalidState>(
      [&] {
        GradientBucketer b(plan, comms[0]);
        b.begin(streams[0], storage[0]);
        b.finish(streams[0]);  // nothing was marked ready: no collective is launched
      },
      {"never marked ready: a, b"});
}

// --- a device fault inside a data-parallel step

void maybe_fault_host(const int* flag, float* grads, std::size_t n) {
  if (*flag != 0) throw std::runtime_error("injected fault");
  for (std::size_t i = 0; i < n; ++i) grads[i] = 1.0f;
}
const Kernel<const int*, float*, std::size_t> kMaybeFault{"maybe_fault", maybe_fault_host, nullptr};

TEST(DataParallel, ADeviceFaultOnOneReplicaFailsEveryReplicaWithTheStep) {
  StepSpec spec;
  spec.state = {{.name = "flag", .bytes = sizeof(int)}};
  spec.scratch = {{.name = "grads", .bytes = 64 * sizeof(float)}};
  auto step = [](StepContext& ctx) {
    const auto& flag = ctx.state("flag");
    const auto& grads = ctx.scratch("grads");
    launch(ctx.stream(), kMaybeFault, {.name = "backward", .accesses = {read(flag), write(grads)}},
           flag.data<const int>(), grads.data<float>(), std::size_t{64});
    ctx.collectives().all_reduce(ctx.stream(), grads, 0, 64, DType::kFloat32, ReduceOp::kAverage);
  };
  DataParallelOptions o;
  o.devices = {0, 1};
  o.executor.backend_instance = host_backend(2);
  o.executor.deadline = std::chrono::seconds(20);
  DataParallelExecutor dp(spec, step, o);
  const int zero = 0, one = 1;
  dp.write_state("flag", &zero, sizeof zero);
  dp.prepare();
  for (int s = 0; s < 3; ++s) {
    auto ok = dp.replay(dp.acquire_inputs());
    ASSERT_EQ(ok.wait(), ReplayStatus::kDone);
    ok.release();  // gives the slots back
  }
  dp.synchronize();
  dp.replica(1).write_state("flag", &one, sizeof one);  // replica 1 faults at its next step
  const auto start = std::chrono::steady_clock::now();
  auto h = dp.replay(dp.acquire_inputs());
  EXPECT_NE(h.wait(), ReplayStatus::kDone);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  // Replica 1: its own fault. Replica 0: the collective its peer never joined.
  for (int r = 0; r < 2; ++r) {
    const auto f = dp.replica(r).failure();
    ASSERT_TRUE(f.has_value()) << "replica " << r;
    EXPECT_EQ(dp.replica(r).state(), ExecutorState::kFailed);
    EXPECT_EQ(f->step, h.replicas()[static_cast<std::size_t>(r)].step()) << "replica " << r;
    EXPECT_EQ(f->kind, r == 1 ? StepErrorKind::kDeviceFault : StepErrorKind::kCollective) << f->message;
  }
  EXPECT_NE(dp.replica(0).failure()->message.find("aborted"), std::string::npos) << dp.replica(0).failure()->message;
  h.release();
  EXPECT_THROW((void)dp.replay(dp.acquire_inputs()), InvalidState);
}

}  // namespace
