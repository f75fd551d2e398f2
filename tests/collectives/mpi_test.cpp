// The MPI communicator across processes (run under mpirun by ctest, label
// mpi): every op x {float32, int64, float16} x {eager, captured} against a
// serial reference each rank computes from the known per-rank inputs, the
// in-place forms, the order rule (a mismatch found on every rank), a
// missing peer and an abort bounded in time, launch detection against MPI,
// and bad input. Every rank runs the same tests in the same order (the
// tests make communicators, which is collective): no filter, no shuffle.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <fmt/format.h>

#include <stepgraph/collectives/launch.h>
#include <stepgraph/collectives/mpi.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/topology/topology.h>

#include "elements.h"
#include "expect_throw.h"

namespace {

using namespace stepgraph;
using namespace stepgraph::runtime;
using namespace stepgraph::collectives;
using Clock = std::chrono::steady_clock;
using sgtest::elements::decode;
using sgtest::elements::encode;

/// One host device per process, shared by the tests of this process.
std::shared_ptr<Backend> backend() {
  static const std::shared_ptr<Backend> b = [] {
    BackendOptions o;
    o.host_devices = 1;
    o.workers_per_device = 2;
    o.bind_workers = false;
    return Backend::create("host", o);
  }();
  return b;
}

/// The value rank r contributes at element i: k/64 with |k| <= 64, exact in
/// every dtype tested (int64 gets k itself), distinct across ranks.
double input_value(DType t, int r, std::size_t i) {
  const int k = static_cast<int>((i * 7 + static_cast<std::size_t>(r) * 13) % 129) - 64;
  return t == DType::kInt64 ? static_cast<double>(k * 1000 + r) : k / 64.0;
}

struct World {
  int rank = 0, size = 1;
};
World world() {
  const LaunchInfo l = mpi_launch_info();
  return {l.rank, l.size};
}

/// Writes `values` (encoded) into `buffer` and reads results back, through a
/// pinned staging buffer and the stream.
struct Staging {
  Stream& stream;
  Buffer stage;
  void write(const Buffer& to, DType t, const std::vector<double>& values) {
    const std::size_t es = dtype_size(t);
    auto* p = static_cast<std::byte*>(stage.host_data());
    for (std::size_t i = 0; i < values.size(); ++i) encode(t, p + i * es, values[i]);
    stream.copy(to.slice(0, values.size() * es), stage.slice(0, values.size() * es));
    stream.synchronize();
  }
  std::vector<double> read(const Buffer& from, std::size_t at_elem, DType t, std::size_t n) {
    const std::size_t es = dtype_size(t);
    stream.copy(stage.slice(0, n * es), from.slice(at_elem * es, n * es));
    stream.synchronize();
    std::vector<double> out(n);
    const auto* p = static_cast<const std::byte*>(stage.host_data());
    for (std::size_t i = 0; i < n; ++i) out[i] = decode(t, p + i * es);
    return out;
  }
};

struct Case {
  CollectiveKind kind;
  ReduceOp op;
  DType dtype;
  bool captured;
  std::size_t count = 1000 + 37;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string s(to_string(c.kind));
  if (c.kind == CollectiveKind::kAllReduce || c.kind == CollectiveKind::kReduceScatter)
    s += "_" + std::string(to_string(c.op));
  return s + "_" + std::string(to_string(c.dtype)) + (c.captured ? "_captured" : "_eager") +
         (c.count > 100000 ? "_large" : "");
}

std::vector<Case> all_cases() {
  std::vector<Case> out;
  for (bool cap : {false, true})
    for (DType t : {DType::kFloat32, DType::kInt64, DType::kFloat16}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin}) {
        out.push_back({CollectiveKind::kAllReduce, op, t, cap});
        out.push_back({CollectiveKind::kReduceScatter, op, t, cap});
      }
      out.push_back({CollectiveKind::kBroadcast, ReduceOp::kSum, t, cap});
      out.push_back({CollectiveKind::kAllGather, ReduceOp::kSum, t, cap});
    }
  // Large enough for the segmented ring (Note [Segmented ring AllReduce over
  // MPI]: >= 256 KiB, 256 KiB segments), with a count no rank count divides
  // evenly: chunks of unequal length, several segments each, a short last one.
  for (bool cap : {false, true})
    for (DType t : {DType::kFloat32, DType::kInt64})
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage, ReduceOp::kMax, ReduceOp::kMin})
        out.push_back({CollectiveKind::kAllReduce, op, t, cap, 400000 + 37});
  return out;
}

