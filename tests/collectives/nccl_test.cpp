// NCCL communicators on the cuda backend (label gpu; every test that needs a
// device skips with the reason when none is present). Data goes in and out
// through backend copies from pinned buffers, so no kernel of ours is
// involved; results are checked against a serial reference computed here.
// One GPU cannot host two NCCL ranks: the multi-rank tests need 2 GPUs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include <stepgraph/collectives/nccl.h>
#include <stepgraph/runtime/backend.h>

#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::runtime;
using namespace stepgraph::collectives;

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string reason;
    if (!Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    if (!nccl_available(&reason)) GTEST_SKIP() << "NCCL unusable: " << reason;
    backend_ = Backend::create(BackendKind::kCuda);
  }
  std::shared_ptr<Backend> backend_;
};

/// A device buffer and its pinned staging twin, moved with backend copies.
struct Staged {
  Buffer dev, pin;
  Staged(Backend& b, int device, std::size_t bytes) : dev(b.allocate(device, bytes)), pin(b.allocate_pinned(bytes)) {}
  template <class T>
  std::span<T> host() const {
    return pin.host_span<T>();
  }
  void upload(StreamRef s) const { s.copy(dev.slice(), pin.slice(), "upload"); }
  void download(StreamRef s) const { s.copy(pin.slice(), dev.slice(), "download"); }
};

constexpr std::size_t kCount = 4096;

// Small integers in float32: every sum below is exact, so results compare
// with ==.
float input(int rank, std::size_t i) {
  return static_cast<float>((static_cast<int>(i) * 7 + rank * 13) % 101 - 50);
}

TEST_F(NcclTest, OneRankAllReduceEagerMatchesSerialReference) {
  auto comm = make_nccl_group(backend_, {0}).at(0);
  EXPECT_EQ(comm->world_size(), 1);
  EXPECT_EQ(comm->rank(), 0);
  Staged buf(*backend_, 0, kCount * sizeof(float));
  for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(0, i);
  Stream s = backend_->create_stream(0);
  buf.upload(s);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kAverage);
  buf.download(s);
  s.synchronize();
  comm->check();
  // One rank: the sum and the average of one contribution are the input.
  for (std::size_t i = 0; i < kCount; ++i) ASSERT_EQ(buf.host<float>()[i], input(0, i)) << "element " << i;
  EXPECT_EQ(comm->calls(), 2u);
  EXPECT_FALSE(comm->async_error().has_value());
}

/// Captures upload + all_reduce + download on a stream of the caller's
/// (forked onto the communication stream and joined back), replays it and
/// compares with an eager run on another communicator; then introspects.
void captured_matches_eager(Backend& backend, const std::shared_ptr<Backend>& shared, ReduceOp op) {
  auto eager = make_nccl_group(shared, {0}).at(0);
  auto captured = make_nccl_group(shared, {0}).at(0);
  Staged a(backend, 0, kCount * sizeof(float)), b(backend, 0, kCount * sizeof(float));
  for (std::size_t i = 0; i < kCount; ++i) a.host<float>()[i] = b.host<float>()[i] = input(0, i) * 0.25f;
  Stream s = backend.create_stream(0);

  a.upload(s);
  eager->all_reduce(s, a.dev, 0, kCount, DType::kFloat32, op);
  a.download(s);
  s.synchronize();
  eager->check();

  // Warm-up: eager, on the communicator that is captured next (NCCL
  // connects then; Note [NCCL inside captured graphs]).
  b.upload(s);
  captured->all_reduce(s, b.dev, 0, kCount, DType::kFloat32, op);
  s.synchronize();
  Graph g;
  {
    CaptureSession session(s);
    b.upload(s);
    captured->all_reduce(s, b.dev, 0, kCount, DType::kFloat32, op, "grad allreduce");
    b.download(s);
    g = session.end();
  }
  const GraphInfo info = g.info();
  EXPECT_EQ(info.count(NodeKind::kCollective), 1u);
  const NodeInfo& node = info.nodes.at(info.find("grad allreduce"));
  EXPECT_EQ(node.kind, NodeKind::kCollective);
  ASSERT_TRUE(node.collective.has_value());
  EXPECT_EQ(node.collective->op, "allreduce");
  EXPECT_EQ(node.collective->reduce, op == ReduceOp::kSum ? "sum" : "avg");
  EXPECT_EQ(node.collective->dtype, "float32");
  EXPECT_EQ(node.collective->count, kCount);
  EXPECT_EQ(node.collective->communicator, captured->id());
  EXPECT_EQ(node.collective->rank, 0);
  EXPECT_EQ(node.collective->world_size, 1);
  EXPECT_EQ(node.bytes, kCount * sizeof(float));
  // The collective sits between the upload and the download.
  EXPECT_TRUE(info.reaches(info.find("upload"), info.find("grad allreduce")));
  EXPECT_TRUE(info.reaches(info.find("grad allreduce"), info.find("download")));

  GraphExec exec = g.instantiate();
  for (int replay = 0; replay < 3; ++replay) {
    std::memset(b.pin.host_data(), 0xff, b.pin.size());  // a replay must rewrite it all
    for (std::size_t i = 0; i < kCount; ++i) b.host<float>()[i] = input(0, i) * 0.25f;
    exec.launch(s);
    s.synchronize();
    captured->check();
    for (std::size_t i = 0; i < kCount; ++i)
      ASSERT_EQ(b.host<float>()[i], a.host<float>()[i]) << "replay " << replay << " element " << i;
  }
  // Graphs go before their communicator (Note [NCCL inside captured graphs]).
  exec = GraphExec();
  g = Graph();
}

