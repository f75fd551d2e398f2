// The capture misuse matrix (issue 19, item 5): every call CUDA refuses
// during stream capture, on both backends (the host instance in
// test_runtime_host, label cpu; the cuda one in test_runtime_cuda, label
// gpu, skipped with the reason where no device is present). For each: the
// error is typed (InvalidState), its message names the call and says what to
// do; the capture is invalidated where CUDA invalidates it (CUDA Programming
// Guide, "Stream Capture" > "Prohibited and Unhandled Operations" and
// "Invalidation") and goes on where CUDA lets it; and the stream is usable
// afterwards: ending the capture leaves it out of capture (with the graph
// recorded so far, or none if invalidated), and eager work on it computes
// what a serial loop computes.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/runtime/backend.h>

#include "backend_tags.h"
#include "test_kernels.h"

namespace sg = stepgraph;
namespace rt = stepgraph::runtime;

namespace {

constexpr std::size_t kN = 256;

/// What a misuse case may touch: the backend, the capturing stream, a side
/// stream, a buffer, and an event recorded before the capture began.
struct Scene {
  std::shared_ptr<rt::Backend> be;
  rt::Stream s;
  rt::Stream side;
  rt::Buffer x;
  rt::Event outside;  // recorded on `side` before the capture
  rt::Event inside;   // recorded on `s` inside the capture (by the case)
};

enum class After {
  kInvalidated,  // CUDA invalidates the capture: end_capture yields no graph
  kActive,       // CUDA refuses the call only: the capture goes on
};

struct MisuseCase {
  const char* name;
  rt::CaptureMode mode;
  std::function<void(Scene&)> misuse;  // must throw
  std::vector<std::string> names;      // the message names the call: one of these
  std::vector<std::string> advice;     // and says what to do: one of these
  After after;
};

std::string first_found(const std::string& what, const std::vector<std::string>& parts) {
  for (const auto& p : parts)
    if (what.find(p) != std::string::npos) return p;
  return {};
}

/// Runs `fn` on a thread of its own and rethrows what it threw there.
void on_another_thread(const std::function<void()>& fn) {
  std::exception_ptr error;
  std::thread t([&] {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
}

std::vector<MisuseCase> cases() {
  const std::vector<std::string> end_first = {
      "end it", "End the capture", "end_capture", "after the graph runs", "only after", "before begin_capture"};
  return {
      {"synchronize of the capturing stream",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { c.s.synchronize(); },
       {"Stream::synchronize", "cudaStreamSynchronize"},
       end_first,
       After::kInvalidated},
      {"query of the capturing stream",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { (void)c.s.query(); },
       {"Stream::query", "cudaStreamQuery"},
       end_first,
       After::kInvalidated},
      {"synchronize of a stream forked into the capture",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) {
         c.s.record(c.inside);
         c.side.wait(c.inside);
         c.side.synchronize();
       },
       {"Stream::synchronize", "cudaStreamSynchronize"},
       end_first,
       After::kInvalidated},
      {"device synchronize",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { c.be->synchronize_device(0); },
       {"synchronize_device", "cudaDeviceSynchronize"},
       {"before capture", "before begin_capture"},
       After::kInvalidated},
      {"query of an event recorded in the capture",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) {
         c.s.record(c.inside);
         (void)c.inside.query();
       },
       {"Event::query"},
       end_first,
       After::kInvalidated},
      {"synchronize of an event recorded in the capture",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) {
         c.s.record(c.inside);
         c.inside.synchronize();
       },
       {"Event::synchronize"},
       end_first,
       After::kInvalidated},
      {"allocation, thread-local mode",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { (void)c.be->allocate(0, 64); },
       {"Backend::allocate", "cudaMalloc"},
       {"before capture", "before begin_capture", "CaptureModeGuard"},
       After::kInvalidated},
      {"allocation, global mode",
       rt::CaptureMode::kGlobal,
       [](Scene& c) { (void)c.be->allocate(0, 64); },
       {"Backend::allocate", "cudaMalloc"},
       {"before capture", "before begin_capture", "CaptureModeGuard"},
       After::kInvalidated},
      {"pinned allocation, global mode",
       rt::CaptureMode::kGlobal,
       [](Scene& c) { (void)c.be->allocate_pinned(64); },
       {"Backend::allocate_pinned", "cudaHostAlloc", "cudaMallocHost"},
       {"before capture", "before begin_capture", "CaptureModeGuard"},
       After::kInvalidated},
      {"allocation from a second thread, global mode",
       rt::CaptureMode::kGlobal,
       [](Scene& c) { on_another_thread([&] { (void)c.be->allocate(0, 64); }); },
       {"Backend::allocate", "cudaMalloc"},
       {"before capture", "before begin_capture", "CaptureModeGuard"},
       After::kInvalidated},
      {"device synchronize from a second thread, global mode",
       rt::CaptureMode::kGlobal,
       [](Scene& c) { on_another_thread([&] { c.be->synchronize_device(0); }); },
       {"synchronize_device", "cudaDeviceSynchronize"},
       {"before capture", "before begin_capture", "CaptureModeGuard"},
       After::kInvalidated},
      {"wait on an event recorded outside the capture",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { c.s.wait(c.outside); },
       {"Stream::wait"},
       {"before begin_capture", "inside the capture"},
       After::kInvalidated},
      {"end on a stream forked into the capture",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) {
         c.s.record(c.inside);
         c.side.wait(c.inside);
         (void)c.side.end_capture();
       },
       {"Stream::end_capture"},
       {"origin stream"},
       After::kInvalidated},
      {"end from a second thread, global mode",
       rt::CaptureMode::kGlobal,
       [](Scene& c) { on_another_thread([&] { (void)c.s.end_capture(); }); },
       {"Stream::end_capture"},
       {"on the thread that began it"},
       After::kActive},
      {"end from a second thread, thread-local mode",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { on_another_thread([&] { (void)c.s.end_capture(); }); },
       {"Stream::end_capture"},
       {"on the thread that began it"},
       After::kActive},
      {"begin again on the capturing stream",
       rt::CaptureMode::kThreadLocal,
       [](Scene& c) { c.s.begin_capture(rt::CaptureMode::kThreadLocal); },
       {"Stream::begin_capture"},
       {"end that capture first", "end it with end_capture first"},
       After::kActive},
  };
}