/// The serial reference of element `at` of a reduction over every rank.
double reduced(DType t, ReduceOp op, int n, std::size_t at) {
  double ref = input_value(t, 0, at);
  for (int k = 1; k < n; ++k) {
    const double x = input_value(t, k, at);
    ref = op == ReduceOp::kMax ? std::max(ref, x) : op == ReduceOp::kMin ? std::min(ref, x) : ref + x;
  }
  if (op == ReduceOp::kAverage) ref = t == DType::kInt64 ? std::trunc(ref / n) : ref / n;
  return ref;
}

/// How far a result may be from the float64 reference: exact but for the
/// average's division (one rounding of the quotient to the storage type).
double tolerance(DType t, ReduceOp op, double ref) {
  if (t == DType::kInt64 || op != ReduceOp::kAverage) return 0;
  const double u = t == DType::kFloat16 ? 0x1p-11 : 0x1p-24;
  return u * std::abs(ref) + 0x1p-25;  // + half a float16 subnormal step
}

class MpiEveryCollective : public ::testing::TestWithParam<Case> {};

TEST_P(MpiEveryCollective, MatchesTheSerialReference) {
  const Case c = GetParam();
  const World w = world();
  const auto n = static_cast<std::size_t>(w.size);
  const auto r = static_cast<std::size_t>(w.rank);
  CommunicatorOptions opt;
  opt.timeout = std::chrono::seconds(30);
  auto comm = make_mpi_communicator(backend(), 0, opt);
  ASSERT_EQ(comm->rank(), w.rank);
  ASSERT_EQ(comm->world_size(), w.size);
  const std::size_t count = c.count;
  const std::size_t es = dtype_size(c.dtype);
  const int root = w.size - 1;
  std::size_t in_elems = count, out_elems = count;
  if (c.kind == CollectiveKind::kAllGather) out_elems = count * n;
  if (c.kind == CollectiveKind::kReduceScatter) in_elems = count * n;

  Stream stream = backend()->create_stream(0);
  Staging io{stream, backend()->allocate_pinned(std::max(in_elems, out_elems) * es)};
  Buffer send = backend()->allocate(0, in_elems * es);
  const bool in_place = c.kind == CollectiveKind::kAllReduce || c.kind == CollectiveKind::kBroadcast;
  Buffer recv = in_place ? Buffer() : backend()->allocate(0, out_elems * es);
  std::vector<double> mine(in_elems);
  for (std::size_t i = 0; i < in_elems; ++i) mine[i] = input_value(c.dtype, w.rank, i);
  io.write(send, c.dtype, mine);

  auto issue = [&] {
    switch (c.kind) {
      case CollectiveKind::kAllReduce:
        comm->all_reduce(stream, send, 0, count, c.dtype, c.op);
        break;
      case CollectiveKind::kBroadcast:
        comm->broadcast(stream, send, 0, count, c.dtype, root);
        break;
      case CollectiveKind::kAllGather:
        comm->all_gather(stream, send, 0, recv, 0, count, c.dtype);
        break;
      case CollectiveKind::kReduceScatter:
        comm->reduce_scatter(stream, send, 0, recv, 0, count, c.dtype, c.op);
        break;
    }
  };
  if (c.captured) {
    GraphExec exec = [&] {
      CaptureSession session(stream);
      issue();
      Graph g = session.end();
      EXPECT_EQ(g.info().count(NodeKind::kCollective), 1u);
      return g.instantiate();
    }();
    exec.launch(stream);
    stream.synchronize();
  } else {
    issue();
  }
  const auto got = io.read(in_place ? send : recv, 0, c.dtype, out_elems);
  ASSERT_FALSE(comm->async_error().has_value()) << *comm->async_error();

  for (std::size_t i = 0; i < out_elems; ++i) {
    double ref = 0;
    switch (c.kind) {
      case CollectiveKind::kBroadcast:
        ref = input_value(c.dtype, root, i);
        break;
      case CollectiveKind::kAllGather:
        ref = input_value(c.dtype, static_cast<int>(i / count), i % count);
        break;
      case CollectiveKind::kAllReduce:
        ref = reduced(c.dtype, c.op, w.size, i);
        break;
      case CollectiveKind::kReduceScatter:
        ref = reduced(c.dtype, c.op, w.size, r * count + i);
        break;
    }
    ASSERT_LE(std::abs(got[i] - ref), tolerance(c.dtype, c.op, ref))
        << "rank " << w.rank << " element " << i << " got " << got[i] << " expected " << ref;
  }
}

