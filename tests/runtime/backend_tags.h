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

}  // namespace sgtest
