// The backend conformance suite: one typed suite, instantiated for the host
// backend (test_runtime_host, label cpu) and for the cuda backend
// (test_runtime_cuda, label gpu; skipped with the reason where no device is
// present). Each test checks a CUDA semantic against an independent
// reference: a serial computation, or the behaviour CUDA documents.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <future>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/runtime/backend.h>

#include "backend_tags.h"
#include "expect_throw.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

template <class Tag>
class Conformance : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Tag::kKind == rt::BackendKind::kCuda) {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    }
    be_ = make(1);
  }
  static std::shared_ptr<rt::Backend> make(int devices, std::uint64_t seed = 0x5eed) {
    rt::BackendOptions o;
    o.host_devices = devices;
    o.shuffle_seed = seed;
    return rt::Backend::create(Tag::kKind, o);
  }
  static constexpr bool host() { return Tag::kKind == rt::BackendKind::kHost; }

  /// Reads a device buffer back through a pinned buffer (as CUDA must).
  template <class T>
  std::vector<T> read(const rt::Buffer& b, rt::StreamRef s) {
    auto pinned = be_->allocate_pinned(b.size());
    s.copy(pinned.slice(), b.slice());
    s.synchronize();
    auto span = pinned.host_span<T>();
    return {span.begin(), span.end()};
  }
  template <class T>
  rt::Buffer upload(const std::vector<T>& v, rt::StreamRef s, int device = 0) {
    auto pinned = be_->allocate_pinned(v.size() * sizeof(T));
    std::memcpy(pinned.host_data(), v.data(), v.size() * sizeof(T));
    auto d = be_->allocate(device, v.size() * sizeof(T));
    s.copy(d.slice(), pinned.slice());
    s.synchronize();
    return d;
  }

  std::shared_ptr<rt::Backend> be_;
};

using sgtest::Backends;
TYPED_TEST_SUITE(Conformance, Backends);

constexpr std::size_t kN = 1024;

// ------------------------------------------------------------ devices, memory

TYPED_TEST(Conformance, DevicesDescribeThemselves) {
  ASSERT_GE(this->be_->device_count(), 1);
  const auto info = this->be_->device(0);
  EXPECT_EQ(info.index, 0);
  EXPECT_EQ(info.backend, TypeParam::kKind);
  EXPECT_FALSE(info.name.empty());
  EXPECT_THROW((void)this->be_->device(this->be_->device_count()), sg::InvalidArgument);
}

TYPED_TEST(Conformance, ZeroSizedBufferIsRefused) {
  EXPECT_THROW((void)this->be_->allocate(0, 0), sg::InvalidArgument);
  EXPECT_THROW((void)this->be_->allocate_pinned(0), sg::InvalidArgument);
  EXPECT_THROW((void)this->be_->allocate(this->be_->device_count(), 16), sg::InvalidArgument);
}

TYPED_TEST(Conformance, DeviceMemoryIsNotReadableInPlace) {
  auto d = this->be_->allocate(0, 64);
  EXPECT_EQ(d.kind(), rt::MemoryKind::kDevice);
  EXPECT_EQ(d.device(), 0);
  EXPECT_THROW((void)d.host_data(), sg::InvalidState);
  auto p = this->be_->allocate_pinned(64);
  EXPECT_EQ(p.kind(), rt::MemoryKind::kPinnedHost);
  EXPECT_EQ(p.device(), -1);
  EXPECT_NE(p.host_data(), nullptr);
}

TYPED_TEST(Conformance, BufferMovesLikeAnOwner) {
  auto a = this->be_->allocate(0, 128);
  const auto id = a.id();
  rt::Buffer b = std::move(a);
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): tested on purpose
  EXPECT_EQ(b.id(), id);
  EXPECT_THROW((void)a.size(), sg::InvalidState);
  auto& self = b;
  b = std::move(self);
  EXPECT_TRUE(b.valid());
  EXPECT_EQ(b.size(), 128u);
  rt::Buffer c;
  c = std::move(b);
  EXPECT_EQ(c.id(), id);
}

TYPED_TEST(Conformance, StreamEventGraphMoveLikeOwners) {
  auto s = this->be_->create_stream(0);
  rt::Stream s2 = std::move(s);
  EXPECT_FALSE(s.valid());  // NOLINT
  EXPECT_THROW(s.synchronize(), sg::InvalidState);
  s2.synchronize();
  auto& self = s2;
  s2 = std::move(self);
  s2.synchronize();

  auto e = this->be_->create_event(0);
  rt::Event e2 = std::move(e);
  EXPECT_FALSE(e.valid());  // NOLINT
  EXPECT_THROW((void)e.query(), sg::InvalidState);
  EXPECT_TRUE(e2.query());

  auto buf = this->be_->allocate(0, kN * sizeof(float));
  s2.begin_capture();
  rt::launch(s2, sgtest::fill_f32(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(buf)}},
             buf.template data<float>(), kN, 1.0f);
  rt::Graph g = s2.end_capture();
  rt::Graph g2 = std::move(g);
  EXPECT_FALSE(g.valid());  // NOLINT
  EXPECT_THROW((void)g.node_count(), sg::InvalidState);
  rt::GraphExec x = g2.instantiate();
  rt::GraphExec x2 = std::move(x);
  EXPECT_THROW(x.launch(s2), sg::InvalidState);  // NOLINT
  x2.launch(s2);
  s2.synchronize();
}

