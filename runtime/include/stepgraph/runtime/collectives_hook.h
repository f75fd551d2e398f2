// stepgraph/runtime/collectives_hook.h — the interface through which a step
// launches its collective operations. Declared here, in runtime, so that the
// collectives module (NCCL, MPI, in-process) plugs into the StepExecutor
// without changing its API (DESIGN.md section 3: the executor accepts
// collectives through an interface declared in runtime).
//
// Ownership: the executor holds a shared_ptr to its CollectiveOps.
// Thread-safety: an implementation is called from the thread that runs the
// step function (warm-up, capture) and from the executor's watchdog (abort).
// Capture: all_reduce is called during capture and must be capturable (NCCL
// collectives are; DESIGN 1.5).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include <stepgraph/runtime/backend.h>

namespace stepgraph::runtime {

/// Element types. kFloat16 is IEEE 754 binary16, kBFloat16 the upper half of
/// a float32; on the host both are reduced in float32 and rounded to nearest
/// even (collectives/dtype.h).
enum class DType { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kFloat16, kBFloat16 };
[[nodiscard]] std::size_t dtype_size(DType t) noexcept;
[[nodiscard]] std::string_view to_string(DType t) noexcept;

/// Software conversions (binary16 and bfloat16 <-> float32): exact towards
/// float32; towards the 16-bit types round to nearest, ties to even (as
/// CUDA's __float2half_rn and __float2bfloat16_rn), NaN stays NaN, overflow
/// goes to infinity.
[[nodiscard]] float half_to_float(std::uint16_t h) noexcept;
[[nodiscard]] std::uint16_t float_to_half(float f) noexcept;
[[nodiscard]] float bfloat16_to_float(std::uint16_t b) noexcept;
[[nodiscard]] std::uint16_t float_to_bfloat16(float f) noexcept;

enum class ReduceOp { kSum, kMax, kMin, kAverage };
[[nodiscard]] std::string_view to_string(ReduceOp op) noexcept;

/// The collectives a step may call. Every call is enqueued on a stream and
/// returns at once; it may be made during stream capture (it becomes a graph
/// node that every replay runs). Counts are in elements; offsets in bytes.
class CollectiveOps {
 public:
  virtual ~CollectiveOps() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int world_size() const = 0;
  /// In-place AllReduce of `count` elements of `buffer` from byte `offset`,
  /// enqueued on `stream` (captured when the stream is capturing).
  virtual void all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                          ReduceOp op) = 0;
  /// In place: every rank's `count` elements at `offset` become root's.
  virtual void broadcast(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                         int root) = 0;
  /// Rank r's `count` elements of `send` land at element r*count of every
  /// rank's `recv` (which holds world_size*count elements from recv_offset).
  virtual void all_gather(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                          std::size_t recv_offset, std::size_t count, DType type) = 0;
  /// `send` holds world_size*count elements; rank r's `recv` gets the
  /// reduction over ranks of elements [r*count, (r+1)*count).
  virtual void reduce_scatter(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                              std::size_t recv_offset, std::size_t count, DType type, ReduceOp op) = 0;
  /// An asynchronous error of the communicator, if one occurred (polled).
  [[nodiscard]] virtual std::optional<std::string> async_error() = 0;
  /// Aborts the communicator so that no rank hangs (watchdog, fault).
  virtual void abort(const std::string& reason) = 0;
};

/// One device, one rank: AllReduce and Broadcast are the identity and
/// enqueue nothing; AllGather and ReduceScatter copy `send` to `recv` when
/// they differ. The default of a StepExecutor.
class SingleDeviceCollectives final : public CollectiveOps {
 public:
  [[nodiscard]] int rank() const override { return 0; }
  [[nodiscard]] int world_size() const override { return 1; }
  void all_reduce(StreamRef, const Buffer&, std::size_t, std::size_t, DType, ReduceOp) override {}
  void broadcast(StreamRef, const Buffer&, std::size_t, std::size_t, DType, int) override {}
  void all_gather(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                  std::size_t recv_offset, std::size_t count, DType type) override;
  void reduce_scatter(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                      std::size_t recv_offset, std::size_t count, DType type, ReduceOp) override;
  [[nodiscard]] std::optional<std::string> async_error() override { return std::nullopt; }
  void abort(const std::string&) override {}
};

}  // namespace stepgraph::runtime