TEST_F(NcclTest, OneRankAllReduceCapturedMatchesEagerAndShowsOneCollectiveNode) {
  // kAverage: NCCL launches a kernel; kSum in place on one rank: NCCL does
  // nothing and an empty node stands for the collective.
  captured_matches_eager(*backend_, backend_, ReduceOp::kAverage);
  captured_matches_eager(*backend_, backend_, ReduceOp::kSum);
}

TEST_F(NcclTest, EagerCallAfterCaptureIsRefused) {
  auto comm = make_nccl_group(backend_, {0}).at(0);
  Staged buf(*backend_, 0, kCount * sizeof(float));
  Stream s = backend_->create_stream(0);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);  // warm-up
  s.synchronize();
  Graph g;
  {
    CaptureSession session(comm->stream());
    comm->all_reduce(comm->stream(), buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kAverage);
    g = session.end();
  }
  sgtest::expect_throw_with<InvalidState>(
      [&] { comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum); },
      {"eager and captured collectives must not be mixed", "rank 0"});
  g = Graph();
}

TEST_F(NcclTest, UniqueIdCommunicatorOfOneRankRuns) {
  const NcclUniqueId id = nccl_unique_id();
  auto comm = make_nccl_communicator(backend_, 0, id, 0, 1);
  Staged buf(*backend_, 0, kCount * sizeof(float));
  for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(0, i);
  Stream s = backend_->create_stream(0);
  buf.upload(s);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kMax);
  buf.download(s);
  s.synchronize();
  comm->check();
  for (std::size_t i = 0; i < kCount; ++i) ASSERT_EQ(buf.host<float>()[i], input(0, i));
}

TEST_F(NcclTest, AbortEndsTheCommunicatorAndLaterCallsThrow) {
  auto comm = make_nccl_group(backend_, {0}).at(0);
  Staged buf(*backend_, 0, kCount * sizeof(float));
  Stream s = backend_->create_stream(0);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);
  s.synchronize();
  comm->abort("test");
  comm->abort("twice");  // idempotent
  EXPECT_TRUE(comm->aborted());
  ASSERT_TRUE(comm->async_error().has_value());
  EXPECT_NE(comm->async_error()->find("test"), std::string::npos);
  EXPECT_THROW(comm->check(), CommunicatorAborted);
  EXPECT_THROW(comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum), CommunicatorAborted);
}

TEST_F(NcclTest, DestroyedBeforeItsGraphReturnsAndTheGraphStillReplays) {
  CommunicatorOptions o;
  o.timeout = std::chrono::milliseconds(200);
  auto comm = make_nccl_group(backend_, {0}, o).at(0);
  Staged buf(*backend_, 0, kCount * sizeof(float));
  for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(0, i);
  Stream s = backend_->create_stream(0);
  comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kAverage);
  s.synchronize();
  Graph g;
  {
    CaptureSession session(s);
    buf.upload(s);
    comm->all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kAverage);
    buf.download(s);
    g = session.end();
  }
  GraphExec exec = g.instantiate();
  const auto t0 = std::chrono::steady_clock::now();
  comm.reset();  // wrong order: leaked with a warning instead of ncclCommDestroy waiting forever
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  exec.launch(s);
  s.synchronize();
  for (std::size_t i = 0; i < kCount; ++i) ASSERT_EQ(buf.host<float>()[i], input(0, i));
}

