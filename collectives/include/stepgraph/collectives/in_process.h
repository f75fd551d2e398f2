// stepgraph/collectives/in_process.h — a group of devices of one process that
// run collectives together in shared memory (the host backend's twin of an
// NCCL communicator made with ncclCommInitAll).
//
// Note [In-process collectives]
// Each rank has a thread of its own (the communicator's, never a device
// worker: Note [Asynchronous nodes] in the host scheduler). A collective the
// rank's stream reaches is handed to that thread, which takes the next
// sequence number, publishes its buffers and signature, and waits (bounded
// by CommunicatorOptions::timeout, and woken by an abort) until every rank
// has published the same sequence number. Signatures are compared then; a
// difference fails the whole group with CollectiveMismatch naming both
// calls. Otherwise rank r computes slice r of the result (elements
// [r*n/world, (r+1)*n/world)) reading every rank's buffer and writing every
// rank's buffer — the ranks work in parallel, each on its own slice — and all
// wait for each other again before any rank's stream moves on, so no rank
// writes into a buffer its owner already reuses.
// Reductions are computed in rank order (rank 0 + rank 1 + ...), so a result
// is the same bit for bit whatever the timing: captured and eager runs of a
// step agree exactly. float16 and bfloat16 are reduced in float32 and
// rounded once to nearest even; kAverage divides the sum by the world size
// (integers: truncating division, as C++).
//
// Ownership: the communicators share the group state; the group's threads
// stop when the last communicator is gone (work they still hold completes
// first, or is skipped if the group was aborted).
// Thread-safety and capture: as Communicator.
#pragma once

#include <memory>
#include <vector>

#include <stepgraph/collectives/communicator.h>

namespace stepgraph::collectives {

/// Makes one communicator per device of `devices` (rank i on devices[i]),
/// all of one group. Every device must belong to `backend`, which must be
/// the host backend, and appear once.
[[nodiscard]] std::vector<std::shared_ptr<Communicator>> make_in_process_group(
    std::shared_ptr<runtime::Backend> backend, const std::vector<int>& devices, CommunicatorOptions options = {});

}  // namespace stepgraph::collectives