INSTANTIATE_TEST_SUITE_P(Mpi, MpiEveryCollective, ::testing::ValuesIn(all_cases()), case_name);

TEST(MpiCommunicator, InPlaceGatherAndScatterMatchTheReference) {
  // all_gather with the send range inside the receive range at this rank's
  // block, and reduce_scatter receiving into its own block of the send
  // range (MPI forbids aliased buffers: the communicator must not pass
  // them), float32 (MPI's sum) and float16 (the local reduction).
  const World w = world();
  const auto n = static_cast<std::size_t>(w.size);
  const auto r = static_cast<std::size_t>(w.rank);
  for (DType t : {DType::kFloat32, DType::kFloat16}) {
    auto comm = make_mpi_communicator(backend(), 0);
    const std::size_t count = 333, es = dtype_size(t);
    Stream stream = backend()->create_stream(0);
    Staging io{stream, backend()->allocate_pinned(count * n * es)};
    Buffer big = backend()->allocate(0, count * n * es);

    std::vector<double> all(count * n, 0.0);
    for (std::size_t i = 0; i < count; ++i) all[r * count + i] = input_value(t, w.rank, i);
    io.write(big, t, all);
    comm->all_gather(stream, big, r * count * es, big, 0, count, t);
    auto got = io.read(big, 0, t, count * n);
    for (std::size_t i = 0; i < count * n; ++i)
      ASSERT_EQ(got[i], input_value(t, static_cast<int>(i / count), i % count)) << to_string(t) << " gather " << i;

    std::vector<double> mine(count * n);
    for (std::size_t i = 0; i < count * n; ++i) mine[i] = input_value(t, w.rank, i);
    io.write(big, t, mine);
    comm->reduce_scatter(stream, big, 0, big, r * count * es, count, t, ReduceOp::kSum);
    got = io.read(big, r * count, t, count);
    for (std::size_t i = 0; i < count; ++i)
      ASSERT_EQ(got[i], reduced(t, ReduceOp::kSum, w.size, r * count + i)) << to_string(t) << " scatter " << i;
    ASSERT_FALSE(comm->async_error().has_value()) << *comm->async_error();
  }
}

TEST(MpiCommunicator, ACapturedStepReplaysManyTimes) {
  // One graph, launched 12 times: every replay is a new collective (a new
  // sequence number) and sums what the previous one left.
  const World w = world();
  auto comm = make_mpi_communicator(backend(), 0);
  Stream stream = backend()->create_stream(0);
  Staging io{stream, backend()->allocate_pinned(64 * 4)};
  Buffer buf = backend()->allocate(0, 64 * 4);
  io.write(buf, DType::kFloat32, std::vector<double>(64, 1.0));
  GraphExec exec = [&] {
    CaptureSession session(stream);
    comm->all_reduce(stream, buf, 0, 64, DType::kFloat32, ReduceOp::kSum, "grad");
    return session.end().instantiate();
  }();
  for (int i = 0; i < 12; ++i) exec.launch(stream);  // size^12 is exact in float32 for 2 and 3 ranks
  const auto got = io.read(buf, 0, DType::kFloat32, 64);
  for (double v : got) ASSERT_EQ(v, std::pow(static_cast<double>(w.size), 12));
  EXPECT_EQ(comm->calls(), 1u);
  ASSERT_FALSE(comm->async_error().has_value()) << *comm->async_error();
}