// ------------------------------------------------------------ copies, kernels

TYPED_TEST(Conformance, CopiesAndMemsetMoveRealBytes) {
  auto s = this->be_->create_stream(0);
  std::vector<std::int64_t> v(kN);
  std::iota(v.begin(), v.end(), 7);
  auto d = this->template upload<std::int64_t>(v, s);
  auto d2 = this->be_->allocate(0, d.size());
  s.copy(d2.slice(), d.slice());                       // device to device
  s.memset(d2.slice(0, 8 * sizeof(std::int64_t)), 0);  // first 8 zeroed
  auto back = this->template read<std::int64_t>(d2, s);
  for (std::size_t i = 0; i < kN; ++i) EXPECT_EQ(back[i], i < 8 ? 0 : static_cast<std::int64_t>(i) + 7) << i;
}

TYPED_TEST(Conformance, CopyOfMismatchedOrOutOfRangeSlicesIsRefused) {
  auto s = this->be_->create_stream(0);
  auto a = this->be_->allocate(0, 64);
  auto b = this->be_->allocate(0, 32);
  EXPECT_THROW(s.copy(a.slice(), b.slice()), sg::InvalidArgument);
  EXPECT_THROW(s.copy(a.slice(48, 32), b.slice()), sg::InvalidArgument);
  EXPECT_THROW(s.memset(a.slice(0, 0), 1), sg::InvalidArgument);
  s.synchronize();  // the stream is still usable
}

// CUDA runs a host-to-host copy synchronously on the calling thread, not as
// stream work ("API synchronization behavior"): both backends refuse it.
TYPED_TEST(Conformance, AHostToHostCopyIsRefused) {
  auto s = this->be_->create_stream(0);
  auto a = this->be_->allocate_pinned(64);
  auto b = this->be_->allocate_pinned(64);
  sgtest::expect_throw_with<sg::InvalidArgument>([&] { s.copy(b.slice(), a.slice(), "h2h"); }, {"'h2h'", "host_fn"});
}

// A NUMA node missing from the topology this process sees (filtered by a
// cgroup or cpuset) gives pinned memory without placement, not an error.
TYPED_TEST(Conformance, PinnedMemoryForANumaNodeMissingFromTheTopologyIsStillPinned) {
  constexpr int kNoSuchNode = 4095;
  auto s = this->be_->create_stream(0);
  auto p = this->be_->allocate_pinned(kN * sizeof(float), kNoSuchNode);
  rt::launch(s, sgtest::fill_f32(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(p)}},
             p.template data<float>(), kN, 6.0f);
  s.synchronize();
  for (float f : p.template host_span<float>()) ASSERT_EQ(f, 6.0f);
}

TYPED_TEST(Conformance, KernelsComputeWhatASerialLoopComputes) {
  auto s = this->be_->create_stream(0);
  std::vector<float> x(kN), y(kN);
  for (std::size_t i = 0; i < kN; ++i) {
    x[i] = static_cast<float>(i) * 0.5f;
    y[i] = 3.0f - static_cast<float>(i);
  }
  auto dx = this->template upload<float>(x, s);
  auto dy = this->template upload<float>(y, s);
  rt::launch(s, sgtest::axpy_f32(),
             {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(dy), rt::read(dx)}},
             dy.template data<float>(), static_cast<const float*>(dx.template data<float>()), kN, 2.0f);
  auto out = this->template read<float>(dy, s);
  for (std::size_t i = 0; i < kN; ++i) EXPECT_EQ(out[i], 2.0f * x[i] + y[i]) << i;
}

TYPED_TEST(Conformance, LaunchDeclaringOutOfRangeOrUnregisteredMemoryIsRefused) {
  auto s = this->be_->create_stream(0);
  auto d = this->be_->allocate(0, 64);
  EXPECT_THROW(rt::launch(s, sgtest::fill_f32(), {.accesses = {rt::write(d, 32, 64)}}, d.template data<float>(),
                          std::size_t{16}, 1.0f),
               sg::InvalidArgument);
  std::vector<float> unregistered(16);
  try {
    rt::launch(s, sgtest::fill_f32(), {.accesses = {rt::host_range(unregistered.data(), 64, rt::Access::kWrite)}},
               unregistered.data(), std::size_t{16}, 1.0f);
    FAIL() << "a launch touching unregistered host memory must throw";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("not registered"), std::string::npos) << e.what();
  }
  // Registered, it is accepted and read in place.
  auto reg = this->be_->register_host(unregistered.data(), unregistered.size() * sizeof(float));
  rt::launch(s, sgtest::fill_f32(), {.accesses = {rt::host_range(unregistered.data(), 64, rt::Access::kWrite)}},
             reg.template data<float>(), std::size_t{16}, 4.0f);
  s.synchronize();
  for (float v : unregistered) EXPECT_EQ(v, 4.0f);
}

