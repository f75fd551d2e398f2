// tests/runtime/backend_tags.h — the backend a typed runtime suite is
// instantiated for: the host binary (label cpu) gets HostTag, the cuda binary
// (label gpu) CudaTag. Shared by the conformance and executor suites.
#pragma once

#include <gtest/gtest.h>

#include <stepgraph/runtime/backend.h>

namespace sgtest {

struct HostTag {
  static constexpr stepgraph::runtime::BackendKind kKind = stepgraph::runtime::BackendKind::kHost;
};
struct CudaTag {
  static constexpr stepgraph::runtime::BackendKind kKind = stepgraph::runtime::BackendKind::kCuda;
};

#if defined(STEPGRAPH_TEST_BACKEND_CUDA)
using Backends = ::testing::Types<CudaTag>;
#else
using Backends = ::testing::Types<HostTag>;
#endif

// Note [One process per fault test]
// A CUDA fault (a kernel that traps) is sticky for the whole process: every
// later CUDA call of the process fails (driver_types.h, cudaErrorLaunchFailure:
// "the process must be terminated and relaunched"). A cuda test that faults
// the device therefore runs only when it is the only test its process runs,
// as under ctest (one process per test, gtest_discover_tests); run with
// other tests (the binary run directly) it skips and says how to run it, so
// that it cannot fail the tests after it. The host backend's faults are per
// backend object, so its instances always run.
inline bool fault_would_poison_other_tests(stepgraph::runtime::BackendKind kind) {
  return kind == stepgraph::runtime::BackendKind::kCuda && ::testing::UnitTest::GetInstance()->test_to_run_count() > 1;
}
inline constexpr const char* kRunFaultTestsAlone =
    "a CUDA fault is sticky for the whole process and would fail every later test: run this test alone "
    "(ctest does: one process per test; or --gtest_filter=<this test>)";

}  // namespace sgtest