TEST(MpiCommunicator, ADifferentOrderOnOneRankIsAMismatchOnEveryRank) {
  const World w = world();
  for (int run = 0; run < 10; ++run) {
    CommunicatorOptions opt;
    opt.timeout = std::chrono::seconds(10);
    auto comm = make_mpi_communicator(backend(), 0, opt);
    Stream stream = backend()->create_stream(0);
    Buffer a = backend()->allocate(0, 64), b = backend()->allocate(0, 128);
    const auto start = Clock::now();
    if (w.rank == w.size - 1) {  // the other order
      comm->all_reduce(stream, b, 0, 32, DType::kFloat32, ReduceOp::kSum, "grad b");
      comm->all_reduce(stream, a, 0, 16, DType::kFloat32, ReduceOp::kSum, "grad a");
    } else {
      comm->all_reduce(stream, a, 0, 16, DType::kFloat32, ReduceOp::kSum, "grad a");
      comm->all_reduce(stream, b, 0, 32, DType::kFloat32, ReduceOp::kSum, "grad b");
    }
    stream.synchronize();
    ASSERT_LT(Clock::now() - start, std::chrono::seconds(5)) << "run " << run;
    const auto e = comm->async_error();
    ASSERT_TRUE(e.has_value()) << "rank " << w.rank << " run " << run;
    EXPECT_NE(e->find("CollectiveMismatch at collective #0"), std::string::npos) << *e;
    EXPECT_NE(e->find("rank 0 called all_reduce sum float32 x16 'grad a'"), std::string::npos) << *e;
    EXPECT_NE(e->find(fmt::format("rank {} called all_reduce sum float32 x32 'grad b'", w.size - 1)), std::string::npos)
        << *e;
    EXPECT_THROW(comm->check(), CollectiveMismatch);
    EXPECT_THROW(comm->all_reduce(stream, a, 0, 16, DType::kFloat32, ReduceOp::kSum), CollectiveMismatch);
  }
}

TEST(MpiCommunicator, BadInputIsTypedAndCallsNothing) {
  const World w = world();
  sgtest::expect_throw_with<InvalidArgument>([] { (void)make_mpi_communicator(nullptr, 0); }, {"no backend"});
  sgtest::expect_throw_with<InvalidArgument>([] { (void)make_mpi_communicator(backend(), 3); },
                                             {"device 3 does not exist"});
  CommunicatorOptions zero;
  zero.timeout = std::chrono::milliseconds(0);
  sgtest::expect_throw_with<InvalidArgument>([&] { (void)make_mpi_communicator(backend(), 0, zero); },
                                             {"timeout must be positive"});
  auto comm = make_mpi_communicator(backend(), 0);
  Stream stream = backend()->create_stream(0);
  Buffer small = backend()->allocate(0, 16);
  EXPECT_THROW(comm->all_reduce(stream, small, 0, 8, DType::kFloat32, ReduceOp::kSum), InvalidArgument);
  EXPECT_THROW(comm->broadcast(stream, small, 0, 4, DType::kFloat32, w.size), InvalidArgument);
  EXPECT_EQ(comm->calls(), 0u);
  // Nothing was enqueued on any rank: the next collective is #0 everywhere.
  comm->all_reduce(stream, small, 0, 4, DType::kFloat32, ReduceOp::kSum);
  stream.synchronize();
  EXPECT_FALSE(comm->async_error().has_value()) << *comm->async_error();
}

TEST(MpiCommunicator, DetectLaunchAgreesWithMpi) {
  const LaunchInfo env = detect_launch();
  const LaunchInfo mpi = mpi_launch_info();
  EXPECT_EQ(env.source, "openmpi");
  EXPECT_EQ(mpi.source, "mpi");
  EXPECT_EQ(env.rank, mpi.rank);
  EXPECT_EQ(env.size, mpi.size);
  EXPECT_EQ(env.local_rank, mpi.local_rank);
  EXPECT_EQ(env.local_size, mpi.local_size);
}