TYPED_TEST(Conformance, HostFunctionsRunInStreamOrder) {
  auto s = this->be_->create_stream(0);
  auto p = this->be_->allocate_pinned(sizeof(std::int64_t));
  auto* v = static_cast<std::int64_t*>(p.host_data());
  *v = 1;
  for (int i = 0; i < 10; ++i) {
    s.host_fn("x2+i", [v, i] { *v = *v * 2 + i; }, {rt::read_write(p)});
  }
  s.synchronize();
  std::int64_t ref = 1;
  for (int i = 0; i < 10; ++i) ref = ref * 2 + i;
  EXPECT_EQ(*v, ref);
}

// ------------------------------------------------------------ ordering

// Order-sensitive work: x -> x*mul + add, applied in a fixed order. Any
// reordering or overlap gives another value.
std::int64_t serial_affine(std::int64_t x, const std::vector<std::pair<std::int64_t, std::int64_t>>& ops) {
  for (auto [m, a] : ops) x = x * m + a;
  return x;
}

TYPED_TEST(Conformance, EventsOrderWorkAcrossStreams) {
  auto s1 = this->be_->create_stream(0);
  auto s2 = this->be_->create_stream(0);
  auto x = this->template upload<std::int64_t>(std::vector<std::int64_t>(kN, 3), s1);
  auto* px = x.template data<std::int64_t>();
  const std::vector<std::pair<std::int64_t, std::int64_t>> ops{{2, 1}, {3, -4}, {5, 2}, {-1, 9}};
  auto e = this->be_->create_event(0);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    auto& s = (i % 2 == 0) ? s1 : s2;
    auto& other = (i % 2 == 0) ? s2 : s1;
    rt::launch(s, sgtest::affine_i64(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(x)}}, px,
               static_cast<const std::int64_t*>(px), kN, ops[i].first, ops[i].second);
    s.record(e);
    other.wait(e);
  }
  s1.synchronize();
  s2.synchronize();
  auto out = this->template read<std::int64_t>(x, s1);
  const auto ref = serial_affine(3, ops);
  for (auto v : out) ASSERT_EQ(v, ref);
}

TYPED_TEST(Conformance, WaitBindsToTheLatestRecordBeforeIt) {
  auto s1 = this->be_->create_stream(0);
  auto s2 = this->be_->create_stream(0);
  auto flag = this->be_->allocate_pinned(2 * sizeof(std::int32_t));
  auto* f = static_cast<std::int32_t*>(flag.host_data());
  f[0] = 0;
  f[1] = 0;
  // Allocated before the latch kernel: a page-locked allocation issued
  // between two launches may serialise them (CUDA Programming Guide,
  // "Implicit Synchronization"), and s2's kernel would then wait behind a
  // latch that only opens after it.
  auto counter = this->be_->allocate_pinned(sizeof(std::int64_t));
  *static_cast<std::int64_t*>(counter.host_data()) = 0;
  auto e = this->be_->create_event(0);
  s1.record(e);  // record #1: nothing before it
  s2.wait(e);    // binds to record #1
  // s1 now blocks on a latch, and the event is recorded again behind it.
  rt::launch(s1, sgtest::wait_flag(), {.accesses = {rt::read_write(flag)}},
             static_cast<volatile std::int32_t*>(flag.template data<std::int32_t>()),
             flag.template data<std::int32_t>() + 1);
  s1.record(e);  // record #2: after the latch
  rt::launch(s2, sgtest::spin_ns(), {.accesses = {rt::read_write(counter)}}, counter.template data<std::int64_t>(),
             std::int64_t{1000});
  s2.synchronize();  // must not wait for record #2 (the latch is still closed)
  EXPECT_EQ(*static_cast<std::int64_t*>(counter.host_data()), 1);
  EXPECT_FALSE(e.query());
  std::atomic_ref<std::int32_t>(f[0]).store(7);
  e.synchronize();
  EXPECT_EQ(f[1], 7);
}

// ------------------------------------------------------------ capture

TYPED_TEST(Conformance, CaptureRecordsAndNeverExecutes) {
  auto s = this->be_->create_stream(0);
  auto x = this->template upload<float>(std::vector<float>(kN, 1.0f), s);
  s.begin_capture();
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kActive);
  rt::launch(s, sgtest::fill_f32(), {.name = "fill9", .dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(x)}},
             x.template data<float>(), kN, 9.0f);
  auto g = s.end_capture();
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
  EXPECT_EQ(this->template read<float>(x, s), std::vector<float>(kN, 1.0f)) << "capture must not execute";
  auto exec = g.instantiate();
  exec.launch(s);
  EXPECT_EQ(this->template read<float>(x, s), std::vector<float>(kN, 9.0f));
}