TEST_F(NcclTest, BadInputIsRefusedNamingTheCall) {
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)make_nccl_group(backend_, {}); }, {"no devices"});
  sgtest::expect_throw_with<InvalidArgument>(
      [&] {
        (void)make_nccl_group(backend_, {0, 0});
      },
      {"device 0 is given twice", "two NCCL ranks"});
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)make_nccl_group(backend_, {backend_->device_count()}); },
                                             {"does not exist"});
  auto comm = make_nccl_group(backend_, {0}).at(0);
  Staged buf(*backend_, 0, 64);
  Stream s = backend_->create_stream(0);
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { comm->all_reduce(s, buf.dev, 0, 17, DType::kFloat32, ReduceOp::kSum); }, {"all_reduce", "rank 0"});
  sgtest::expect_throw_with<InvalidArgument>(
      [&] { comm->all_reduce(s, buf.pin, 0, 4, DType::kFloat32, ReduceOp::kSum); }, {"pinned host memory"});
}

TEST(NcclCommunicator, HostBackendIsRefused) {
  BackendOptions o;
  o.bind_workers = false;
  auto host = Backend::create(BackendKind::kHost, o);
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)make_nccl_group(host, {0}); },
                                             {"make_nccl_group", "cuda backend", "make_in_process_group"});
}

// --- several GPUs: one thread per rank (NCCL needs group calls when one
// thread drives several devices, and these calls are not grouped).

template <class Fn>
void per_rank(const std::vector<std::shared_ptr<Communicator>>& comms, Fn fn) {
  std::vector<std::exception_ptr> errors(comms.size());
  std::vector<std::thread> threads;
  for (std::size_t r = 0; r < comms.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        fn(static_cast<int>(r), *comms[r]);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

class NcclMultiGpuTest : public NcclTest {
 protected:
  void SetUp() override {
    NcclTest::SetUp();
    if (IsSkipped()) return;
    if (backend_->device_count() < 2)
      GTEST_SKIP() << "needs 2 GPUs (one GPU cannot host two NCCL ranks); this machine has "
                   << backend_->device_count();
    n_ = std::min(backend_->device_count(), 4);
    for (int d = 0; d < n_; ++d) devices_.push_back(d);
    comms_ = make_nccl_group(backend_, devices_);
  }
  void TearDown() override { comms_.clear(); }
  int n_ = 0;
  std::vector<int> devices_;
  std::vector<std::shared_ptr<Communicator>> comms_;
};

TEST_F(NcclMultiGpuTest, AllReduceSumMatchesSerialSum) {
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n_));
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged buf(*backend_, c.device(), kCount * sizeof(float));
    for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(r, i);
    buf.upload(c.stream());
    c.all_reduce(c.stream(), buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);
    buf.download(c.stream());
    c.stream().synchronize();
    c.check();
    out[static_cast<std::size_t>(r)].assign(buf.host<float>().begin(), buf.host<float>().end());
  });
  for (std::size_t i = 0; i < kCount; ++i) {
    float want = 0;
    for (int r = 0; r < n_; ++r) want += input(r, i);
    for (int r = 0; r < n_; ++r) ASSERT_EQ(out[static_cast<std::size_t>(r)][i], want) << "rank " << r << " el " << i;
  }
}

TEST_F(NcclMultiGpuTest, AllReduceInt32MaxMatchesSerialMax) {
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(n_));
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged buf(*backend_, c.device(), kCount * sizeof(std::int32_t));
    for (std::size_t i = 0; i < kCount; ++i) buf.host<std::int32_t>()[i] = static_cast<std::int32_t>(input(r, i));
    buf.upload(c.stream());
    c.all_reduce(c.stream(), buf.dev, 0, kCount, DType::kInt32, ReduceOp::kMax);
    buf.download(c.stream());
    c.stream().synchronize();
    out[static_cast<std::size_t>(r)].assign(buf.host<std::int32_t>().begin(), buf.host<std::int32_t>().end());
  });
  for (std::size_t i = 0; i < kCount; ++i) {
    auto want = static_cast<std::int32_t>(input(0, i));
    for (int r = 1; r < n_; ++r) want = std::max(want, static_cast<std::int32_t>(input(r, i)));
    for (int r = 0; r < n_; ++r) ASSERT_EQ(out[static_cast<std::size_t>(r)][i], want);
  }
}