template <class Tag>
class CaptureMisuse : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Tag::kKind == rt::BackendKind::kCuda) {
      std::string reason;
      if (!rt::Backend::cuda_available(&reason)) GTEST_SKIP() << "no CUDA device: " << reason;
    }
  }
};

using sgtest::Backends;
TYPED_TEST_SUITE(CaptureMisuse, Backends);

/// Reads a device buffer back through a pinned buffer, outside capture.
std::vector<float> read_back(rt::Backend& be, const rt::Buffer& b, rt::StreamRef s) {
  auto pinned = be.allocate_pinned(b.size());
  s.copy(pinned.slice(), b.slice());
  s.synchronize();
  auto span = pinned.host_span<float>();
  return {span.begin(), span.end()};
}

TYPED_TEST(CaptureMisuse, EveryCallCudaRefusesIsATypedErrorAndTheStreamStaysUsable) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    rt::BackendOptions bo;
    bo.shuffle_seed = 0x5eed;
    Scene sc;
    sc.be = rt::Backend::create(TypeParam::kKind, bo);
    sc.s = sc.be->create_stream(0);
    sc.side = sc.be->create_stream(0);
    sc.x = sc.be->allocate(0, kN * sizeof(float));
    sc.outside = sc.be->create_event(0);
    sc.inside = sc.be->create_event(0);
    sc.side.memset(sc.x.slice(), 0, "zero");
    sc.side.record(sc.outside);
    sc.side.synchronize();

    sc.s.begin_capture(c.mode);
    // One node before the misuse: a capture that goes on yields it.
    rt::launch(sc.s, sgtest::fill_f32(), {.name = "before", .accesses = {rt::write(sc.x)}}, sc.x.template data<float>(),
               kN, 3.0f);
    std::string what;
    try {
      c.misuse(sc);
      ADD_FAILURE() << "no error";
    } catch (const sg::InvalidState& e) {
      what = e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not InvalidState: " << e.what();
    }
    EXPECT_FALSE(first_found(what, c.names).empty()) << "the message names no call: " << what;
    EXPECT_FALSE(first_found(what, c.advice).empty()) << "the message does not say what to do: " << what;

    if (c.after == After::kInvalidated) {
      EXPECT_EQ(sc.s.capture_status(), rt::CaptureStatus::kInvalidated);
      try {
        (void)sc.s.end_capture();
        ADD_FAILURE() << "an invalidated capture yielded a graph";
      } catch (const sg::InvalidState& e) {
        EXPECT_NE(std::string(e.what()).find("no graph"), std::string::npos) << e.what();
      }
    } else {
      EXPECT_EQ(sc.s.capture_status(), rt::CaptureStatus::kActive);
      auto g = sc.s.end_capture();
      EXPECT_EQ(g.node_count(), 1u);
      auto exec = g.instantiate();
      exec.launch(sc.s);
      EXPECT_EQ(read_back(*sc.be, sc.x, sc.s), std::vector<float>(kN, 3.0f)) << "the graph computes what it recorded";
    }
    // Usable: out of capture (the side stream too), eager work runs in order.
    EXPECT_EQ(sc.s.capture_status(), rt::CaptureStatus::kNone);
    EXPECT_EQ(sc.side.capture_status(), rt::CaptureStatus::kNone);
    rt::launch(sc.s, sgtest::fill_f32(), {.name = "after", .accesses = {rt::write(sc.x)}}, sc.x.template data<float>(),
               kN, 7.0f);
    rt::launch(sc.s, sgtest::axpy_f32(), {.name = "twice", .accesses = {rt::read_write(sc.x), rt::read(sc.x)}},
               sc.x.template data<float>(), static_cast<const float*>(sc.x.template data<float>()), kN, 1.0f);
    EXPECT_EQ(read_back(*sc.be, sc.x, sc.s), std::vector<float>(kN, 14.0f));
    EXPECT_TRUE(sc.s.query());
    // And it captures again.
    sc.s.begin_capture(c.mode);
    rt::launch(sc.s, sgtest::fill_f32(), {.name = "again", .accesses = {rt::write(sc.x)}}, sc.x.template data<float>(),
               kN, 1.0f);
    EXPECT_EQ(sc.s.end_capture().node_count(), 1u);
  }
}

}  // namespace
