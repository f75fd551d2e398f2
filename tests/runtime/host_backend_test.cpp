// Host-backend-only checks: the properties that make the conformance suite
// meaningful (a missing dependency is visible, unordered work overlaps) and
// the behaviour only the host backend can show (the failing node of an
// instantiate error, asynchronous faults naming the node).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <set>
#include <thread>

#include <stepgraph/runtime/backend.h>

#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

std::shared_ptr<rt::Backend> host(std::uint64_t seed, int devices = 1, int workers = 2) {
  rt::BackendOptions o;
  o.shuffle_seed = seed;
  o.host_devices = devices;
  o.workers_per_device = workers;
  return rt::Backend::create(rt::BackendKind::kHost, o);
}

// Two order-sensitive updates of one value on two streams. With `ordered`,
// an event orders them; without, nothing does. Both streams first wait on a
// gate the test opens once everything is enqueued, so that the two kernels
// become ready together and the shuffle (not the submission order) decides.
std::int64_t two_streams(std::uint64_t seed, bool ordered) {
  auto be = host(seed);
  auto s1 = be->create_stream(0);
  auto s2 = be->create_stream(0);
  auto gate_stream = be->create_stream(0);
  auto x = be->allocate_pinned(64 * sizeof(std::int64_t));
  for (auto& v : x.host_span<std::int64_t>()) v = 1;
  auto* p = x.data<std::int64_t>();
  std::atomic<bool> open{false};
  auto gate = be->create_event(0);
  gate_stream.host_fn("gate", [&open] {
    while (!open.load()) std::this_thread::yield();
  });
  gate_stream.record(gate);
  s1.wait(gate);
  s2.wait(gate);
  auto e = be->create_event(0);
  rt::launch(s1, sgtest::affine_i64(), {.accesses = {rt::read_write(x)}}, p, static_cast<const std::int64_t*>(p),
             std::size_t{64}, std::int64_t{2}, std::int64_t{3});
  if (ordered) {
    s1.record(e);
    s2.wait(e);
  }
  rt::launch(s2, sgtest::affine_i64(), {.accesses = {rt::read_write(x)}}, p, static_cast<const std::int64_t*>(p),
             std::size_t{64}, std::int64_t{5}, std::int64_t{-1});
  open = true;
  s1.synchronize();
  s2.synchronize();
  std::int64_t sum = 0;
  for (auto v : x.host_span<std::int64_t>()) sum += v;
  return sum;
}

TEST(HostBackend, AMissingDependencyShowsUpUnderTheShuffle) {
  const std::int64_t serial = 64 * ((1 * 2 + 3) * 5 - 1);
  std::set<std::int64_t> unordered;
  for (std::uint64_t seed = 1; seed <= 24; ++seed) {
    EXPECT_EQ(two_streams(seed, true), serial) << "seed " << seed;
    unordered.insert(two_streams(seed, false));
  }
  // Without the event the two kernels run in either order or overlap: at
  // least one seed must give something other than the serial result.
  EXPECT_TRUE(unordered.size() > 1 || *unordered.begin() != serial)
      << "the host backend ran unordered work in submission order every time";
}

TEST(HostBackend, AMissingGraphEdgeShowsUpUnderTheShuffle) {
  std::set<std::int64_t> results;
  for (std::uint64_t seed = 1; seed <= 24; ++seed) {
    auto be = host(seed);
    auto s = be->create_stream(0);
    auto side = be->create_stream(0);
    auto x = be->allocate_pinned(64 * sizeof(std::int64_t));
    auto* p = x.data<std::int64_t>();
    auto fork = be->create_event(0);
    auto join = be->create_event(0);
    s.begin_capture();
    s.record(fork);
    side.wait(fork);  // the two updates below are unordered in the graph
    rt::launch(s, sgtest::affine_i64(), {.accesses = {rt::read_write(x)}}, p, static_cast<const std::int64_t*>(p),
               std::size_t{64}, std::int64_t{2}, std::int64_t{3});
    rt::launch(side, sgtest::affine_i64(), {.accesses = {rt::read_write(x)}}, p, static_cast<const std::int64_t*>(p),
               std::size_t{64}, std::int64_t{5}, std::int64_t{-1});
    side.record(join);
    s.wait(join);
    auto exec = s.end_capture().instantiate();
    for (auto& v : x.host_span<std::int64_t>()) v = 1;
    exec.launch(s);
    s.synchronize();
    std::int64_t sum = 0;
    for (auto v : x.host_span<std::int64_t>()) sum += v;
    results.insert(sum);
  }
  EXPECT_GT(results.size(), 1u) << "unordered graph nodes always ran in one order";
}