TEST_F(NcclMultiGpuTest, BroadcastCopiesTheRootEverywhere) {
  const int root = n_ - 1;
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n_));
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged buf(*backend_, c.device(), kCount * sizeof(float));
    for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(r, i);
    buf.upload(c.stream());
    c.broadcast(c.stream(), buf.dev, 0, kCount, DType::kFloat32, root);
    buf.download(c.stream());
    c.stream().synchronize();
    out[static_cast<std::size_t>(r)].assign(buf.host<float>().begin(), buf.host<float>().end());
  });
  for (int r = 0; r < n_; ++r)
    for (std::size_t i = 0; i < kCount; ++i) ASSERT_EQ(out[static_cast<std::size_t>(r)][i], input(root, i));
}

TEST_F(NcclMultiGpuTest, AllGatherConcatenatesInRankOrder) {
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n_));
  const auto n = static_cast<std::size_t>(n_);
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged send(*backend_, c.device(), kCount * sizeof(float)), recv(*backend_, c.device(), n * kCount * sizeof(float));
    for (std::size_t i = 0; i < kCount; ++i) send.host<float>()[i] = input(r, i);
    send.upload(c.stream());
    c.all_gather(c.stream(), send.dev, 0, recv.dev, 0, kCount, DType::kFloat32);
    recv.download(c.stream());
    c.stream().synchronize();
    out[static_cast<std::size_t>(r)].assign(recv.host<float>().begin(), recv.host<float>().end());
  });
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t k = 0; k < n; ++k)
      for (std::size_t i = 0; i < kCount; ++i) ASSERT_EQ(out[r][k * kCount + i], input(static_cast<int>(k), i));
}

TEST_F(NcclMultiGpuTest, ReduceScatterGivesEachRankItsSliceOfTheSum) {
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n_));
  const auto n = static_cast<std::size_t>(n_);
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged send(*backend_, c.device(), n * kCount * sizeof(float)), recv(*backend_, c.device(), kCount * sizeof(float));
    for (std::size_t i = 0; i < n * kCount; ++i) send.host<float>()[i] = input(r, i);
    send.upload(c.stream());
    c.reduce_scatter(c.stream(), send.dev, 0, recv.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);
    recv.download(c.stream());
    c.stream().synchronize();
    out[static_cast<std::size_t>(r)].assign(recv.host<float>().begin(), recv.host<float>().end());
  });
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t i = 0; i < kCount; ++i) {
      float want = 0;
      for (int k = 0; k < n_; ++k) want += input(k, r * kCount + i);
      ASSERT_EQ(out[r][i], want) << "rank " << r << " el " << i;
    }
}

TEST_F(NcclMultiGpuTest, CapturedAllReducePerRankThreadMatchesSerialSum) {
  // Eager warm-up, then each rank captures and replays from its own thread
  // (NCCL: capture and graph launch are collective).
  std::vector<std::vector<float>> out(static_cast<std::size_t>(n_));
  per_rank(comms_, [&](int r, Communicator& c) {
    Staged buf(*backend_, c.device(), kCount * sizeof(float));
    for (std::size_t i = 0; i < kCount; ++i) buf.host<float>()[i] = input(r, i);
    Stream s = backend_->create_stream(c.device());
    buf.upload(s);
    c.all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum);  // warm-up
    s.synchronize();
    Graph g;
    {
      CaptureSession session(s);
      buf.upload(s);
      c.all_reduce(s, buf.dev, 0, kCount, DType::kFloat32, ReduceOp::kSum, "allreduce");
      buf.download(s);
      g = session.end();
    }
    EXPECT_EQ(g.info().count(NodeKind::kCollective) >= 1, true);
    GraphExec exec = g.instantiate();
    for (int rep = 0; rep < 2; ++rep) {
      exec.launch(s);
      s.synchronize();
    }
    c.check();
    out[static_cast<std::size_t>(r)].assign(buf.host<float>().begin(), buf.host<float>().end());
  });
  for (std::size_t i = 0; i < kCount; ++i) {
    float want = 0;
    for (int r = 0; r < n_; ++r) want += input(r, i);
    for (int r = 0; r < n_; ++r) ASSERT_EQ(out[static_cast<std::size_t>(r)][i], want);
  }
}

}  // namespace