TYPED_TEST(Conformance, ReplayTakesArgumentsByValueAndReadsBufferContents) {
  auto s = this->be_->create_stream(0);
  auto in = this->be_->allocate_pinned(kN * sizeof(float));  // read in place by the graph
  auto out = this->be_->allocate(0, kN * sizeof(float));
  float a = 2.0f;
  s.begin_capture();
  s.memset(out.slice(), 0, "zero out");
  rt::launch(s, sgtest::axpy_f32(),
             {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(out), rt::read(in)}},
             out.template data<float>(), static_cast<const float*>(in.template data<float>()), kN, a);
  auto exec = s.end_capture().instantiate();
  a = 100.0f;  // a host value changed after capture is not seen by replays
  for (float v : {1.0f, -3.0f}) {
    for (auto& f : in.template host_span<float>()) f = v;  // new contents are seen
    exec.launch(s);
    auto r = this->template read<float>(out, s);
    for (float f : r) ASSERT_EQ(f, 2.0f * v);
  }
}

TYPED_TEST(Conformance, SynchronizeDuringCaptureInvalidatesItAndTheStreamStaysUsable) {
  auto s = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, kN * sizeof(float));
  s.begin_capture();
  rt::launch(s, sgtest::fill_f32(), {.accesses = {rt::write(x)}}, x.template data<float>(), kN, 1.0f);
  EXPECT_THROW(s.synchronize(), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
  rt::launch(s, sgtest::fill_f32(), {.accesses = {rt::write(x)}}, x.template data<float>(), kN, 5.0f);
  EXPECT_EQ(this->template read<float>(x, s), std::vector<float>(kN, 5.0f));
}

TYPED_TEST(Conformance, QueryDuringCaptureInvalidatesIt) {
  auto s = this->be_->create_stream(0);
  s.begin_capture();
  EXPECT_THROW((void)s.query(), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
  EXPECT_TRUE(s.query());
}

TYPED_TEST(Conformance, WaitOnAnEventRecordedOutsideTheCaptureInvalidatesIt) {
  auto s = this->be_->create_stream(0);
  auto other = this->be_->create_stream(0);
  auto e = this->be_->create_event(0);
  other.record(e);
  s.begin_capture();
  EXPECT_THROW(s.wait(e), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
  s.wait(e);  // outside a capture the same wait is fine
  s.synchronize();
}

TYPED_TEST(Conformance, QueryOfAnEventRecordedInTheCaptureInvalidatesIt) {
  auto s = this->be_->create_stream(0);
  auto e = this->be_->create_event(0);
  s.begin_capture();
  s.record(e);
  EXPECT_THROW((void)e.query(), sg::InvalidState);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
}

// An event whose latest record was made by a capture that has ended is a
// "captured event" (cudaErrorCapturedEvent): its record belongs to the graph,
// not to any stream's work. Query, synchronize, wait and timing refuse it
// with a typed error until it is recorded again outside capture.
TYPED_TEST(Conformance, AnEventLastRecordedInAFinishedCaptureIsRefusedUntilRecordedAgain) {
  auto s = this->be_->create_stream(0);
  auto other = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, 64);
  auto e = this->be_->create_event(0);
  s.begin_capture();
  s.memset(x.slice(), 1, "m");
  s.record(e);
  auto g = s.end_capture();
  sgtest::expect_throw_with<sg::InvalidState>([&] { (void)e.query(); }, {"cudaErrorCapturedEvent"});
  EXPECT_THROW(e.synchronize(), sg::InvalidState);
  EXPECT_THROW((void)e.wait_for(std::chrono::milliseconds(1)), sg::InvalidState);
  EXPECT_THROW(other.wait(e), sg::InvalidState);
  // Running the graph does not turn the captured record into a stream's.
  auto exec = g.instantiate();
  exec.launch(s);
  s.synchronize();
  EXPECT_THROW((void)e.query(), sg::InvalidState);
  // Recorded again outside capture, it is an ordinary event.
  s.record(e);
  e.synchronize();
  EXPECT_TRUE(e.query());
  EXPECT_NO_THROW(other.wait(e));
  other.synchronize();
}

TYPED_TEST(Conformance, CaptureOnTheLegacyDefaultStreamIsRefused) {
  auto legacy = this->be_->legacy_default_stream(0);
  EXPECT_THROW(legacy.begin_capture(), sg::InvalidArgument);
  EXPECT_EQ(legacy.capture_status(), rt::CaptureStatus::kNone);
  auto x = this->be_->allocate(0, 64);
  legacy.memset(x.slice(), 1);
  legacy.synchronize();
}

TYPED_TEST(Conformance, ForkAndJoinThroughEventsGiveTheEdges) {
  auto s = this->be_->create_stream(0);
  auto side = this->be_->create_stream(0);
  auto a = this->be_->allocate(0, kN * sizeof(float));
  auto b = this->be_->allocate(0, kN * sizeof(float));
  auto fork = this->be_->create_event(0);
  auto join = this->be_->create_event(0);
  rt::LaunchDims dims = rt::LaunchDims::linear(kN);
  s.begin_capture();
  rt::launch(s, sgtest::fill_f32(), {.name = "A", .dims = dims, .accesses = {rt::write(a)}}, a.template data<float>(),
             kN, 1.0f);
  s.record(fork);
  side.wait(fork);
  EXPECT_EQ(side.capture_status(), rt::CaptureStatus::kActive);
  rt::launch(side, sgtest::fill_f32(), {.name = "B", .dims = dims, .accesses = {rt::write(b)}},
             b.template data<float>(), kN, 2.0f);
  rt::launch(s, sgtest::axpy_f32(), {.name = "C", .dims = dims, .accesses = {rt::read_write(a), rt::read(a)}},
             a.template data<float>(), static_cast<const float*>(a.template data<float>()), kN, 1.0f);  // a = 2a
  side.record(join);
  s.wait(join);
  rt::launch(s, sgtest::axpy_f32(), {.name = "D", .dims = dims, .accesses = {rt::read_write(a), rt::read(b)}},
             a.template data<float>(), static_cast<const float*>(b.template data<float>()), kN, 10.0f);
  auto g = s.end_capture();
  EXPECT_EQ(side.capture_status(), rt::CaptureStatus::kNone);
  const auto info = g.info();
  ASSERT_EQ(info.nodes.size(), 4u);
  const auto A = info.find("A"), B = info.find("B"), C = info.find("C"), D = info.find("D");
  EXPECT_TRUE(info.has_edge(A, B));
  EXPECT_TRUE(info.has_edge(A, C));
  EXPECT_TRUE(info.has_edge(B, D));
  EXPECT_TRUE(info.has_edge(C, D));
  EXPECT_FALSE(info.reaches(B, C));
  EXPECT_FALSE(info.reaches(C, B));
  EXPECT_EQ(info.edges.size(), 4u);
  auto exec = g.instantiate();
  exec.launch(s);
  EXPECT_EQ(this->template read<float>(a, s), std::vector<float>(kN, 2.0f + 10.0f * 2.0f));
}

TYPED_TEST(Conformance, AnUnjoinedForkMakesEndCaptureFail) {
  auto s = this->be_->create_stream(0);
  auto side = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, 64);
  auto fork = this->be_->create_event(0);
  s.begin_capture();
  s.record(fork);
  side.wait(fork);
  side.memset(x.slice(), 3, "unjoined");
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
  EXPECT_EQ(side.capture_status(), rt::CaptureStatus::kNone);
  side.memset(x.slice(), 4);
  side.synchronize();
}

