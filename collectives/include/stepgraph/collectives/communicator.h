// stepgraph/collectives/communicator.h — a communicator: one rank of a group
// of devices that run collectives together (DESIGN.md section 1.5).
//
// Note [One order on every rank]
// Collectives of one communicator run in one order. Every call is put on the
// communicator's own stream (Communicator::stream()): a call made on another
// stream is forked onto it (an event recorded on the caller's stream, waited
// on by the communication stream) and joined back (the caller's stream waits
// for the collective), so the order of execution is the order of the calls,
// and work after the call on the caller's stream sees its result. To overlap
// a collective with later work, call it on stream() itself after making
// stream() wait for the producers (GradientBucketer does), and join later.
// Each collective a rank executes carries a sequence number (0, 1, ... in
// execution order) and its signature (op, reduction, dtype, count, root,
// name); the host implementations compare the signatures of each sequence
// number across ranks, and a difference is a CollectiveMismatch naming both
// ranks' calls on every rank — never a hang, never a silently wrong sum.
//
// Note [Eager and captured collectives]
// NCCL deadlocks when eager and captured collectives are interleaved on one
// communicator (research, section H). So: warm-ups run collectives eagerly
// (that is when NCCL connects); once a call has been captured, the
// communicator serves captured graphs only and an eager call is
// InvalidState. Both backends enforce the same rule.
//
// Errors: argument errors (count or dtype that do not fit the buffer, a
// buffer of another device, a root out of range) throw InvalidArgument at
// the call, naming the call and the rank. Failures while running (a
// mismatch, a peer that does not arrive within the timeout, an abort) are
// asynchronous: async_error() reports them (the StepExecutor turns that
// into a StepError of kind kCollective), check() throws them typed, and every
// later call throws them.
//
// Ownership: a Communicator keeps its backend and its stream alive; captured
// graphs that hold its collectives keep the communicator's shared state
// alive. Destroy graphs before their communicator (NCCL's rule; the host
// implementation is safe either way).
// Thread-safety: the calls of one rank must come from one thread at a time
// (as NCCL's); async_error(), check() and abort() may be called from any
// thread. Different ranks are used from different threads.
// Capture: the collective calls may be made during capture; the others not.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <stepgraph/core/error.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/collectives_hook.h>

namespace stepgraph::collectives {

using runtime::Buffer;
using runtime::DType;
using runtime::ReduceOp;
using runtime::StreamRef;

/// Ranks called different collectives at the same sequence number.
class CollectiveMismatch : public InvalidState {
 public:
  using InvalidState::InvalidState;
};
/// A rank waited longer than the communicator's timeout for its peers.
class CollectiveTimeout : public Timeout {
 public:
  using Timeout::Timeout;
};
/// The communicator was aborted (by abort(), by a peer, or after an error).
class CommunicatorAborted : public InvalidState {
 public:
  using InvalidState::InvalidState;
};

enum class CollectiveKind { kAllReduce, kBroadcast, kAllGather, kReduceScatter };
[[nodiscard]] std::string_view to_string(CollectiveKind kind) noexcept;

/// One call, as ranks compare it (Note [One order on every rank]).
struct CollectiveSignature {
  CollectiveKind kind = CollectiveKind::kAllReduce;
  ReduceOp reduce = ReduceOp::kSum;  // all_reduce and reduce_scatter only
  DType dtype = DType::kFloat32;
  std::size_t count = 0;  // elements per rank (all_gather: sent; reduce_scatter: received)
  int root = -1;          // broadcast only
  std::string name;       // the node name the call was given
  friend bool operator==(const CollectiveSignature&, const CollectiveSignature&) = default;
};
/// "all_reduce sum float32 x1024 'bucket 0'"
[[nodiscard]] std::string describe(const CollectiveSignature& s);

struct CommunicatorOptions {
  /// How long a rank waits for its peers at one collective before the whole
  /// group fails with CollectiveTimeout (host implementations). The
  /// executor's watchdog (ExecutorOptions::deadline) usually fires first and
  /// aborts the communicator.
  std::chrono::milliseconds timeout{60'000};
  /// Priority of the communication stream (larger runs first).
  int stream_priority = 1;
};

class Communicator : public runtime::CollectiveOps {
 public:
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  ~Communicator() override;

