// The NCCL unique id over MPI (Note [NCCL bootstrap over MPI] in nccl.h).
// Compiled only when both STEPGRAPH_HAVE_NCCL and STEPGRAPH_HAVE_MPI are on
// (collectives/CMakeLists.txt). No NCCL header is needed here: the id is
// plain bytes, and nccl.cpp makes the communicator.
#include <mpi.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>

#include <stepgraph/collectives/launch.h>
#include <stepgraph/collectives/nccl.h>
#include <stepgraph/core/log.h>

namespace stepgraph::collectives {
namespace {

constexpr const char* kWho = "make_nccl_communicator_over_mpi";

std::string mpi_message(int code) {
  std::array<char, MPI_MAX_ERROR_STRING> text{};
  int len = 0;
  if (MPI_Error_string(code, text.data(), &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text.data(), static_cast<std::size_t>(len));
}

void check_mpi(int code, const char* expr) {
  if (code != MPI_SUCCESS)
    throw MpiError(fmt::format("{}: {} failed: {} (MPI error {})", kWho, expr, mpi_message(code), code), code);
}

/// What rank 0 broadcasts: a status word, then the id's bytes.
struct WireId {
  std::int32_t status = 0;  // 0: the id follows; 1: rank 0 could not make one
  std::array<char, sizeof(NcclUniqueId::bytes)> bytes{};
};
static_assert(std::is_trivially_copyable_v<WireId>);

/// A dup of MPI_COMM_WORLD whose errors return codes; freed at the end
/// unless a request is still in flight (a collective request cannot be
/// cancelled, MPI 3.1 section 5.12: then it is dropped).
class BootstrapComm {
 public:
  BootstrapComm() {
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup(MPI_COMM_WORLD)");
    check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }
  BootstrapComm(const BootstrapComm&) = delete;
  BootstrapComm& operator=(const BootstrapComm&) = delete;
  ~BootstrapComm() {
    if (request_left_) {
      STEPGRAPH_DEBUG(kCollectives, "{}: a request is still in flight; its MPI communicator is not freed", kWho);
      return;
    }
    const int rc = MPI_Comm_free(&comm_);
    if (rc != MPI_SUCCESS) STEPGRAPH_WARN(kCollectives, "{}: MPI_Comm_free failed: {}", kWho, mpi_message(rc));
  }
  [[nodiscard]] MPI_Comm get() const noexcept { return comm_; }

  /// Polls `request` until it completes; past `deadline`, CollectiveTimeout
  /// naming this rank and what it waited for.
  void wait(MPI_Request& request, std::chrono::steady_clock::time_point deadline, int rank, int world,
            std::chrono::milliseconds timeout, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      int flag = 0;
      const int rc = MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        request_left_ = true;
        check_mpi(rc, "MPI_Test");
      }
      if (flag) return;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) {
        request_left_ = true;
        throw CollectiveTimeout(fmt::format(
            "CollectiveTimeout: {}: rank {} of {} waited {} ms for {}; a peer is missing or stuck, or rank 0 did "
            "not call {} (every process of MPI_COMM_WORLD must call it, in the same order); raise "
            "CommunicatorOptions::timeout if rank 0 is only slow",
            kWho, rank, world, timeout.count(), what, kWho));
      }
      if (now - start < std::chrono::microseconds(200))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool request_left_ = false;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl_communicator_over_mpi(std::shared_ptr<runtime::Backend> cuda_backend,
                                                              int device, CommunicatorOptions options) {
  STEPGRAPH_CHECK(cuda_backend != nullptr, InvalidArgument, "{}: no backend given", kWho);
  STEPGRAPH_CHECK(options.timeout.count() > 0, InvalidArgument, "{}: the timeout must be positive (it is {} ms)", kWho,
                  options.timeout.count());
  int init = 0, fin = 0;
  check_mpi(MPI_Initialized(&init), "MPI_Initialized");
  check_mpi(MPI_Finalized(&fin), "MPI_Finalized");
  STEPGRAPH_CHECK(init != 0 && fin == 0, InvalidState,
                  "{}: MPI is not initialised{}; make an MpiSession (collectives/mpi.h) first and keep it alive while "
                  "the communicator is made",
                  kWho, fin != 0 ? " (it was already finalised)" : "");
  const auto deadline = std::chrono::steady_clock::now() + options.timeout;

  BootstrapComm comm;
  int rank = 0, world = 1;
  check_mpi(MPI_Comm_rank(comm.get(), &rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm.get(), &world), "MPI_Comm_size");

  // A launcher that started N processes of a binary whose MPI is not the
  // launcher's makes N worlds of 1 rank each: no collective can see that,
  // the launcher's environment can. Open MPI's and PMI's sizes are the
  // launch's own; Slurm's may be the allocation's (mpirun inside salloc),
  // so a Slurm mismatch is only a warning.
  const LaunchInfo env = detect_launch();
  if (env.source != "none" && env.size != world) {
    STEPGRAPH_CHECK(env.source == "slurm", InvalidArgument,
                    "{}: MPI_COMM_WORLD has {} rank(s) but the launcher ({}) started {}; this binary's MPI is not "
                    "the launcher's (launch it with the mpirun of the MPI it was built against)",
                    kWho, world, env.source, env.size);
    STEPGRAPH_WARN(kCollectives, "{}: MPI_COMM_WORLD has {} rank(s), Slurm's environment says {}; using MPI's", kWho,
                   world, env.size);
  }

  // 1. Every rank's world size (Note [NCCL bootstrap over MPI]).
  std::array<int, 2> mine{world, -world};
  std::array<int, 2> extremes{};
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallreduce(mine.data(), extremes.data(), 2, MPI_INT, MPI_MAX, comm.get(), &req),
            "MPI_Iallreduce (world sizes)");
  comm.wait(req, deadline, rank, world, options.timeout, "every rank's world size");
  STEPGRAPH_CHECK(extremes[0] == world && -extremes[1] == world, InvalidArgument,
                  "{}: the ranks disagree on the world size (rank {} sees {}; the sizes range from {} to {}); every "
                  "rank must belong to one MPI_COMM_WORLD",
                  kWho, rank, world, -extremes[1], extremes[0]);

  // 2. Rank 0's unique id.
  WireId wire;
  std::string rank0_error;
  if (rank == 0) {
    try {
      const NcclUniqueId id = nccl_unique_id();
      std::memcpy(wire.bytes.data(), id.bytes.data(), wire.bytes.size());
    } catch (const std::exception& e) {
      wire.status = 1;  // the others fail at once, naming rank 0
      rank0_error = e.what();
    }
  }
  check_mpi(MPI_Ibcast(&wire, sizeof wire, MPI_BYTE, 0, comm.get(), &req), "MPI_Ibcast (NCCL unique id)");
  comm.wait(req, deadline, rank, world, options.timeout, "rank 0's NCCL unique id");
  if (wire.status != 0) {
    STEPGRAPH_CHECK(rank != 0, InvalidState, "{}: rank 0 could not make the NCCL unique id: {}", kWho, rank0_error);
    throw InvalidState(fmt::format("{}: rank {} of {}: rank 0 could not make the NCCL unique id (its own error says "
                                   "why); no communicator was made",
                                   kWho, rank, world));
  }
  NcclUniqueId id;
  std::memcpy(id.bytes.data(), wire.bytes.data(), id.bytes.size());
  STEPGRAPH_DEBUG(kCollectives, "{}: rank {} of {} has the NCCL unique id; ncclCommInitRank on device {}", kWho, rank,
                  world, device);

  // 3. NCCL.
  return make_nccl_communicator(std::move(cuda_backend), device, id, rank, world, options);
}

}  // namespace stepgraph::collectives
