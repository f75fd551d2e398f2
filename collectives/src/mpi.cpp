// The MPI communicator and session (Note [MPI communicators]).
#include <stepgraph/collectives/mpi.h>

#include <cstdio>
#include <cstdlib>

#include <mpi.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include <stepgraph/core/log.h>
#include <stepgraph/topology/live.h>

#include "reduce.h"

namespace stepgraph::collectives {
namespace {

std::string mpi_error_string(int code) {
  std::array<char, MPI_MAX_ERROR_STRING> text{};
  int len = 0;
  if (MPI_Error_string(code, text.data(), &len) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text.data(), static_cast<std::size_t>(len));
}

[[noreturn]] void throw_mpi(int code, const char* expr) {
  throw MpiError(fmt::format("{} failed: {} (MPI error {})", expr, mpi_error_string(code), code), code);
}
void warn_mpi(int code, const char* expr) {
  STEPGRAPH_WARN(kCollectives, "{} failed: {} (MPI error {})", expr, mpi_error_string(code), code);
}

}  // namespace
}  // namespace stepgraph::collectives

/// Checks an MPI call; throws MpiError naming the call and MPI's message.
#define STEPGRAPH_MPI_CHECK(expr)                                                        \
  do {                                                                                   \
    const int sg_mpi_r_ = (expr);                                                        \
    if (sg_mpi_r_ != MPI_SUCCESS) ::stepgraph::collectives::throw_mpi(sg_mpi_r_, #expr); \
  } while (0)
/// The twin for destructors and cleanup paths: logs instead of throwing.
#define STEPGRAPH_MPI_CHECK_WARN(expr)                                                  \
  do {                                                                                  \
    const int sg_mpi_r_ = (expr);                                                       \
    if (sg_mpi_r_ != MPI_SUCCESS) ::stepgraph::collectives::warn_mpi(sg_mpi_r_, #expr); \
  } while (0)

namespace stepgraph::collectives {
namespace {

std::string_view thread_level_name(int level) {
  if (level == MPI_THREAD_SINGLE) return "MPI_THREAD_SINGLE";
  if (level == MPI_THREAD_FUNNELED) return "MPI_THREAD_FUNNELED";
  if (level == MPI_THREAD_SERIALIZED) return "MPI_THREAD_SERIALIZED";
  if (level == MPI_THREAD_MULTIPLE) return "MPI_THREAD_MULTIPLE";
  return "an unknown thread level";
}

bool mpi_initialised() {
  int init = 0, fin = 0;
  STEPGRAPH_MPI_CHECK(MPI_Initialized(&init));
  STEPGRAPH_MPI_CHECK(MPI_Finalized(&fin));
  return init != 0 && fin == 0;
}

void require_thread_multiple(const char* who) {
  int provided = MPI_THREAD_SINGLE;
  STEPGRAPH_MPI_CHECK(MPI_Query_thread(&provided));
  if (provided < MPI_THREAD_MULTIPLE)
    throw MpiError(fmt::format("{}: MPI provides {} but stepgraph needs MPI_THREAD_MULTIPLE (the communicators' "
                               "progress threads call MPI beside the caller's thread); initialise MPI with "
                               "MpiSession, or build MPI with thread support",
                               who, thread_level_name(provided)),
                   MPI_ERR_OTHER);
}

// --- the signature on the wire (Note [MPI communicators], step 1) ---------

constexpr std::size_t kWireName = 92;

struct WireSignature {
  std::int32_t kind = 0, reduce = 0, dtype = 0, root = 0;
  std::uint64_t count = 0;
  std::uint64_t name_hash = 0;  // FNV-1a of the whole name
  std::uint32_t name_len = 0;
  std::array<char, kWireName> name{};
  bool same(const WireSignature& o) const {
    return kind == o.kind && reduce == o.reduce && dtype == o.dtype && root == o.root && count == o.count &&
           name_hash == o.name_hash && name_len == o.name_len;
  }
};
static_assert(std::is_trivially_copyable_v<WireSignature>);

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

WireSignature to_wire(const CollectiveSignature& s) {
  WireSignature w;
  w.kind = static_cast<std::int32_t>(s.kind);
  w.reduce = static_cast<std::int32_t>(s.reduce);
  w.dtype = static_cast<std::int32_t>(s.dtype);
  w.root = s.root;
  w.count = s.count;
  w.name_hash = fnv1a(s.name);
  w.name_len = static_cast<std::uint32_t>(s.name.size());
  std::memcpy(w.name.data(), s.name.data(), std::min(s.name.size(), kWireName));
  return w;
}

/// A peer's call, for the message: the name shortened to what travelled.
CollectiveSignature from_wire(const WireSignature& w) {
  CollectiveSignature s;
  s.kind = static_cast<CollectiveKind>(w.kind);
  s.reduce = static_cast<ReduceOp>(w.reduce);
  s.dtype = static_cast<DType>(w.dtype);
  s.root = w.root;
  s.count = static_cast<std::size_t>(w.count);
  s.name.assign(w.name.data(), std::min<std::size_t>(w.name_len, kWireName));
  if (w.name_len > kWireName) s.name += "...";
  return s;
}

// --- MPI types of our dtypes ------------------------------------------------

/// A type of the element's size that MPI only moves (never reduces).
MPI_Datatype carrier(DType t) {
  switch (runtime::dtype_size(t)) {
    case 1:
      return MPI_UINT8_T;
    case 2:
      return MPI_UINT16_T;
    case 4:
      return MPI_UINT32_T;
    default:
      return MPI_UINT64_T;
  }
}

/// Whether MPI's own operation computes what the in-process communicator
/// does (Note [MPI communicators], step 2).
bool native_reduction(DType t, ReduceOp op) {
  if (t == DType::kFloat16 || t == DType::kBFloat16) return false;
  if (t == DType::kUInt8 && op == ReduceOp::kAverage) return false;
  return true;
}

MPI_Datatype native_type(DType t) {
  switch (t) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    default:
      return MPI_UINT8_T;
  }
}

MPI_Op native_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
    default:
      return MPI_SUM;  // kAverage: divided afterwards
  }
}

// --- the progress thread ----------------------------------------------------

// Note [Polling MPI]
// MPI progresses only inside MPI calls, so the progress thread polls. How
// hard depends on how fast the wire is:
//  - for 200 us after the start or the last completed request it polls
//    without pause (a small collective's latency; shared memory moves a
//    segment in tens of microseconds, and a sleep between tests stalls it:
//    measured 2-3x raw MPI_Allreduce at >= 1 MiB with 20 us sleeps);
//  - then it yields the core between polls;
//  - after 2 ms without any completion (a slow network: a 256 KiB segment
//    takes 2.2 ms at 1 Gbit/s) it sleeps 50 us between polls, so that
//    compute overlapped with the collective keeps the cores: the kernel's
//    socket buffers hold far more than 50 us of such a link.
class PollPacer {
 public:
  PollPacer() : last_(std::chrono::steady_clock::now()) {}
  void progressed(std::chrono::steady_clock::time_point now) { last_ = now; }
  void pause(std::chrono::steady_clock::time_point now) const {
    const auto idle = now - last_;
    if (idle >= std::chrono::milliseconds(2))
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    else if (idle >= std::chrono::microseconds(200))
      std::this_thread::yield();
  }

 private:
  std::chrono::steady_clock::time_point last_;
};

enum class Failure { kNone, kMismatch, kTimeout, kAborted, kMpi };

struct Posted {
  CollectiveSignature signature;
  std::byte* send = nullptr;
  std::byte* recv = nullptr;
  std::size_t send_bytes = 0, recv_bytes = 0;
};

struct Job {
  Posted call;
  std::function<void()> done;
};

/// What the communicator, its collectives (in streams and graphs) and its
/// progress thread share.
struct MpiState {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, world = 1;
  std::uint64_t id = 0;
  CommunicatorOptions options;

  std::mutex mutex;  // failure, message
  Failure failure = Failure::kNone;
  int mpi_code = 0;
  std::string message;
  std::atomic<bool> failed{false};
  std::atomic<bool> request_left{false};  // a request still in flight: do not free `comm`

  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::deque<Job> jobs;
  bool stop = false;
  std::uint64_t next_seq = 0;  // the progress thread's only

  void fail(Failure f, std::string why, int code = 0) {
    {
      std::lock_guard lock(mutex);
      if (failure != Failure::kNone) return;  // first error wins
      failure = f;
      mpi_code = code;
      message = std::move(why);
      failed.store(true, std::memory_order_release);
    }
    if (f != Failure::kAborted)
      STEPGRAPH_WARN(kCollectives, "MPI communicator {} rank {} failed: {}", id, rank, message);
  }

  void post(Job job) {
    {
      std::lock_guard lock(queue_mutex);
      if (!stop) {
        jobs.push_back(std::move(job));
        queue_cv.notify_one();
        return;
      }
    }
    fail(Failure::kAborted,
         fmt::format("CommunicatorAborted: a collective of MPI communicator {} rank {} ran after the communicator "
                     "was destroyed",
                     id, rank));
    job.done();
  }

  void loop() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(queue_mutex);
        queue_cv.wait(lock, [&] { return stop || !jobs.empty(); });
        if (jobs.empty()) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      const std::uint64_t seq = next_seq++;
      if (!failed.load(std::memory_order_acquire)) {
        try {
          run(seq, job.call);
        } catch (const std::exception& e) {  // memory for the scratch buffers, mostly
          fail(Failure::kAborted, fmt::format("CommunicatorAborted: collective #{} on rank {} of MPI communicator "
                                              "{} failed: {}",
                                              seq, rank, id, e.what()));
        }
      }
      auto done = std::move(job.done);
      done();
    }
  }

  /// Polls `request` until it completes (true), or until a failure, an
  /// abort or the deadline (false; the request stays in flight).
  bool wait(MPI_Request& request, const char* phase, std::uint64_t seq, const CollectiveSignature& s) {
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    const PollPacer pacer;
    for (;;) {
      int flag = 0;
      const int rc = MPI_Test(&request, &flag, MPI_STATUS_IGNORE);
      if (!tested(rc, "MPI_Test", phase, seq, s)) return false;
      if (flag) return true;
      if (!keep_polling(pacer, deadline, phase, seq, s)) return false;
    }
  }

  /// After an MPI_Test* call: false (the communicator failed, the request
  /// left in flight) if it returned an error.
  bool tested(int rc, const char* what, const char* phase, std::uint64_t seq, const CollectiveSignature& s) {
    if (rc == MPI_SUCCESS) return true;
    request_left.store(true);
    fail(Failure::kMpi,
         fmt::format("MpiError: {} {} collective #{} ({}) on rank {} of MPI communicator {}: {}", what, phase, seq,
                     describe(s), rank, id, mpi_error_string(rc)),
         rc);
    return false;
  }

  /// Between two polls of a wait that completed nothing: false (the request
  /// left in flight) once the communicator failed or the deadline passed
  /// (CollectiveTimeout); otherwise paces the next poll (Note [Polling MPI]).
  bool keep_polling(const PollPacer& pacer, std::chrono::steady_clock::time_point deadline, const char* phase,
                    std::uint64_t seq, const CollectiveSignature& s) {
    if (failed.load(std::memory_order_acquire)) {
      request_left.store(true);
      return false;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      request_left.store(true);
      fail(Failure::kTimeout,
           fmt::format("CollectiveTimeout: rank {} waited {} ms {} collective #{} ({}) of MPI communicator {}; a "
                       "peer is missing, stuck, or issued fewer collectives",
                       rank, options.timeout.count(), phase, seq, describe(s), id));
      return false;
    }
    pacer.pause(now);
    return true;
  }

  /// Starts an MPI call that fills `request`; false (the communicator
  /// failed) if MPI refuses it.
  bool started(int rc, const char* what, std::uint64_t seq, const CollectiveSignature& s) {
    if (rc == MPI_SUCCESS) return true;
    fail(Failure::kMpi,
         fmt::format("MpiError: {} for collective #{} ({}) on rank {} of MPI communicator {}: {}", what, seq,
                     describe(s), rank, id, mpi_error_string(rc)),
         rc);
    return false;
  }

  void run(std::uint64_t seq, const Posted& call) {
    const CollectiveSignature& s = call.signature;
    // 1. Signatures.
    const WireSignature mine = to_wire(s);
    std::vector<WireSignature> all(static_cast<std::size_t>(world));
    MPI_Request req = MPI_REQUEST_NULL;
    if (!started(MPI_Iallgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, comm, &req),
                 "MPI_Iallgather (signatures)", seq, s))
      return;
    if (!wait(req, "for its peers to reach", seq, s)) return;
    for (int k = 1; k < world; ++k) {
      if (!all[static_cast<std::size_t>(k)].same(all[0])) {
        fail(Failure::kMismatch,
             fmt::format("CollectiveMismatch at collective #{} of MPI communicator {} (rank {}'s id): rank 0 called "
                         "{}, rank {} called {}. Every rank must issue the same collectives in the same order",
                         seq, id, rank, describe(from_wire(all[0])), k,
                         describe(from_wire(all[static_cast<std::size_t>(k)]))));
        return;
      }
    }
    // 2. Data.
    const int n = static_cast<int>(s.count);  // implement() checked it fits
    switch (s.kind) {
      case CollectiveKind::kAllReduce: {
        if (native_reduction(s.dtype, s.reduce) && use_ring(s)) {
          if (call.send != call.recv) std::memcpy(call.recv, call.send, call.send_bytes);
          (void)ring_all_reduce(seq, s, call.recv);
          return;
        }
        if (native_reduction(s.dtype, s.reduce)) {
          const void* from = call.send == call.recv ? MPI_IN_PLACE : call.send;
          if (!started(MPI_Iallreduce(from, call.recv, n, native_type(s.dtype), native_op(s.reduce), comm, &req),
                       "MPI_Iallreduce", seq, s) ||
              !wait(req, "for its peers to finish", seq, s))
            return;
          divide_if_average(s, call.recv);
        } else {
          std::vector<std::byte> inputs(call.send_bytes * static_cast<std::size_t>(world));
          if (!started(MPI_Iallgather(call.send, n, carrier(s.dtype), inputs.data(), n, carrier(s.dtype), comm, &req),
                       "MPI_Iallgather (inputs)", seq, s) ||
              !wait(req, "for its peers to finish", seq, s))
            return;
          reduce_blocks(s, inputs.data(), call.send_bytes, call.recv);
        }
        return;
      }
      case CollectiveKind::kReduceScatter: {
        if (native_reduction(s.dtype, s.reduce)) {
          // The send range may hold the receive range (in place): MPI
          // forbids aliased buffers, so the result goes through a copy.
          const bool overlap = call.recv >= call.send && call.recv < call.send + call.send_bytes;
          std::vector<std::byte> out(overlap ? call.recv_bytes : 0);
          std::byte* to = overlap ? out.data() : call.recv;
          if (!started(
                  MPI_Ireduce_scatter_block(call.send, to, n, native_type(s.dtype), native_op(s.reduce), comm, &req),
                  "MPI_Ireduce_scatter_block", seq, s) ||
              !wait(req, "for its peers to finish", seq, s))
            return;
          if (overlap) std::memcpy(call.recv, out.data(), call.recv_bytes);
          divide_if_average(s, call.recv);
        } else {
          std::vector<std::byte> inputs(call.recv_bytes * static_cast<std::size_t>(world));
          if (!started(MPI_Ialltoall(call.send, n, carrier(s.dtype), inputs.data(), n, carrier(s.dtype), comm, &req),
                       "MPI_Ialltoall (inputs)", seq, s) ||
              !wait(req, "for its peers to finish", seq, s))
            return;
          reduce_blocks(s, inputs.data(), call.recv_bytes, call.recv);
        }
        return;
      }
      case CollectiveKind::kBroadcast:
        if (!started(MPI_Ibcast(call.recv, n, carrier(s.dtype), s.root, comm, &req), "MPI_Ibcast", seq, s)) return;
        (void)wait(req, "for its peers to finish", seq, s);
        return;
      case CollectiveKind::kAllGather: {
        const bool in_place = call.send == call.recv + static_cast<std::size_t>(rank) * call.send_bytes;
        const void* from = in_place ? MPI_IN_PLACE : call.send;
        if (!started(MPI_Iallgather(from, n, carrier(s.dtype), call.recv, n, carrier(s.dtype), comm, &req),
                     "MPI_Iallgather", seq, s))
          return;
        (void)wait(req, "for its peers to finish", seq, s);
        return;
      }
    }
  }

  // --- Note [Segmented ring AllReduce over MPI] -----------------------------
  // Open MPI's non-blocking MPI_Iallreduce (libnbc) costs about twice the
  // blocking MPI_Allreduce at >= 1 MiB (docs/collectives.md), and a blocking
  // call cannot be abandoned at a deadline. So large AllReduces run our own
  // ring over MPI_Isend/MPI_Irecv, every wait polled against the deadline:
  // the buffer is cut into `world` chunks, chunk c = elements [c·N/p,
  // (c+1)·N/p); steps t = 0 … 2p−3 send chunk (rank − t) mod p to the right
  // and receive chunk (rank − t − 1) mod p from the left — steps 0 … p−2
  // reduce what arrives into the chunk (reduce-scatter: after them this
  // rank holds the full reduction of chunk rank+1), steps p−1 … 2p−3
  // receive it in place (all-gather). Each chunk is cut into segments
  // (kRingSegmentBytes), and each segment moves on by itself: segment k of
  // step t is sent as soon as segment k of step t−1 has arrived and been
  // reduced, so transfer and reduction overlap along the ring. An
  // all-gather receive into a segment waits until the reduce-scatter send
  // that read it has completed. One scratch chunk per communicator holds
  // the reduce-scatter's incoming segments. kAverage divides on the last
  // reduce-scatter step (the owner divides its chunk once; the all-gather
  // spreads the quotient). Every rank ends with the same bits; for 2 ranks
  // a + b is the in-process result exactly; over 3 or more ranks the float
  // sum's order is the ring's, not rank order (as MPI's own was).
  // Used where the reduction is MPI-native and the message is at least
  // kRingMinBytes (below, the latency of MPI_Iallreduce's recursive
  // doubling wins), and the tags fit MPI_TAG_UB.
  static constexpr std::size_t kRingMinBytes = std::size_t{256} << 10;
  static constexpr std::size_t kRingSegmentBytes = std::size_t{256} << 10;
  std::vector<std::byte> ring_scratch;

  bool use_ring(const CollectiveSignature& s) const {
    const std::size_t bytes = s.count * runtime::dtype_size(s.dtype);
    if (world < 2 || bytes < kRingMinBytes || s.count < static_cast<std::size_t>(world)) return false;
    const std::size_t chunk = (bytes + static_cast<std::size_t>(world) - 1) / static_cast<std::size_t>(world);
    const std::size_t segments = (chunk + kRingSegmentBytes - 1) / kRingSegmentBytes;
    return (2 * static_cast<std::size_t>(world) - 2) * segments < 32767;  // MPI_TAG_UB is at least 32767
  }

  static constexpr const char* kRingPhase = "for its neighbours in the ring of";

  bool ring_all_reduce(std::uint64_t seq, const CollectiveSignature& s, std::byte* data) {
    const std::size_t p = static_cast<std::size_t>(world), esz = runtime::dtype_size(s.dtype);
    const std::size_t me = static_cast<std::size_t>(rank);
    const int right = static_cast<int>((me + 1) % p), left = static_cast<int>((me + p - 1) % p);
    auto chunk_begin = [&](std::size_t c) { return c * s.count / p; };
    const std::size_t seg = std::max<std::size_t>(1, kRingSegmentBytes / esz);
    std::size_t max_chunk = 0;
    for (std::size_t c = 0; c < p; ++c) max_chunk = std::max(max_chunk, chunk_begin(c + 1) - chunk_begin(c));
    const std::size_t segments = (max_chunk + seg - 1) / seg, steps = 2 * p - 2;
    if (ring_scratch.size() < max_chunk * esz) ring_scratch.resize(max_chunk * esz);
    // Segment k of chunk c: elements [lo, hi), empty past the chunk's end.
    auto seg_range = [&](std::size_t c, std::size_t k) {
      const std::size_t b = chunk_begin(c), e = chunk_begin(c + 1);
      return std::pair<std::size_t, std::size_t>{std::min(e, b + k * seg), std::min(e, b + (k + 1) * seg)};
    };
    auto send_chunk = [&](std::size_t t) { return (me + 2 * p - t % p) % p; };
    auto recv_chunk = [&](std::size_t t) { return (me + 2 * p - t % p - 1) % p; };

    struct Pending {
      bool send;
      std::size_t t, k;
    };
    std::vector<MPI_Request> reqs;
    std::vector<Pending> meta;
    std::vector<char> send_done(steps * segments, 0);
    std::vector<std::size_t> step_of(segments, 0);  // per segment: the step whose receive is pending or next
    std::vector<char> blocked(segments, 0);         // that receive waits for a send to complete
    std::size_t outstanding = 0;

    auto post = [&](bool send, std::size_t t, std::size_t k, std::byte* at, std::size_t bytes) {
      MPI_Request r = MPI_REQUEST_NULL;
      const int tag = static_cast<int>(t * segments + k), n = static_cast<int>(bytes);
      const int rc =
          send ? MPI_Isend(at, n, MPI_BYTE, right, tag, comm, &r) : MPI_Irecv(at, n, MPI_BYTE, left, tag, comm, &r);
      if (!started(rc, send ? "MPI_Isend (ring)" : "MPI_Irecv (ring)", seq, s)) return false;
      reqs.push_back(r);
      meta.push_back({send, t, k});
      ++outstanding;
      return true;
    };
    auto post_send = [&](std::size_t t, std::size_t k) {
      const auto [lo, hi] = seg_range(send_chunk(t), k);
      if (lo == hi) {
        send_done[t * segments + k] = 1;
        return true;
      }
      return post(true, t, k, data + lo * esz, (hi - lo) * esz);
    };
    // Posts segment k's next receive, unless an all-gather receive must
    // wait for the reduce-scatter send that reads the same memory.
    auto advance = [&](std::size_t k) {
      for (;;) {
        const std::size_t t = step_of[k];
        if (t >= steps) return true;
        blocked[k] = t >= p - 1 && !send_done[(t + 1 - p) * segments + k];
        if (blocked[k]) return true;
        const std::size_t c = recv_chunk(t);
        const auto [lo, hi] = seg_range(c, k);
        if (lo < hi) {
          std::byte* to = t < p - 1 ? ring_scratch.data() + (lo - chunk_begin(c)) * esz : data + lo * esz;
          return post(false, t, k, to, (hi - lo) * esz);
        }
        if (t + 1 < steps && !post_send(t + 1, k)) return false;  // nothing arrives, nothing to pass on
        step_of[k] = t + 1;
      }
    };
    auto arrived = [&](std::size_t t, std::size_t k) {
      if (t < p - 1) {
        const std::size_t c = recv_chunk(t);
        const auto [lo, hi] = seg_range(c, k);
        std::byte* mine = data + lo * esz;
        const std::byte* src[2] = {mine, ring_scratch.data() + (lo - chunk_begin(c)) * esz};
        const bool last = t == p - 2;
        const ReduceOp op = s.reduce == ReduceOp::kAverage && !last ? ReduceOp::kSum : s.reduce;
        detail::reduce(s.dtype, op, std::span<const std::byte* const>(src, 2), std::span<std::byte* const>(&mine, 1),
                       hi - lo, world);
      }
      if (t + 1 < steps && !post_send(t + 1, k)) return false;
      step_of[k] = t + 1;
      return advance(k);
    };

    for (std::size_t k = 0; k < segments; ++k)
      if (!post_send(0, k) || !advance(k)) return false;
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    PollPacer pacer;
    std::vector<int> done;
    while (outstanding > 0) {
      done.resize(reqs.size());
      int count = 0;
      const int rc = MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &count, done.data(), MPI_STATUSES_IGNORE);
      if (!tested(rc, "MPI_Testsome", kRingPhase, seq, s)) return false;
      if (count == MPI_UNDEFINED) count = 0;
      for (int i = 0; i < count; ++i) {
        const Pending m = meta[static_cast<std::size_t>(done[static_cast<std::size_t>(i)])];
        --outstanding;
        if (m.send) {
          send_done[m.t * segments + m.k] = 1;
          if (blocked[m.k] && !advance(m.k)) return false;
        } else if (!arrived(m.t, m.k)) {
          return false;
        }
      }
      if (count > 0) {
        pacer.progressed(std::chrono::steady_clock::now());
        // Drop completed requests (MPI set them to MPI_REQUEST_NULL).
        std::size_t w = 0;
        for (std::size_t r = 0; r < reqs.size(); ++r)
          if (reqs[r] != MPI_REQUEST_NULL) {
            reqs[w] = reqs[r];
            meta[w++] = meta[r];
          }
        reqs.resize(w);
        meta.resize(w);
        continue;
      }
      if (!keep_polling(pacer, deadline, kRingPhase, seq, s)) return false;
    }
    return true;
  }

  /// kAverage after MPI's sum: divided as the in-process reduction divides.
  void divide_if_average(const CollectiveSignature& s, std::byte* data) const {
    if (s.reduce != ReduceOp::kAverage) return;
    const std::byte* src = data;
    detail::reduce(s.dtype, ReduceOp::kAverage, std::span<const std::byte* const>(&src, 1),
                   std::span<std::byte* const>(&data, 1), s.count, world);
  }

  /// Every rank's input, `block` bytes each, reduced in rank order into `to`.
  void reduce_blocks(const CollectiveSignature& s, const std::byte* inputs, std::size_t block, std::byte* to) const {
    std::vector<const std::byte*> src(static_cast<std::size_t>(world));
    for (std::size_t k = 0; k < src.size(); ++k) src[k] = inputs + k * block;
    detail::reduce(s.dtype, s.reduce, src, std::span<std::byte* const>(&to, 1), s.count, world);
  }
};