  [[nodiscard]] int rank() const override { return rank_; }
  [[nodiscard]] int world_size() const override { return world_size_; }
  [[nodiscard]] int device() const noexcept { return device_; }
  /// Unique in the process; introspection's CollectiveInfo::communicator.
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] runtime::Backend& backend() const noexcept { return *backend_; }
  [[nodiscard]] const std::shared_ptr<runtime::Backend>& backend_ptr() const noexcept { return backend_; }
  /// The communication stream (Note [One order on every rank]).
  [[nodiscard]] StreamRef stream() const noexcept { return stream_.ref(); }

  void all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                  ReduceOp op) override;
  void broadcast(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                 int root) override;
  void all_gather(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                  std::size_t recv_offset, std::size_t count, DType type) override;
  void reduce_scatter(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                      std::size_t recv_offset, std::size_t count, DType type, ReduceOp op) override;
  /// The same calls with a node name of the caller's (introspection, and the
  /// signature ranks compare). An empty name gives the default.
  void all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                  ReduceOp op, std::string name);

  [[nodiscard]] std::optional<std::string> async_error() override;
  /// Throws the asynchronous error, typed (CollectiveMismatch,
  /// CollectiveTimeout, CommunicatorAborted, NcclError), if there is one.
  void check();
  /// Aborts the communicator (every rank of an in-process group; this rank
  /// of an NCCL group, whose peers then fail too). Idempotent.
  void abort(const std::string& reason) override;
  [[nodiscard]] bool aborted() const;
  /// Collectives enqueued by this rank so far (eager and captured calls).
  [[nodiscard]] std::uint64_t calls() const noexcept { return calls_.load(); }

 protected:
  /// What an implementation enqueues: the checked call, with raw addresses.
  struct Call {
    CollectiveSignature signature;
    std::byte* send = nullptr;  // the addresses kernels see (send == recv in place)
    std::byte* recv = nullptr;
    std::size_t send_bytes = 0, recv_bytes = 0;
  };
  Communicator(std::shared_ptr<runtime::Backend> backend, int device, int rank, int world_size,
               CommunicatorOptions options);
  /// Fills `call.host_start` (host) or `call.device_enqueue` (cuda).
  virtual void implement(const Call& call, runtime::CollectiveCall& out) = 0;
  /// The implementation's error, typed, if any (check()).
  [[nodiscard]] virtual std::optional<std::string> impl_error() = 0;
  [[noreturn]] virtual void throw_impl_error(const std::string& message) = 0;
  virtual void impl_abort(const std::string& reason) = 0;
  [[nodiscard]] virtual bool impl_aborted() const = 0;
  [[nodiscard]] virtual std::string_view impl_name() const = 0;

  std::shared_ptr<runtime::Backend> backend_;
  const int device_;
  const int rank_;
  const int world_size_;
  const std::uint64_t id_;
  CommunicatorOptions options_;

 private:
  void enqueue(StreamRef stream, Call call, std::vector<runtime::BufferAccess> accesses);
  std::byte* checked(const char* what, const char* role, const Buffer& buffer, std::size_t offset, std::size_t bytes,
                     DType type) const;
  void check_overlap(const char* what, const Call& c, std::size_t in_place_at) const;
  std::mutex mutex_;  // one call at a time per rank
  runtime::Stream stream_;
  runtime::Event fork_, join_;
  bool captured_ = false;  // Note [Eager and captured collectives]
  std::atomic<std::uint64_t> calls_{0};
};

}  // namespace stepgraph::collectives