TYPED_TEST(Conformance, EndingCaptureOnAJoinedStreamFailsAndInvalidates) {
  auto s = this->be_->create_stream(0);
  auto side = this->be_->create_stream(0);
  auto fork = this->be_->create_event(0);
  s.begin_capture();
  s.record(fork);
  side.wait(fork);
  EXPECT_THROW((void)side.end_capture(), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
  EXPECT_EQ(side.capture_status(), rt::CaptureStatus::kNone);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState) << "no capture is left to end";
}

TYPED_TEST(Conformance, CaptureSessionUnwindsAndLeavesTheStreamUsable) {
  auto s = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, 64);
  try {
    rt::CaptureSession session(s);
    s.memset(x.slice(), 1);
    throw std::runtime_error("step function failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
  rt::CaptureSession session(s);
  s.memset(x.slice(), 2, "m");
  auto g = session.end();
  EXPECT_EQ(g.node_count(), 1u);
}

// Capture modes (cudaStreamCaptureMode): which threads' unsafe calls (here an
// allocation) are prohibited while a capture runs.
TYPED_TEST(Conformance, GlobalCaptureProhibitsUnsafeCallsFromOtherThreads) {
  auto s = this->be_->create_stream(0);
  s.begin_capture(rt::CaptureMode::kGlobal);
  std::thread t([&] { EXPECT_THROW((void)this->be_->allocate(0, 64), sg::InvalidState); });
  t.join();
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
}

TYPED_TEST(Conformance, ThreadLocalCaptureAllowsOtherThreadsButNotItsOwn) {
  auto s = this->be_->create_stream(0);
  s.begin_capture(rt::CaptureMode::kThreadLocal);
  std::thread t([&] { EXPECT_NO_THROW((void)this->be_->allocate(0, 64)); });
  t.join();
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kActive);
  EXPECT_THROW((void)this->be_->allocate(0, 64), sg::InvalidState);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)s.end_capture(), sg::InvalidState);
}

TYPED_TEST(Conformance, RelaxedModeGuardPermitsUnsafeCalls) {
  auto s = this->be_->create_stream(0);
  s.begin_capture(rt::CaptureMode::kThreadLocal);
  {
    rt::CaptureModeGuard relaxed(*this->be_, rt::CaptureMode::kRelaxed);
    EXPECT_NO_THROW((void)this->be_->allocate(0, 64));
  }
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kActive);
  auto g = s.end_capture();
  EXPECT_EQ(g.node_count(), 0u);
}