TEST(HostBackend, UnorderedWorkRunsConcurrently) {
  // Each kernel opens its own latch and then waits for the other's: they can
  // only both finish if two workers run them at the same time.
  auto be = host(7, 1, 2);
  auto s1 = be->create_stream(0);
  auto s2 = be->create_stream(0);
  auto flags = be->allocate_pinned(4 * sizeof(std::int32_t));
  auto* f = static_cast<std::int32_t*>(flags.host_data());
  std::fill(f, f + 4, 0);
  s1.host_fn("open a, wait b",
             [f] {
               std::atomic_ref<std::int32_t>(f[0]).store(1);
               while (std::atomic_ref<std::int32_t>(f[1]).load() == 0) std::this_thread::yield();
             },
             {rt::read_write(flags)});
  s2.host_fn("open b, wait a",
             [f] {
               std::atomic_ref<std::int32_t>(f[1]).store(1);
               while (std::atomic_ref<std::int32_t>(f[0]).load() == 0) std::this_thread::yield();
             },
             {rt::read_write(flags)});
  auto done = be->create_event(0);
  s2.record(done);
  EXPECT_TRUE(done.wait_for(std::chrono::seconds(20)));
  s1.synchronize();
}

TEST(HostBackend, InstantiateNamesTheNodeItCannotRun) {
  auto be = host(1);
  auto s = be->create_stream(0);
  auto x = be->allocate(0, 64);
  rt::Kernel<float*> device_only{"device_only", nullptr, nullptr};
  s.begin_capture();
  s.memset(x.slice(), 0, "zero");
  rt::launch(s, device_only, {.name = "gpu-only-kernel", .accesses = {rt::write(x)}}, x.data<float>());
  auto g = s.end_capture();
  try {
    (void)g.instantiate();
    FAIL() << "instantiate must fail";
  } catch (const rt::GraphInstantiateError& e) {
    EXPECT_EQ(e.node(), "gpu-only-kernel");
  }
  EXPECT_THROW(rt::launch(s, device_only, {.accesses = {rt::write(x)}}, x.data<float>()), sg::InvalidArgument);
}

TEST(HostBackend, FaultsAreAsynchronousAndNameTheNode) {
  auto be = host(1);
  auto s = be->create_stream(0);
  auto x = be->allocate(0, 64);
  s.begin_capture();
  rt::launch(s, sgtest::fault(), {.name = "bad-node", .accesses = {rt::write(x)}}, x.data<std::int32_t>());
  auto exec = s.end_capture().instantiate();
  EXPECT_NO_THROW(exec.launch(s));  // the launch itself returns
  try {
    s.synchronize();
    FAIL() << "synchronize must report the fault";
  } catch (const sg::DeviceFault& e) {
    EXPECT_NE(std::string(e.what()).find("bad-node"), std::string::npos) << e.what();
  }
  // Sticky on device 0 only.
  EXPECT_THROW(exec.launch(s), sg::DeviceFault);
}

TEST(HostBackend, FaultOnOneDeviceLeavesTheOtherWorking) {
  auto be = host(1, 2);
  auto s0 = be->create_stream(0);
  auto s1 = be->create_stream(1);
  auto x0 = be->allocate(0, 64);
  auto x1 = be->allocate(1, 64);
  rt::launch(s0, sgtest::fault(), {.accesses = {rt::write(x0)}}, x0.data<std::int32_t>());
  EXPECT_THROW(s0.synchronize(), sg::DeviceFault);
  s1.memset(x1.slice(), 1);
  EXPECT_NO_THROW(s1.synchronize());
  EXPECT_FALSE(be->device_fault(1).has_value());
}

TEST(HostBackend, DestroyingEverythingWithWorkInFlightDoesNotHang) {
  for (int i = 0; i < 20; ++i) {
    auto be = host(static_cast<std::uint64_t>(i) + 1);
    auto s = be->create_stream(0);
    auto x = be->allocate(0, 1 << 16);
    for (int k = 0; k < 50; ++k) s.memset(x.slice(), static_cast<unsigned char>(k));
    // s, x and be go out of scope with the memsets possibly still queued.
  }
  SUCCEED();
}

TEST(HostBackend, WorkersAreBoundToTheirDevicesNumaNode) {
  auto be = host(1);
  const auto info = be->device(0);
  EXPECT_GE(info.numa_node, 0);
  EXPECT_FALSE(info.cpus.empty());
  EXPECT_EQ(info.workers, 2);
}

}  // namespace
