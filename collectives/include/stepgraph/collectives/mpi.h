// stepgraph/collectives/mpi.h — one rank per process, across processes (and
// hosts), over MPI, on the host backend. No MPI header is included here:
// MPI stays private to stepgraph::collectives.
//
// Note [MPI communicators]
// The MPI communicator keeps the rules of the in-process one (Note [One
// order on every rank], Note [Eager and captured collectives]): the same
// interface, the same argument checks (Communicator), capturable, and never
// blocking a device worker — host_start only enqueues the call for the
// communicator's progress thread, which takes collectives in order, one at a
// time:
//  1. the call's fixed-size signature (op, reduction, dtype, count, root,
//     and the node name: its first 92 bytes and a hash of all of it) is
//     exchanged with MPI_Iallgather, polled with MPI_Test until the deadline
//     (CommunicatorOptions::timeout). Every rank then compares rank 0's
//     signature with each other rank's; a difference is a CollectiveMismatch
//     naming both ranks' calls (describe()), found alike on every rank;
//  2. the data moves with non-blocking MPI on a dup of MPI_COMM_WORLD,
//     polled against a new deadline: an AllReduce of at least 256 KiB with
//     an MPI-native reduction runs our segmented ring over
//     MPI_Isend/MPI_Irecv (Note [Segmented ring AllReduce over MPI] in
//     mpi.cpp: Open MPI's MPI_Iallreduce costs about twice its blocking
//     MPI_Allreduce there); smaller ones MPI_Iallreduce; and
//     MPI_Ireduce_scatter_block with MPI's own operation (kAverage: the sum,
//     then divided locally as the in-process communicator does), MPI_Ibcast,
//     MPI_Iallgather. float16 and bfloat16 (any reduction), and the average
//     of uint8 (summed in 32 bits in-process), are not reduced by MPI: the
//     ranks exchange their inputs (MPI_Iallgather for AllReduce,
//     MPI_Ialltoall for ReduceScatter) and each reduces them locally with
//     the in-process communicator's routine, in rank order, in float32,
//     rounded once — bit for bit the in-process result. This moves (p−1)·S
//     per rank instead of a ring's 2(p−1)/p·S: right for 2 ranks, costlier
//     above; a user MPI_Op would halve it (not done yet).
//     MPI chooses its own reduction order for the native path: integer
//     results, max and min are exact and equal to the in-process ones; a
//     float sum over 3 or more ranks may differ from the in-process (rank
//     order) sum in its last bits, and is the same on every rank.
// A deadline passed is CollectiveTimeout; an MPI call that fails is
// MpiError; either fails the communicator (first error wins): the call
// returns, its stream moves on, async_error() reports it, later calls throw
// it, and the progress thread skips every later collective (calling `done`
// at once). abort() marks this rank failed and wakes its progress thread;
// it does not call MPI_Abort (a library must not end the job): this rank's
// peers find out by their own timeout. A request left in flight by a
// timeout or an abort cannot be cancelled (MPI forbids MPI_Cancel on
// collective requests), so such a communicator's MPI communicator is not
// freed, only dropped.
//
// MPI must be initialised with MPI_THREAD_MULTIPLE (the progress threads and
// the caller's thread all call MPI): MpiSession does it and checks the level
// the library provides.
//
// Ownership: MpiSession owns MPI's lifetime when it initialised MPI. A
// communicator owns its progress thread and its dup of MPI_COMM_WORLD; it
// keeps its backend alive. Destroy every MPI communicator before the
// MpiSession ends.
// Thread-safety: as Communicator. Making a communicator and
// mpi_launch_info() are collective over MPI_COMM_WORLD: every process calls
// them, in the same order.
// Capture: the collective calls may be captured; making communicators and
// sessions may not (they call MPI synchronously).
//
// Availability: defined only in builds with MPI (STEPGRAPH_HAVE_MPI=1 is then
// defined for every user of stepgraph::collectives); guard with
// `#if STEPGRAPH_HAVE_MPI`.
#pragma once

#include <memory>

#include <stepgraph/collectives/communicator.h>
#include <stepgraph/collectives/launch.h>
#include <stepgraph/collectives/local_device.h>

namespace stepgraph::collectives {

/// MPI for the life of this object (a guard: neither copied nor moved).
/// Initialises MPI with MPI_Init_thread requesting MPI_THREAD_MULTIPLE and
/// throws MpiError naming the level provided if it is lower; finalises MPI
/// when destroyed. If MPI was already initialised (by the application or
/// another library), it only checks the thread level, and leaves
/// finalising to whoever initialised it.
class MpiSession {
 public:
  MpiSession();
  MpiSession(int* argc, char*** argv);
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  MpiSession(MpiSession&&) = delete;
  MpiSession& operator=(MpiSession&&) = delete;
  ~MpiSession();
  /// Whether this session initialised MPI (and will finalise it).
  [[nodiscard]] bool owns_mpi() const noexcept { return owns_; }

 private:
  bool owns_ = false;
};

/// This process's place in MPI_COMM_WORLD: rank and size, and the local
/// rank and size among the processes sharing its memory
/// (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED). Source "mpi". Needs MPI
/// initialised (InvalidState otherwise); collective over MPI_COMM_WORLD.
/// Where the launcher's environment (detect_launch()) names a rank and size
/// that differ from MPI's on any rank, every rank throws InvalidArgument
/// naming that rank and both views.
[[nodiscard]] LaunchInfo mpi_launch_info();

/// This process's device and binding (Note [One device per local rank]),
/// from every local rank's current CPU binding gathered over
/// MPI_COMM_TYPE_SHARED. Collective over MPI_COMM_WORLD. Does not bind:
/// pass the result to bind_process().
[[nodiscard]] LocalDevice mpi_choose_local_device(const topology::Topology& topo, DeviceKind kind);

/// Ends the whole job: MPI_Abort(MPI_COMM_WORLD, code) after printing
/// `reason` to stderr. For a program (not a library) whose rank failed while
/// its peers may be stuck in a collective with it: nothing finer exists in
/// MPI to make every rank and mpirun return (MPI_Finalize would wait for
/// the peers). Never returns.
[[noreturn]] void mpi_abort_job(int code, const std::string& reason);

/// This process's rank of a communicator over all processes of
/// MPI_COMM_WORLD (a dup of it; rank and size are MPI's), on `device` of
/// the host backend `host_backend` (Note [MPI communicators]). Needs MPI
/// initialised with MPI_THREAD_MULTIPLE (MpiError otherwise). Collective:
/// every process makes its communicators in the same order.
[[nodiscard]] std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<runtime::Backend> host_backend,
                                                                  int device, CommunicatorOptions options = {});

}  // namespace stepgraph::collectives