// Only a relaxed capture may be ended by another thread than the one that
// began it (cudaErrorStreamCaptureWrongThread). A refused end leaves the
// capture going on, and the thread that began it ends it with its graph.
TYPED_TEST(Conformance, OnlyTheThreadThatBeganANonRelaxedCaptureEndsIt) {
  auto s = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, 64);
  for (const auto mode : {rt::CaptureMode::kGlobal, rt::CaptureMode::kThreadLocal}) {
    SCOPED_TRACE(std::string(rt::to_string(mode)));
    s.begin_capture(mode);
    s.memset(x.slice(), 1, "m");
    std::thread t([&] { EXPECT_THROW((void)s.end_capture(), sg::InvalidState); });
    t.join();
    EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kActive);
    auto g = s.end_capture();
    EXPECT_EQ(g.node_count(), 1u);
    EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
  }
  s.begin_capture(rt::CaptureMode::kRelaxed);
  s.memset(x.slice(), 2, "m");
  rt::Graph g;
  std::thread t([&] { g = s.end_capture(); });
  t.join();
  EXPECT_EQ(g.node_count(), 1u);
  EXPECT_EQ(s.capture_status(), rt::CaptureStatus::kNone);
}

// An unsafe call is prohibited by the captures the calling thread's own mode
// names (cudaThreadExchangeStreamCaptureMode): in thread-local mode only its
// own; in global mode also other threads' global captures. Every capture
// that prohibits it is invalidated, and no other.
TYPED_TEST(Conformance, AnUnsafeCallInvalidatesEveryCaptureThatProhibitsItAndNoOther) {
  auto mine = this->be_->create_stream(0);
  auto theirs = this->be_->create_stream(0);
  std::promise<void> begun;
  std::promise<void> done;
  std::thread t([&] {  // a global capture of another thread, begun and ended there
    theirs.begin_capture(rt::CaptureMode::kGlobal);
    begun.set_value();
    done.get_future().wait();
    try {
      (void)theirs.end_capture();
    } catch (const sg::InvalidState&) {
    }
  });
  begun.get_future().wait();
  mine.begin_capture(rt::CaptureMode::kThreadLocal);
  {
    rt::CaptureModeGuard local(*this->be_, rt::CaptureMode::kThreadLocal);
    EXPECT_THROW((void)this->be_->allocate(0, 64), sg::InvalidState);
  }
  EXPECT_EQ(mine.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_EQ(theirs.capture_status(), rt::CaptureStatus::kActive) << "a thread-local-mode call ignores it";
  EXPECT_THROW((void)mine.end_capture(), sg::InvalidState);
  mine.begin_capture(rt::CaptureMode::kThreadLocal);
  EXPECT_THROW((void)this->be_->allocate(0, 64), sg::InvalidState);  // this thread is in global mode
  EXPECT_EQ(mine.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_EQ(theirs.capture_status(), rt::CaptureStatus::kInvalidated);
  EXPECT_THROW((void)mine.end_capture(), sg::InvalidState);
  done.set_value();
  t.join();
}

// ------------------------------------------------------------ introspection

TYPED_TEST(Conformance, IntrospectionReportsNamesKindsDevicesAndAccesses) {
  auto s = this->be_->create_stream(0);
  auto pinned = this->be_->allocate_pinned(kN * sizeof(float));
  auto d = this->be_->allocate(0, kN * sizeof(float));
  s.begin_capture();
  s.copy(d.slice(), pinned.slice(), "upload");
  rt::launch(s, sgtest::fill_f32(),
             {.name = "fill-half",
              .dims = rt::LaunchDims::linear(kN / 2),
              .accesses = {rt::write(d, 0, kN / 2 * sizeof(float))}},
             d.template data<float>(), kN / 2, 1.0f);
  s.memset(d.slice(kN / 2 * sizeof(float), kN / 2 * sizeof(float)), 0, "zero-rest");
  s.copy(pinned.slice(), d.slice(), "download");
  auto g = s.end_capture();
  const auto info = g.info();
  ASSERT_EQ(info.nodes.size(), 4u);
  const auto& up = info.nodes[info.find("upload")];
  EXPECT_EQ(up.kind, rt::NodeKind::kMemcpy);
  EXPECT_EQ(up.copy_kind, rt::CopyKind::kHostToDevice);
  EXPECT_EQ(up.bytes, kN * sizeof(float));
  const auto& k = info.nodes[info.find("fill-half")];
  EXPECT_EQ(k.kind, rt::NodeKind::kKernel);
  EXPECT_EQ(k.device, 0);
  ASSERT_EQ(k.accesses.size(), 1u);
  EXPECT_EQ(k.accesses[0].buffer_id, d.id());
  EXPECT_EQ(k.accesses[0].offset, 0u);
  EXPECT_EQ(k.accesses[0].bytes, kN / 2 * sizeof(float));
  EXPECT_EQ(k.accesses[0].access, rt::Access::kWrite);
  EXPECT_EQ(info.nodes[info.find("zero-rest")].kind, rt::NodeKind::kMemset);
  EXPECT_EQ(info.nodes[info.find("download")].copy_kind, rt::CopyKind::kDeviceToHost);
  EXPECT_EQ(info.count(rt::NodeKind::kMemcpy), 2u);
  // A single stream gives a chain.
  EXPECT_TRUE(info.reaches(info.find("upload"), info.find("download")));
  EXPECT_NE(g.to_dot().find("fill-half"), std::string::npos);
}

// ------------------------------------------------------------ exec, update

TYPED_TEST(Conformance, LaunchesOfOneExecRunOneAfterAnother) {
  auto s1 = this->be_->create_stream(0);
  auto s2 = this->be_->create_stream(0);
  auto x = this->template upload<std::int64_t>(std::vector<std::int64_t>(kN, 1), s1);
  auto* px = x.template data<std::int64_t>();
  s1.begin_capture();
  rt::launch(s1, sgtest::affine_i64(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(x)}}, px,
             static_cast<const std::int64_t*>(px), kN, std::int64_t{3}, std::int64_t{1});
  auto exec = s1.end_capture().instantiate();
  for (int i = 0; i < 4; ++i) exec.launch(i % 2 == 0 ? s1 : s2);  // two streams, no events between them
  s1.synchronize();
  s2.synchronize();
  const auto ref = serial_affine(1, {{3, 1}, {3, 1}, {3, 1}, {3, 1}});
  for (auto v : this->template read<std::int64_t>(x, s1)) ASSERT_EQ(v, ref);
}

// An executable launched into a capture becomes one node of the outer graph,
// ordered between the work captured before and after it, that runs the
// executable's graph as it was at that launch (cuda: a child graph node added
// by hand; Note [A graph launched into a capture]).
TYPED_TEST(Conformance, AGraphLaunchedIntoACaptureRunsInsideTheOuterGraphInOrder) {
  auto s = this->be_->create_stream(0);
  auto x = this->template upload<std::int64_t>(std::vector<std::int64_t>(kN, 3), s);
  auto* px = x.template data<std::int64_t>();
  auto affine = [&](std::int64_t mul, std::int64_t add, std::string name) {
    rt::launch(s, sgtest::affine_i64(),
               {.name = std::move(name), .dims = rt::LaunchDims::linear(kN), .accesses = {rt::read_write(x)}}, px,
               static_cast<const std::int64_t*>(px), kN, mul, add);
  };
  s.begin_capture();
  affine(2, 1, "inner");
  auto inner = s.end_capture().instantiate();
  s.begin_capture();
  affine(3, -4, "before");
  inner.launch(s);
  affine(5, 2, "after");
  auto outer_graph = s.end_capture();
  EXPECT_EQ(outer_graph.node_count(), 3u);
  auto outer = outer_graph.instantiate();
  // Updating the inner executable afterwards leaves the outer graph's copy.
  s.begin_capture();
  affine(-1, 9, "inner");
  EXPECT_TRUE(inner.update(s.end_capture()).ok());
  outer.launch(s);
  auto out = this->template read<std::int64_t>(x, s);
  const auto ref = serial_affine(3, {{3, -4}, {2, 1}, {5, 2}});
  for (auto v : out) ASSERT_EQ(v, ref);
  inner.launch(s);
  out = this->template read<std::int64_t>(x, s);
  for (auto v : out) ASSERT_EQ(v, serial_affine(ref, {{-1, 9}}));
}

TYPED_TEST(Conformance, UpdateWithTheSameTopologyTakesTheNewParameters) {
  auto s = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, kN * sizeof(float));
  auto capture = [&](float v) {
    s.begin_capture();
    rt::launch(s, sgtest::fill_f32(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(x)}},
               x.template data<float>(), kN, v);
    return s.end_capture();
  };
  auto exec = capture(1.0f).instantiate();
  auto g2 = capture(6.0f);
  const auto r = exec.update(g2);
  ASSERT_TRUE(r.ok()) << r.message;
  exec.launch(s);
  EXPECT_EQ(this->template read<float>(x, s), std::vector<float>(kN, 6.0f));
}