/// Owns the progress thread and the MPI communicator; shared by the
/// Communicator only, so that both go when it goes (not when the last graph
/// holding a collective does).
struct ProgressThread {
  std::shared_ptr<MpiState> state;
  std::thread thread;
  ~ProgressThread() {
    {
      std::lock_guard lock(state->queue_mutex);
      state->stop = true;
      state->queue_cv.notify_all();
    }
    if (thread.joinable()) thread.join();  // work still queued runs first (or is skipped after a failure)
    int finalized = 1;
    if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized != 0) {
      STEPGRAPH_WARN(kCollectives,
                     "MPI communicator {} destroyed after MPI_Finalize; destroy communicators before "
                     "the MpiSession ends",
                     state->id);
      return;
    }
    if (state->request_left.load()) {
      // A collective request cannot be cancelled (MPI 3.1 section 5.12):
      // freeing its communicator could let MPI touch it later; drop it.
      STEPGRAPH_DEBUG(kCollectives, "MPI communicator {}: a request is still in flight; not freed", state->id);
      return;
    }
    STEPGRAPH_MPI_CHECK_WARN(MPI_Comm_free(&state->comm));
  }
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(std::shared_ptr<runtime::Backend> backend, int device, int rank, int world,
                  CommunicatorOptions options, std::shared_ptr<ProgressThread> progress)
      : Communicator(std::move(backend), device, rank, world, options), progress_(std::move(progress)) {}

 protected:
  void implement(const Call& call, runtime::CollectiveCall& out) override {
    // MPI counts are int: one call moves at most INT_MAX elements per rank
    // (the in-place exchange of 16-bit floats too: counted in elements).
    STEPGRAPH_CHECK(call.signature.count <= static_cast<std::size_t>(std::numeric_limits<int>::max()), InvalidArgument,
                    "{} on rank {} of MPI communicator {}: {} elements exceed MPI's int count; split the call",
                    describe(call.signature), rank_, id_, call.signature.count);
    out.host_start = [state = progress_->state, posted = Posted{call.signature, call.send, call.recv, call.send_bytes,
                                                                call.recv_bytes}](std::function<void()> done) {
      state->post(Job{posted, std::move(done)});
    };
  }
  std::optional<std::string> impl_error() override {
    auto& s = *progress_->state;
    if (!s.failed.load(std::memory_order_acquire)) return std::nullopt;
    std::lock_guard lock(s.mutex);
    return s.message;
  }
  [[noreturn]] void throw_impl_error(const std::string& message) override {
    Failure f;
    int code;
    {
      std::lock_guard lock(progress_->state->mutex);
      f = progress_->state->failure;
      code = progress_->state->mpi_code;
    }
    switch (f) {
      case Failure::kMismatch:
        throw CollectiveMismatch(message);
      case Failure::kTimeout:
        throw CollectiveTimeout(message);
      case Failure::kMpi:
        throw MpiError(message, code);
      default:
        throw CommunicatorAborted(message);
    }
  }
  void impl_abort(const std::string& reason) override {
    progress_->state->fail(Failure::kAborted, fmt::format("CommunicatorAborted: rank {} aborted MPI communicator "
                                                          "{}: {}",
                                                          rank_, id_, reason));
  }
  bool impl_aborted() const override { return progress_->state->failed.load(std::memory_order_acquire); }
  std::string_view impl_name() const override { return "mpi"; }

 private:
  std::shared_ptr<ProgressThread> progress_;
};

}  // namespace

