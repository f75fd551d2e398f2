// The order rule and the failure paths of in-process communicators: a
// mismatch, a missing peer, an abort, eager use after capture, bad input,
// introspection, and no compute worker held by a waiting collective.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <stepgraph/collectives/in_process.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::runtime;
using namespace stepgraph::collectives;
using Clock = std::chrono::steady_clock;

std::shared_ptr<Backend> host_backend(int devices, int workers = 2) {
  BackendOptions o;
  o.host_devices = devices;
  o.workers_per_device = workers;
  o.bind_workers = false;
  return Backend::create("host", o);
}

std::vector<int> iota(int n) {
  std::vector<int> v;
  for (int i = 0; i < n; ++i) v.push_back(i);
  return v;
}

TEST(CollectiveOrder, ADifferentOrderOnOneRankIsAMismatchOnEveryRank) {
  // 100 runs: none may hang (each waits at most the 10 s timeout, and a
  // mismatch is found as soon as the last rank arrives).
  for (int run = 0; run < 100; ++run) {
    auto backend = host_backend(3);
    CommunicatorOptions opt;
    opt.timeout = std::chrono::seconds(10);
    auto comms = make_in_process_group(backend, iota(3), opt);
    std::vector<Stream> streams;
    std::vector<Buffer> a, b;
    for (int r = 0; r < 3; ++r) {
      streams.push_back(backend->create_stream(r));
      a.push_back(backend->allocate(r, 64));
      b.push_back(backend->allocate(r, 128));
    }
    const auto start = Clock::now();
    // The calls run asynchronously: once the mismatch is found (it may be
    // before a rank has made its second call), a later call throws it at
    // once, as designed ("every later call throws it").
    auto call = [](Communicator& c, const Stream& s, const Buffer& buf, std::size_t n, const char* name) {
      try {
        c.all_reduce(s, buf, 0, n, DType::kFloat32, ReduceOp::kSum, name);
      } catch (const CollectiveMismatch&) {
      }
    };
    for (int r = 0; r < 3; ++r) {
      auto& c = *comms[static_cast<std::size_t>(r)];
      const auto& s = streams[static_cast<std::size_t>(r)];
      if (r == 2) {  // the other order
        call(c, s, b[2], 32, "grad b");
        call(c, s, a[2], 16, "grad a");
      } else {
        call(c, s, a[static_cast<std::size_t>(r)], 16, "grad a");
        call(c, s, b[static_cast<std::size_t>(r)], 32, "grad b");
      }
    }
    for (auto& s : streams) s.synchronize();
    ASSERT_LT(Clock::now() - start, std::chrono::seconds(5)) << "run " << run;
    for (int r = 0; r < 3; ++r) {
      auto& c = *comms[static_cast<std::size_t>(r)];
      const auto e = c.async_error();
      ASSERT_TRUE(e.has_value()) << "rank " << r << " run " << run;
      EXPECT_NE(e->find("CollectiveMismatch"), std::string::npos) << *e;
      EXPECT_NE(e->find("rank 0 called all_reduce sum float32 x16 'grad a'"), std::string::npos) << *e;
      EXPECT_NE(e->find("rank 2 called all_reduce sum float32 x32 'grad b'"), std::string::npos) << *e;
      EXPECT_THROW(c.check(), CollectiveMismatch);
      // Every later call says so too.
      EXPECT_THROW(c.all_reduce(streams[static_cast<std::size_t>(r)], a[static_cast<std::size_t>(r)], 0, 16,
                                DType::kFloat32, ReduceOp::kSum),
                   CollectiveMismatch);
    }
  }
}

TEST(CollectiveOrder, AMissingPeerIsATimeoutNamingIt) {
  // 100 runs; each must end within its bound, none may hang.
  for (int run = 0; run < 100; ++run) {
    auto backend = host_backend(2);
    CommunicatorOptions opt;
    opt.timeout = std::chrono::milliseconds(40);
    auto comms = make_in_process_group(backend, iota(2), opt);
    auto s0 = backend->create_stream(0);
    auto buf = backend->allocate(0, 64);
    const auto start = Clock::now();
    comms[0]->all_reduce(s0, buf, 0, 16, DType::kFloat32, ReduceOp::kSum);
    s0.synchronize();  // rank 1 never calls: bounded by the timeout, not a hang
    const auto waited = Clock::now() - start;
    ASSERT_GE(waited, std::chrono::milliseconds(35)) << "run " << run;
    ASSERT_LT(waited, std::chrono::seconds(3)) << "run " << run;
    for (auto& c : comms) {
      const auto e = c->async_error();
      ASSERT_TRUE(e.has_value());
      EXPECT_NE(e->find("ranks that never reached it: 1"), std::string::npos) << *e;
      EXPECT_THROW(c->check(), CollectiveTimeout);
    }
  }
}

