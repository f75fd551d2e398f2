// stepgraph/collectives/bucketer.h — gradient buckets AllReduced while
// backward still runs (PyTorch DDP's Reducer, captured in the step graph).
//
// Note [Gradient buckets]
// Gradients are given in the order backward produces them (ready order).
// plan_buckets() fills buckets in that order: the first up to
// first_bucket_cap_bytes (small, so that communication starts early), the
// others up to bucket_cap_bytes; a gradient larger than the cap has a bucket
// of its own; a change of dtype starts a new bucket. The gradients live in
// one storage buffer laid out in *reverse* ready order — the order
// parameters are declared in, since backward produces them last to first —
// so every bucket is one contiguous range and a gradient is a view into its
// bucket's memory (no copy into or out of buckets).
// During the step, ready(stream, g) is called after the last kernel that
// writes gradient g has been enqueued on `stream`. When every gradient of
// bucket k is ready (and buckets 0..k-1 have been launched), an event
// recorded on `stream` forks bucket k's AllReduce onto the communicator's
// stream: it depends only on the writers of its gradients (and on the
// buckets before it, on the communication stream), and later backward work
// on `stream` does not wait for it. finish(stream) joins the communication
// stream back into `stream`: the optimizer, enqueued after it, waits for
// every bucket. Averaging by the world size is fused into the reduction
// (ReduceOp::kAverage). Everything is stream work, so the whole thing is
// captured in the step graph.
//
// Ownership: the bucketer shares its communicator; the storage buffer is the
// caller's (e.g. a StepSpec scratch buffer), passed to each begin().
// Thread-safety: one step at a time (begin..finish from one thread).
// Capture: begin, ready and finish may be called during capture.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <stepgraph/collectives/communicator.h>

namespace stepgraph::collectives {

struct GradientSpec {
  std::string name;
  std::size_t count = 0;  // elements
  DType dtype = DType::kFloat32;
};

struct BucketOptions {
  std::size_t bucket_cap_bytes = 25u << 20;       // DDP's bucket_cap_mb = 25
  std::size_t first_bucket_cap_bytes = 1u << 20;  // DDP's first bucket: 1 MiB
  ReduceOp reduce = ReduceOp::kAverage;           // averaging fused into the reduction
};

struct BucketPlan {
  struct Gradient {
    std::string name;
    std::size_t bucket = 0;
    std::size_t offset = 0;  // bytes, in the storage buffer
    std::size_t count = 0;
    DType dtype = DType::kFloat32;
  };
  struct Bucket {
    std::size_t offset = 0;  // bytes, in the storage buffer
    std::size_t count = 0;   // elements
    DType dtype = DType::kFloat32;
    std::vector<std::size_t> gradients;  // indices, in ready order
  };
  std::vector<Gradient> gradients;  // in the ready order given
  std::vector<Bucket> buckets;      // in launch order
  std::size_t storage_bytes = 0;
  ReduceOp reduce = ReduceOp::kAverage;
};

/// Plans the buckets (Note [Gradient buckets]). InvalidArgument for no
/// gradients, a zero count, or a zero cap.
[[nodiscard]] BucketPlan plan_buckets(const std::vector<GradientSpec>& ready_order, const BucketOptions& options = {});

class GradientBucketer {
 public:
  GradientBucketer(BucketPlan plan, std::shared_ptr<Communicator> communicator);
  [[nodiscard]] const BucketPlan& plan() const noexcept { return plan_; }
  [[nodiscard]] Communicator& communicator() const noexcept { return *comm_; }

  /// Starts a step whose gradients live in `storage` (plan().storage_bytes,
  /// on the communicator's device).
  void begin(StreamRef stream, const Buffer& storage);
  /// Gradient `gradient` (its index in the ready order) is complete once the
  /// work enqueued so far on `stream` has run.
  void ready(StreamRef stream, std::size_t gradient);
  /// Makes later work on `stream` wait for every bucket's AllReduce.
  /// InvalidState naming the gradients never marked ready.
  void finish(StreamRef stream);

 private:
  void launch_ready_buckets(StreamRef stream);
  BucketPlan plan_;
  std::shared_ptr<Communicator> comm_;
  std::vector<runtime::Event> bucket_events_;
  runtime::Event done_;
  const Buffer* storage_ = nullptr;
  std::vector<std::size_t> missing_;  // per bucket: gradients not yet ready
  std::vector<bool> is_ready_;
  std::size_t launched_ = 0;
  bool active_ = false;
};

}  // namespace stepgraph::collectives