MpiSession::MpiSession() : MpiSession(nullptr, nullptr) {}

MpiSession::MpiSession(int* argc, char*** argv) {
  int init = 0, fin = 0;
  STEPGRAPH_MPI_CHECK(MPI_Initialized(&init));
  STEPGRAPH_MPI_CHECK(MPI_Finalized(&fin));
  STEPGRAPH_CHECK(fin == 0, InvalidState,
                  "MpiSession: MPI was already finalised in this process; it cannot be "
                  "initialised again (MPI allows one initialisation per process)");
  if (init == 0) {
    int provided = MPI_THREAD_SINGLE;
    STEPGRAPH_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_ = true;
  }
  try {
    require_thread_multiple("MpiSession");
  } catch (...) {
    if (owns_) STEPGRAPH_MPI_CHECK_WARN(MPI_Finalize());
    throw;
  }
}

MpiSession::~MpiSession() {
  if (!owns_) return;
  int fin = 0;
  STEPGRAPH_MPI_CHECK_WARN(MPI_Finalized(&fin));
  if (fin == 0) STEPGRAPH_MPI_CHECK_WARN(MPI_Finalize());
}

void mpi_abort_job(int code, const std::string& reason) {
  std::fprintf(stderr, "stepgraph: aborting the MPI job (exit code %d): %s\n", code, reason.c_str());
  std::fflush(stderr);
  if (mpi_initialised()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

LaunchInfo mpi_launch_info() {
  STEPGRAPH_CHECK(mpi_initialised(), InvalidState,
                  "mpi_launch_info: MPI is not initialised; make an MpiSession first (or use detect_launch(), which "
                  "needs no MPI)");
  LaunchInfo info;
  info.source = "mpi";
  STEPGRAPH_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank));
  STEPGRAPH_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info.size));
  MPI_Comm local = MPI_COMM_NULL;
  STEPGRAPH_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  const int rc_rank = MPI_Comm_rank(local, &info.local_rank);
  const int rc_size = MPI_Comm_size(local, &info.local_size);
  STEPGRAPH_MPI_CHECK_WARN(MPI_Comm_free(&local));
  STEPGRAPH_MPI_CHECK(rc_rank);
  STEPGRAPH_MPI_CHECK(rc_size);
  // Every rank's launcher environment must agree with MPI: ranks started by
  // different launches (an MPMD line with different -np, a copied
  // environment) would otherwise bootstrap NCCL or pick devices with a
  // wrong world. Gathered, so every rank finds the same disagreement.
  std::array<int, 3> mine{-1, -1, 0};  // env rank, env size, 1 if malformed
  try {
    const LaunchInfo env = detect_launch();
    if (env.source != "none") mine = {env.rank, env.size, 0};
  } catch (const InvalidArgument&) {
    mine[2] = 1;
  }
  std::vector<int> all(static_cast<std::size_t>(info.size) * 3);
  STEPGRAPH_MPI_CHECK(MPI_Allgather(mine.data(), 3, MPI_INT, all.data(), 3, MPI_INT, MPI_COMM_WORLD));
  for (int r = 0; r < info.size; ++r) {
    const int* v = &all[static_cast<std::size_t>(r) * 3];
    STEPGRAPH_CHECK(v[2] == 0, InvalidArgument,
                    "mpi_launch_info: rank {}'s launcher environment is malformed (detect_launch() fails there); "
                    "every rank stops",
                    r);
    STEPGRAPH_CHECK(v[0] < 0 || (v[0] == r && v[1] == info.size), InvalidArgument,
                    "mpi_launch_info: MPI says rank {} of {}, but that process's launcher environment says rank {} "
                    "of {}: the ranks disagree on the world size (processes of different launches, or a copied "
                    "environment); start every rank from one mpirun/srun",
                    r, info.size, v[0], v[1]);
  }
  return info;
}