TEST(CollectiveOrder, AbortWakesARankWaitingForItsPeers) {
  auto backend = host_backend(2);
  auto comms = make_in_process_group(backend, iota(2));  // timeout 60 s: only the abort can end the wait
  auto s0 = backend->create_stream(0);
  auto buf = backend->allocate(0, 64);
  comms[0]->all_reduce(s0, buf, 0, 16, DType::kFloat32, ReduceOp::kSum);
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    comms[1]->abort("test: peer gone");
  });
  const auto start = Clock::now();
  s0.synchronize();
  aborter.join();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(comms[0]->aborted());
  sgtest::expect_throw_with<CommunicatorAborted>([&] { comms[0]->check(); }, {"rank 1", "test: peer gone"});
  sgtest::expect_throw_with<CommunicatorAborted>(
      [&] { comms[0]->all_reduce(s0, buf, 0, 16, DType::kFloat32, ReduceOp::kSum); }, {"test: peer gone"});
}

TEST(CollectiveOrder, AnEagerCallAfterACapturedOneIsRefused) {
  auto backend = host_backend(2);
  auto comms = make_in_process_group(backend, iota(2));
  std::vector<Stream> streams;
  std::vector<Buffer> bufs;
  std::vector<GraphExec> execs;
  for (int r = 0; r < 2; ++r) {
    streams.push_back(backend->create_stream(r));
    bufs.push_back(backend->allocate(r, 64));
    // Eager first (warm-up): allowed.
    comms[static_cast<std::size_t>(r)]->all_reduce(streams.back(), bufs.back(), 0, 16, DType::kFloat32, ReduceOp::kSum);
  }
  for (int r = 0; r < 2; ++r) {
    CaptureSession cap(streams[static_cast<std::size_t>(r)]);
    comms[static_cast<std::size_t>(r)]->all_reduce(streams[static_cast<std::size_t>(r)],
                                                   bufs[static_cast<std::size_t>(r)], 0, 16, DType::kFloat32,
                                                   ReduceOp::kSum);
    execs.push_back(cap.end().instantiate());
  }
  sgtest::expect_throw_with<InvalidState>(
      [&] { comms[0]->all_reduce(streams[0], bufs[0], 0, 16, DType::kFloat32, ReduceOp::kSum); },
      {"rank 0", "eager and captured collectives must not be mixed"});
  for (int r = 0; r < 2; ++r) execs[static_cast<std::size_t>(r)].launch(streams[static_cast<std::size_t>(r)]);
  for (auto& s : streams) s.synchronize();
  EXPECT_FALSE(comms[0]->async_error().has_value());
}

