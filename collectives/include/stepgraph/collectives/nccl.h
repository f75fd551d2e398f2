// stepgraph/collectives/nccl.h — NCCL communicators on the cuda backend
// (DESIGN.md section 1.5). No NCCL or CUDA header is included here: the
// communicator is a Communicator (communicator.h), and a unique id is plain
// bytes.
//
// Note [NCCL inside captured graphs]
// NCCL collectives can be captured into CUDA graphs (NCCL user guide, "Using
// NCCL with CUDA Graphs"; research anchors-graph-runtimes.md section H). The
// rules a user of these communicators must know:
//  - Capture is collective: every rank captures the same collectives in the
//    same order, and launching a graph that holds them is itself collective
//    (every rank launches its graph).
//  - Warm-ups run the step's collectives eagerly: that is when NCCL sets up
//    its connections (NCCL_RUNTIME_CONNECT), which must not happen inside a
//    capture.
//  - Never mix eager and captured collectives on one communicator: NCCL
//    documents deadlocks when they are interleaved. The base class enforces
//    it (Note [Eager and captured collectives]): once a call was captured,
//    an eager call is InvalidState. Run eager work on a communicator of its
//    own.
//  - Destroy graphs (and their executables) before their communicator:
//    ncclCommDestroy waits until no graph references the communicator, so
//    destroying it first would block forever. These communicators count the
//    graphs that hold their collectives; a communicator destroyed while any
//    is alive (after a bounded wait for CUDA's asynchronous release) is not
//    destroyed but leaked, with a warning, rather than hang.
//  - Poll async_error() (ncclCommGetAsyncError; ncclInProgress is not an
//    error): NCCL reports failures of running collectives (a peer gone, a
//    network error) only there. NCCL has no timeout of its own: the
//    StepExecutor's watchdog bounds each replay and calls abort().
//  - abort() (ncclCommAbort) ends a communicator that failed or timed out,
//    so that no rank hangs; every later call throws CommunicatorAborted.
//    This rank's peers then see their own errors or timeouts and abort too.
//  - One GPU cannot host two ranks of one NCCL communicator (NCCL refuses a
//    duplicate device: ncclInvalidUsage), so a 1-GPU machine can only run
//    1-rank communicators; every multi-rank path needs 2 GPUs or more.
//  - One GPU per process is NCCL's recommendation for captured collectives;
//    single-process multi-GPU capture (make_nccl_group) is supported with
//    that warning: capture each rank's step from its own thread.
// A collective NCCL runs as no work at all (an in-place sum, max or min on
// a 1-rank communicator) still becomes one graph node (an empty node), so
// that introspection shows every collective on every world size.
//
// Ownership: a communicator owns its ncclComm_t (ncclCommDestroy at
// destruction, nothing after an abort); it keeps its backend alive.
// Thread-safety: as Communicator — one thread at a time per rank; ranks of
// one process are driven from different threads (NCCL: "when a single
// thread is managing multiple devices, group semantics must be used", and
// these calls are not grouped), and async_error(), check() and abort() may
// be called from any thread.
// Capture: the collective calls may be captured; making communicators may
// not (NCCL initialisation allocates and synchronises).
//
// Availability: these functions are defined only in builds with NCCL
// (STEPGRAPH_HAVE_NCCL=1 is then defined for every user of
// stepgraph::collectives); guard their use with `#if STEPGRAPH_HAVE_NCCL`.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/collectives/communicator.h>

namespace stepgraph::collectives {

/// The bytes of an ncclUniqueId (NCCL_UNIQUE_ID_BYTES = 128): made by one
/// rank with nccl_unique_id() and given to every rank (over MPI, a file, ...).
struct NcclUniqueId {
  std::array<char, 128> bytes{};
};

/// Whether NCCL communicators can be made here: a CUDA device is present and
/// the NCCL library answers. If not, `reason` says why.
[[nodiscard]] bool nccl_available(std::string* reason = nullptr);

/// "2.28.9 (built against 2.28.9)": the NCCL library loaded, and the header
/// this build saw.
[[nodiscard]] std::string nccl_version();

/// One process, several GPUs: one communicator per device of `devices`
/// (rank i on devices[i]), made together (ncclCommInitAll). `backend` must
/// be the cuda backend; each device appears once (one GPU cannot host two
/// ranks). Blocks until every rank is initialised. Not during capture.
[[nodiscard]] std::vector<std::shared_ptr<Communicator>> make_nccl_group(std::shared_ptr<runtime::Backend> backend,
                                                                         std::vector<int> devices,
                                                                         CommunicatorOptions options = {});

/// A new unique id (ncclGetUniqueId), for make_nccl_communicator. Made by
/// one rank and shared with the others; it also names the bootstrap
/// address NCCL listens on, so make it on the host rank 0 runs on.
[[nodiscard]] NcclUniqueId nccl_unique_id();

/// Rank `rank` of a communicator of `world_size` ranks identified by `id`,
/// on `device` of the cuda `backend` (ncclCommInitRank). Blocks until every
/// rank has called it with the same id, so the ranks call it from
/// different processes (or threads). Not during capture.
[[nodiscard]] std::shared_ptr<Communicator> make_nccl_communicator(std::shared_ptr<runtime::Backend> backend,
                                                                   int device, const NcclUniqueId& id, int rank,
                                                                   int world_size, CommunicatorOptions options = {});

// Note [NCCL bootstrap over MPI]
//  1. The world size: MPI_Iallreduce of (size, -size) with MPI_MAX over a
//     dup of MPI_COMM_WORLD gives the largest and smallest size any rank
//     saw; a difference is InvalidArgument on every rank.
//  2. The id: rank 0 calls nccl_unique_id() and MPI_Ibcast's it with a
//     status word (0: an id follows; 1: rank 0 could not make one, so that
//     the other ranks fail at once naming rank 0 instead of timing out).
//     Each rank polls MPI_Test until options.timeout.
//  3. make_nccl_communicator(cuda_backend, device, id, rank, size, options)
//     (ncclCommInitRank: blocks until every rank has joined; NCCL has no
//     deadline of its own there).
// A request left in flight by a timeout cannot be cancelled (MPI forbids
// MPI_Cancel on collectives): its MPI communicator is dropped, not freed.

/// This process's rank of an NCCL communicator over every process of
/// MPI_COMM_WORLD (Note [NCCL bootstrap over MPI]), on `device` of the cuda
/// `cuda_backend`: rank and world size are MPI's; rank 0 makes the unique
/// id and broadcasts it over MPI, then every rank calls
/// make_nccl_communicator. Needs MPI initialised (an MpiSession alive;
/// InvalidState otherwise). Every wait on MPI is bounded by
/// options.timeout: an id that does not arrive is CollectiveTimeout naming
/// the rank that waited. Ranks that disagree on the world size are
/// InvalidArgument. Collective over MPI_COMM_WORLD: every process calls it,
/// in the same order. Not during capture. Defined only in builds with both
/// NCCL and MPI (`#if STEPGRAPH_HAVE_NCCL && STEPGRAPH_HAVE_MPI`).
[[nodiscard]] std::shared_ptr<Communicator> make_nccl_communicator_over_mpi(
    std::shared_ptr<runtime::Backend> cuda_backend, int device, CommunicatorOptions options = {});

}  // namespace stepgraph::collectives