LocalDevice mpi_choose_local_device(const topology::Topology& topo, DeviceKind kind) {
  STEPGRAPH_CHECK(mpi_initialised(), InvalidState, "mpi_choose_local_device: MPI is not initialised");
  MPI_Comm local = MPI_COMM_NULL;
  STEPGRAPH_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  struct FreeComm {
    MPI_Comm* c;
    ~FreeComm() { STEPGRAPH_MPI_CHECK_WARN(MPI_Comm_free(c)); }
  } free_local{&local};
  int local_rank = 0, local_size = 1;
  STEPGRAPH_MPI_CHECK(MPI_Comm_rank(local, &local_rank));
  STEPGRAPH_MPI_CHECK(MPI_Comm_size(local, &local_size));
  const topology::CpuSet binding = topology::LiveMachine::get().current_binding();
  const int count = static_cast<int>(binding.pus.size());
  std::vector<int> counts(static_cast<std::size_t>(local_size));
  STEPGRAPH_MPI_CHECK(MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, local));
  std::vector<int> displs(counts.size(), 0);
  for (std::size_t r = 1; r < counts.size(); ++r) displs[r] = displs[r - 1] + counts[r - 1];
  std::vector<int> pus(static_cast<std::size_t>(displs.back() + counts.back()));
  STEPGRAPH_MPI_CHECK(
      MPI_Allgatherv(binding.pus.data(), count, MPI_INT, pus.data(), counts.data(), displs.data(), MPI_INT, local));
  std::vector<topology::CpuSet> bindings(counts.size());
  for (std::size_t r = 0; r < counts.size(); ++r)
    bindings[r].pus.assign(pus.begin() + displs[r], pus.begin() + displs[r] + counts[r]);
  // Every local rank computes the same assignment; an error (too few GPUs)
  // is raised alike on each.
  return assign_local_devices(topo, bindings, kind)[static_cast<std::size_t>(local_rank)];
}

