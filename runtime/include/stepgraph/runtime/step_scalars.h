// stepgraph/runtime/step_scalars.h — the per-step values a replay reads from
// device-visible memory (executor.h, Note [Host code runs at warm-up and
// capture only]). Kept C++17 and dependency-free: CUDA kernels include it.
//
// Ownership: a plain struct; the executor owns one pinned copy per slot.
// Thread-safety: a value. Capture: kernels read it at replay time.
#pragma once

#include <cstdint>

namespace stepgraph::runtime {

struct StepScalars {
  std::int64_t step = 0;
  float learning_rate = 0.0f;
  float loss_scale = 1.0f;
  std::uint64_t rng_seed = 0;
  std::uint64_t rng_offset = 0;
};

}  // namespace stepgraph::runtime
