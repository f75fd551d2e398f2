// collectives/src/reduce.h — the element-wise reductions of the host
// collectives (Note [In-process collectives]), shared by the in-process and
// MPI implementations.
#pragma once

#include <cstddef>
#include <span>

#include <stepgraph/runtime/collectives_hook.h>

namespace stepgraph::collectives::detail {

/// dst[d][i] = src[0][i] op src[1][i] op ... for i in [0, count) and every d,
/// reduced in the order of `src` (rank order), in float32 for the 16-bit
/// floats, divided by `divisor` for kAverage. A destination may alias a
/// source at the same elements (in place); the routine reads a block of every
/// source before it writes that block.
void reduce(runtime::DType type, runtime::ReduceOp op, std::span<const std::byte* const> src,
            std::span<std::byte* const> dst, std::size_t count, int divisor);

}  // namespace stepgraph::collectives::detail