TEST(CollectiveOrder, BadInputIsATypedErrorNamingTheCallAndRank) {
  auto backend = host_backend(2);
  auto comms = make_in_process_group(backend, iota(2));
  auto s0 = backend->create_stream(0);
  auto s1 = backend->create_stream(1);
  auto buf = backend->allocate(0, 64);
  auto other = backend->allocate(1, 64);
  auto pinned = backend->allocate_pinned(64);
  auto& c = *comms[0];
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, buf, 0, 17, DType::kFloat32, ReduceOp::kSum); },
                                             {"all_reduce", "rank 0", "68 bytes"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, buf, 0, 9, DType::kFloat64, ReduceOp::kSum); },
                                             {"float64", "do not fit"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, buf, 2, 4, DType::kFloat32, ReduceOp::kSum); },
                                             {"offset 2", "element size 4"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, other, 0, 4, DType::kFloat32, ReduceOp::kSum); },
                                             {"lives on device 1", "device is 0"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, pinned, 0, 4, DType::kFloat32, ReduceOp::kSum); },
                                             {"pinned host memory"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s1, buf, 0, 4, DType::kFloat32, ReduceOp::kSum); },
                                             {"stream is on device 1"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.broadcast(s0, buf, 0, 4, DType::kFloat32, 2); },
                                             {"root 2", "world size 2"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_gather(s0, buf, 0, buf, 0, 16, DType::kFloat32); },
                                             {"all_gather", "receive", "do not fit"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_gather(s0, buf, 4, buf, 0, 4, DType::kFloat32); },
                                             {"overlap but not in place"});
  sgtest::expect_throw_with<InvalidArgument>([&] { c.all_reduce(s0, Buffer(), 0, 4, DType::kFloat32, ReduceOp::kSum); },
                                             {"handle is empty"});
  sgtest::expect_throw_with<InvalidArgument>(
      [&] {
        (void)make_in_process_group(backend, {0, 0});
      },
      {"device 0 is given twice"});
  sgtest::expect_throw_with<InvalidArgument>(
      [&] {
        (void)make_in_process_group(backend, {0, 5});
      },
      {"device 5 does not exist"});
  EXPECT_EQ(c.calls(), 0u);  // nothing was enqueued
  EXPECT_FALSE(c.async_error().has_value());
}

TEST(CollectiveOrder, IntrospectionShowsTheCollectiveNode) {
  auto backend = host_backend(2);
  auto comms = make_in_process_group(backend, iota(2));
  auto s = backend->create_stream(1);
  auto buf = backend->allocate(1, 4096);
  CaptureSession cap(s);
  comms[1]->reduce_scatter(s, buf, 0, buf, 1024, 256, DType::kBFloat16, ReduceOp::kAverage);
  const GraphInfo info = cap.end().info();
  ASSERT_EQ(info.count(NodeKind::kCollective), 1u);
  const NodeInfo* node = nullptr;
  for (const auto& n : info.nodes)
    if (n.kind == NodeKind::kCollective) node = &n;
  ASSERT_NE(node, nullptr);
  ASSERT_TRUE(node->collective.has_value());
  EXPECT_EQ(node->collective->op, "reduce_scatter");
  EXPECT_EQ(node->collective->reduce, "avg");
  EXPECT_EQ(node->collective->dtype, "bfloat16");
  EXPECT_EQ(node->collective->count, 256u);
  EXPECT_EQ(node->collective->communicator, comms[1]->id());
  EXPECT_EQ(node->collective->rank, 1);
  EXPECT_EQ(node->collective->world_size, 2);
  EXPECT_EQ(node->bytes, 2u * 256u * 2u);  // what this rank sends: world x count x 2 bytes
  EXPECT_EQ(node->device, 1);
  EXPECT_EQ(node->accesses.size(), 2u);
}

TEST(CollectiveOrder, AWaitingCollectiveHoldsNoComputeWorker) {
  // One worker per device. Device 0's collective waits for device 1's,
  // which waits (through an event) for a host function queued on device 0
  // after the collective. If the waiting collective held device 0's only
  // worker, the host function could never run: a deadlock, here a timeout.
  auto backend = host_backend(2, /*workers=*/1);
  CommunicatorOptions opt;
  opt.timeout = std::chrono::seconds(5);
  auto comms = make_in_process_group(backend, iota(2), opt);
  auto a0 = backend->create_stream(0);
  auto b0 = backend->create_stream(0);
  auto s1 = backend->create_stream(1);
  auto buf0 = backend->allocate(0, 64);
  auto buf1 = backend->allocate(1, 64);
  auto ev = backend->create_event(0);
  std::atomic<bool> ran{false};
  comms[0]->all_reduce(a0, buf0, 0, 16, DType::kFloat32, ReduceOp::kSum);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the collective is waiting by now
  b0.host_fn("after the collective", [&] { ran = true; });
  b0.record(ev);
  s1.wait(ev);
  comms[1]->all_reduce(s1, buf1, 0, 16, DType::kFloat32, ReduceOp::kSum);
  a0.synchronize();
  s1.synchronize();
  EXPECT_TRUE(ran.load());
  EXPECT_FALSE(comms[0]->async_error().has_value()) << *comms[0]->async_error();
}

}  // namespace
