// runtime/src/nvtx.h — NVTX ranges (Nsight Systems) around what the
// executor does: capture, instantiate, each replay's launch. The one place
// that knows whether NVTX exists: the CUDA toolkit's header-only nvtx3 in a
// CUDA build, nothing otherwise.
#pragma once

#if STEPGRAPH_WITH_CUDA
#include <nvtx3/nvToolsExt.h>
#endif

namespace stepgraph::runtime::detail {

/// An NVTX push/pop range on the calling thread for its lifetime. `name` is
/// copied by NVTX. Not copyable; a no-op without CUDA.
class NvtxRange {
 public:
#if STEPGRAPH_WITH_CUDA
  explicit NvtxRange(const char* name) noexcept {
    nvtxRangePushA(name);
  }
  ~NvtxRange() {
    nvtxRangePop();
  }
#else
  explicit NvtxRange(const char*) noexcept {}
#endif
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace stepgraph::runtime::detail