TYPED_TEST(Conformance, UpdateFollowsCudasRules) {
  auto s = this->be_->create_stream(0);
  auto side = this->be_->create_stream(0);
  auto d = this->be_->allocate(0, 256);
  auto d2 = this->be_->allocate(0, 256);
  auto p = this->be_->allocate_pinned(256);
  s.begin_capture();
  s.memset(d.slice(), 1);
  s.copy(p.slice(), d.slice());
  auto exec = s.end_capture().instantiate();

  s.begin_capture();  // one more node: topology changed
  s.memset(d.slice(), 1);
  s.copy(p.slice(), d.slice());
  s.memset(d.slice(), 2);
  EXPECT_EQ(exec.update(s.end_capture()).result, rt::UpdateResult::kTopologyChanged);

  s.begin_capture();  // same shape, first node a copy instead of a memset
  s.copy(d.slice(), d2.slice());
  s.copy(p.slice(), d.slice());
  auto r = exec.update(s.end_capture());
  EXPECT_EQ(r.result, rt::UpdateResult::kNodeTypeChanged);
  ASSERT_TRUE(r.node.has_value());
  EXPECT_EQ(*r.node, 0u);

  s.begin_capture();  // memcpy direction changed (DtoH -> HtoD)
  s.memset(d.slice(), 1);
  s.copy(d.slice(), p.slice());
  EXPECT_EQ(exec.update(s.end_capture()).result, rt::UpdateResult::kParametersChanged);

  s.begin_capture();  // same nodes, but no edge between them: topology changed
  auto fork = this->be_->create_event(0);
  auto join = this->be_->create_event(0);
  s.record(fork);
  side.wait(fork);
  s.memset(d.slice(), 1);
  side.copy(p.slice(), d2.slice());
  side.record(join);
  s.wait(join);
  EXPECT_EQ(exec.update(s.end_capture()).result, rt::UpdateResult::kTopologyChanged);

  // After refused updates the exec still runs its original graph.
  exec.launch(s);
  s.synchronize();
  for (auto b : p.template host_span<unsigned char>()) ASSERT_EQ(b, 1);
}

