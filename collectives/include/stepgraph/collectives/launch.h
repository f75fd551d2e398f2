// stepgraph/collectives/launch.h — where this process sits in a job started
// by a launcher (mpirun, srun, a PMI launcher), read from the launcher's
// environment without any MPI call.
//
// Note [Launch detection without MPI]
// A process learns its rank before it initialises MPI (or without MPI at
// all: the NCCL bootstrap, a device chosen from the local rank before MPI
// touches the GPU). The launchers export it:
//  - Open MPI's mpirun: OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE;
//  - Slurm's srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (and
//    SLURM_NTASKS_PER_NODE's first value, or SLURM_TASKS_PER_NODE's, for the
//    local size where it is a plain number);
//  - PMI launchers (MPICH's hydra, Intel MPI): PMI_RANK, PMI_SIZE (no local
//    rank: the local rank is then the rank, local size the size).
// They are tried in that order; the first whose rank variable is set wins.
// With none set, the process is rank 0 of 1 (source "none").
// A value that is not a non-negative integer, or a rank not below the size,
// is InvalidArgument naming the variable and its value: a launcher that
// exports garbage must not become a silently wrong rank.
// Under mpirun, detect_launch() agrees with mpi_launch_info() (collectives/
// mpi.h), which asks MPI itself; the MPI test checks it.
//
// Ownership: value types. Thread-safety: reads the environment (getenv);
// do not call while another thread changes it. Capture: unrelated to
// streams; may be called at any time.
#pragma once

#include <string>

namespace stepgraph::collectives {

struct LaunchInfo {
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // rank among the processes of this host
  int local_size = 1;  // processes of this job on this host
  std::string source;  // "openmpi", "slurm", "pmi", "none" or "mpi" (mpi_launch_info)
};

/// This process's place in its job, from the launcher's environment (Note
/// [Launch detection without MPI]). Throws InvalidArgument naming the
/// variable when a value is malformed.
[[nodiscard]] LaunchInfo detect_launch();

}  // namespace stepgraph::collectives