std::shared_ptr<Communicator> make_mpi_communicator(std::shared_ptr<runtime::Backend> host_backend, int device,
                                                    CommunicatorOptions options) {
  STEPGRAPH_CHECK(host_backend != nullptr, InvalidArgument, "make_mpi_communicator: no backend given");
  STEPGRAPH_CHECK(host_backend->kind() == runtime::BackendKind::kHost, InvalidArgument,
                  "make_mpi_communicator: the {} backend is not the host backend; MPI communicators move host "
                  "memory (on cuda, use the NCCL communicator, collectives/nccl.h)",
                  host_backend->name());
  STEPGRAPH_CHECK(device >= 0 && device < host_backend->device_count(), InvalidArgument,
                  "make_mpi_communicator: device {} does not exist (the backend has {} devices)", device,
                  host_backend->device_count());
  STEPGRAPH_CHECK(options.timeout.count() > 0, InvalidArgument,
                  "make_mpi_communicator: the timeout must be positive (it is {} ms)", options.timeout.count());
  STEPGRAPH_CHECK(mpi_initialised(), InvalidState,
                  "make_mpi_communicator: MPI is not initialised; make an MpiSession first");
  require_thread_multiple("make_mpi_communicator");
  auto state = std::make_shared<MpiState>();
  state->options = options;
  STEPGRAPH_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &state->comm));
  // Errors of this communicator's calls come back as codes (MpiError, a
  // failed communicator), never end the process.
  STEPGRAPH_MPI_CHECK(MPI_Comm_set_errhandler(state->comm, MPI_ERRORS_RETURN));
  STEPGRAPH_MPI_CHECK(MPI_Comm_rank(state->comm, &state->rank));
  STEPGRAPH_MPI_CHECK(MPI_Comm_size(state->comm, &state->world));
  auto progress = std::make_shared<ProgressThread>();
  progress->state = state;
  auto comm =
      std::make_shared<MpiCommunicator>(std::move(host_backend), device, state->rank, state->world, options, progress);
  state->id = comm->id();
  progress->thread = std::thread([state] { state->loop(); });
  return comm;
}

}  // namespace stepgraph::collectives
