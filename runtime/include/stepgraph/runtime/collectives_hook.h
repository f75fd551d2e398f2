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
#include <optional>
#include <string>

#include <stepgraph/runtime/backend.h>

namespace stepgraph::runtime {

enum class DType { kFloat32, kFloat64, kInt32, kInt64, kUInt8 };
[[nodiscard]] std::size_t dtype_size(DType t) noexcept;
[[nodiscard]] std::string_view to_string(DType t) noexcept;

enum class ReduceOp { kSum, kMax, kMin, kAverage };

class CollectiveOps {
 public:
  virtual ~CollectiveOps() = default;
  [[nodiscard]] virtual int rank() const = 0;
  [[nodiscard]] virtual int world_size() const = 0;
  /// In-place AllReduce of `count` elements of `buffer` from byte `offset`,
  /// enqueued on `stream` (captured when the stream is capturing).
  virtual void all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                          ReduceOp op) = 0;
  /// An asynchronous error of the communicator, if one occurred (polled).
  [[nodiscard]] virtual std::optional<std::string> async_error() = 0;
  /// Aborts the communicator so that no rank hangs (watchdog, fault).
  virtual void abort(const std::string& reason) = 0;
};

/// One device, one rank: every collective is the identity and enqueues
/// nothing. The default of a StepExecutor.
class SingleDeviceCollectives final : public CollectiveOps {
 public:
  [[nodiscard]] int rank() const override { return 0; }
  [[nodiscard]] int world_size() const override { return 1; }
  void all_reduce(StreamRef, const Buffer&, std::size_t, std::size_t, DType, ReduceOp) override {}
  [[nodiscard]] std::optional<std::string> async_error() override { return std::nullopt; }
  void abort(const std::string&) override {}
};

}  // namespace stepgraph::runtime