TYPED_TEST(Conformance, AGraphKeepsItsBuffersAlive) {
  auto s = this->be_->create_stream(0);
  auto out = this->be_->allocate_pinned(kN * sizeof(float));
  rt::GraphExec exec;
  {
    auto tmp = this->be_->allocate(0, kN * sizeof(float));
    s.begin_capture();
    rt::launch(s, sgtest::fill_f32(), {.dims = rt::LaunchDims::linear(kN), .accesses = {rt::write(tmp)}},
               tmp.template data<float>(), kN, 8.0f);
    s.copy(out.slice(), tmp.slice());
    exec = s.end_capture().instantiate();
  }  // the user's handle is gone; the graph still holds the memory
  exec.launch(s);
  s.synchronize();
  for (float f : out.template host_span<float>()) ASSERT_EQ(f, 8.0f);
}

TYPED_TEST(Conformance, EventsTimeCompletedWork) {
  auto s = this->be_->create_stream(0);
  auto a = this->be_->create_event(0);
  auto b = this->be_->create_event(0);
  auto c = this->be_->allocate_pinned(sizeof(std::int64_t));
  s.record(a);
  rt::launch(s, sgtest::spin_ns(), {.accesses = {rt::read_write(c)}}, c.template data<std::int64_t>(),
             std::int64_t{2'000'000});
  s.record(b);
  EXPECT_TRUE(b.wait_for(std::chrono::seconds(30)));
  EXPECT_GE(rt::Event::elapsed_ms(a, b), 1.0f);
}

// ------------------------------------------------------------ devices, faults

TYPED_TEST(Conformance, TouchingAnotherDevicesBufferNeedsACopyOrPeerAccess) {
  std::shared_ptr<rt::Backend> be2 = this->make(2);
  if (be2->device_count() < 2) GTEST_SKIP() << "needs two devices";
  auto s0 = be2->create_stream(0);
  auto s1 = be2->create_stream(1);
  auto on1 = be2->allocate(1, kN * sizeof(float));
  auto on0 = be2->allocate(0, kN * sizeof(float));
  try {
    rt::launch(s0, sgtest::fill_f32(), {.accesses = {rt::write(on1)}}, on1.template data<float>(), kN, 1.0f);
    FAIL() << "a launch on device 0 touching device 1's buffer must throw";
  } catch (const sg::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("peer"), std::string::npos) << e.what();
  }
  // A copy crosses devices.
  rt::launch(s1, sgtest::fill_f32(), {.accesses = {rt::write(on1)}}, on1.template data<float>(), kN, 3.0f);
  s1.synchronize();
  s0.copy(on0.slice(), on1.slice());
  auto pinned = be2->allocate_pinned(on0.size());
  s0.copy(pinned.slice(), on0.slice());
  s0.synchronize();
  for (float f : pinned.template host_span<float>()) ASSERT_EQ(f, 3.0f);
  // With peer access the launch is allowed.
  be2->enable_peer_access(0, 1);
  rt::launch(s0, sgtest::fill_f32(), {.accesses = {rt::write(on1)}}, on1.template data<float>(), kN, 4.0f);
  s0.synchronize();
}

TYPED_TEST(Conformance, AFaultIsReportedAtTheNextSynchronizeAndIsSticky) {
  if (sgtest::fault_would_poison_other_tests(TypeParam::kKind)) GTEST_SKIP() << sgtest::kRunFaultTestsAlone;
  auto s = this->be_->create_stream(0);
  auto x = this->be_->allocate(0, 64);
  rt::launch(s, sgtest::fault(), {.accesses = {rt::write(x)}}, x.template data<std::int32_t>());
  EXPECT_THROW(s.synchronize(), sg::Error);
  ASSERT_TRUE(this->be_->device_fault(0).has_value());
  EXPECT_THROW(s.synchronize(), sg::Error);
  EXPECT_THROW(s.memset(x.slice(), 0), sg::Error);
  EXPECT_THROW((void)this->be_->allocate(0, 64), sg::Error);
}

TEST(BackendNames, UnknownNameIsATypedError) {
  sgtest::expect_throw_with<sg::InvalidArgument>([] { (void)rt::Backend::create("tpu"); }, {"'tpu'"});
  EXPECT_EQ(rt::Backend::create("host")->kind(), rt::BackendKind::kHost);
}

}  // namespace