TEST(MpiCommunicator, ALauncherEnvironmentDisagreeingWithMpiFailsOnEveryRank) {
  // The last rank believes the world is one larger (a process of another
  // launch): every rank, not only that one, must refuse.
  const LaunchInfo mpi = mpi_launch_info();
  const char* old = std::getenv("OMPI_COMM_WORLD_SIZE");
  const std::string saved = old ? old : "";
  if (mpi.rank == mpi.size - 1) ::setenv("OMPI_COMM_WORLD_SIZE", std::to_string(mpi.size + 1).c_str(), 1);
  sgtest::expect_throw_with<InvalidArgument>([] { (void)mpi_launch_info(); },
                                             {fmt::format("rank {} of {}", mpi.size - 1, mpi.size + 1)});
  if (old)
    ::setenv("OMPI_COMM_WORLD_SIZE", saved.c_str(), 1);
  else
    ::unsetenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_NO_THROW((void)mpi_launch_info());
}

TEST(MpiCommunicator, EveryLocalRankGetsItsOwnPlanOfTheSameAssignment) {
  // Each local rank's device, computed from the gathered bindings, is the
  // one the whole assignment gives it (kHost here: no GPU on this machine).
  const LaunchInfo mpi = mpi_launch_info();
  const auto& live = topology::Topology::live();
  const LocalDevice mine = mpi_choose_local_device(live, DeviceKind::kHost);
  EXPECT_EQ(mine.local_rank, mpi.local_rank);
  EXPECT_EQ(mine.gpu, -1);
  EXPECT_GE(mine.numa_node, 0);
  // Unbound ranks (--bind-to none) spread over the NUMA nodes.
  EXPECT_EQ(mine.numa_node, static_cast<int>(static_cast<std::size_t>(mpi.local_rank) % live.numa_count()));
  if (live.gpu_count() == 0) {
    sgtest::expect_throw_with<InvalidArgument>([&] { (void)mpi_choose_local_device(live, DeviceKind::kGpu); },
                                               {"has no GPU"});
  } else if (live.gpu_count() < static_cast<std::size_t>(mpi.local_size)) {
    sgtest::expect_throw_with<InvalidArgument>([&] { (void)mpi_choose_local_device(live, DeviceKind::kGpu); },
                                               {fmt::format("{} local rank(s)", mpi.local_size)});
  }
}

TEST(MpiCommunicator, AMissingPeerIsATimeoutWithinItsBound) {
  // The last rank never calls: the others fail with CollectiveTimeout after
  // the timeout, not a hang. (Last in this file: their request stays in
  // flight, Note [MPI communicators].)
  const World w = world();
  CommunicatorOptions opt;
  opt.timeout = std::chrono::milliseconds(300);
  auto comm = make_mpi_communicator(backend(), 0, opt);
  Stream stream = backend()->create_stream(0);
  Buffer buf = backend()->allocate(0, 64);
  if (w.rank != w.size - 1) {
    const auto start = Clock::now();
    comm->all_reduce(stream, buf, 0, 16, DType::kFloat32, ReduceOp::kSum, "lonely");
    stream.synchronize();
    const auto waited = Clock::now() - start;
    EXPECT_GE(waited, std::chrono::milliseconds(290));
    EXPECT_LT(waited, std::chrono::seconds(3));
    sgtest::expect_throw_with<CollectiveTimeout>([&] { comm->check(); }, {"CollectiveTimeout", "300 ms", "'lonely'"});
    // Later work is skipped at once.
    EXPECT_THROW(comm->all_reduce(stream, buf, 0, 16, DType::kFloat32, ReduceOp::kSum), CollectiveTimeout);
  } else {
    EXPECT_FALSE(comm->async_error().has_value());
  }
}

TEST(MpiCommunicator, AbortWakesARankWaitingForItsPeers) {
  const World w = world();
  auto comm = make_mpi_communicator(backend(), 0);  // 60 s timeout: only the abort can end the wait
  Stream stream = backend()->create_stream(0);
  Buffer buf = backend()->allocate(0, 64);
  if (w.rank == 0) {
    comm->all_reduce(stream, buf, 0, 16, DType::kFloat32, ReduceOp::kSum);
    std::thread aborter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      comm->abort("test: peer gone");
    });
    const auto start = Clock::now();
    stream.synchronize();
    aborter.join();
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
    EXPECT_TRUE(comm->aborted());
    sgtest::expect_throw_with<CommunicatorAborted>([&] { comm->check(); }, {"rank 0", "test: peer gone"});
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  stepgraph::collectives::MpiSession mpi(&argc, &argv);
  return RUN_ALL_TESTS();
}
