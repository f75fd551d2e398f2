// Gradient buckets (Note [Gradient buckets]).
#include <stepgraph/collectives/bucketer.h>

#include <algorithm>

namespace stepgraph::collectives {

BucketPlan plan_buckets(const std::vector<GradientSpec>& ready_order, const BucketOptions& options) {
  STEPGRAPH_CHECK(!ready_order.empty(), InvalidArgument, "plan_buckets: no gradients given");
  STEPGRAPH_CHECK(options.bucket_cap_bytes > 0 && options.first_bucket_cap_bytes > 0, InvalidArgument,
                  "plan_buckets: bucket caps must be positive (got {} and first {})", options.bucket_cap_bytes,
                  options.first_bucket_cap_bytes);
  BucketPlan plan;
  plan.reduce = options.reduce;
  std::size_t bucket_bytes = 0;
  for (std::size_t i = 0; i < ready_order.size(); ++i) {
    const GradientSpec& g = ready_order[i];
    STEPGRAPH_CHECK(g.count > 0, InvalidArgument, "plan_buckets: gradient {} ('{}') has no elements", i, g.name);
    const std::size_t bytes = g.count * runtime::dtype_size(g.dtype);
    // The bucket being filled is the first one while there is one bucket.
    const std::size_t current_cap =
        plan.buckets.size() == 1 ? options.first_bucket_cap_bytes : options.bucket_cap_bytes;
    const bool fresh =
        plan.buckets.empty() || plan.buckets.back().dtype != g.dtype || bucket_bytes + bytes > current_cap;
    if (fresh) {
      plan.buckets.push_back(BucketPlan::Bucket{0, 0, g.dtype, {}});
      bucket_bytes = 0;
    }
    auto& b = plan.buckets.back();
    b.gradients.push_back(i);
    b.count += g.count;
    bucket_bytes += bytes;
    plan.gradients.push_back(BucketPlan::Gradient{g.name, plan.buckets.size() - 1, 0, g.count, g.dtype});
  }
  // Storage in reverse ready order (declaration order): the last bucket
  // first, each bucket's gradients last-ready first. Each bucket starts at a
  // multiple of its element size.
  std::size_t at = 0;
  for (std::size_t k = plan.buckets.size(); k-- > 0;) {
    auto& b = plan.buckets[k];
    const std::size_t es = runtime::dtype_size(b.dtype);
    at = (at + es - 1) / es * es;
    b.offset = at;
    for (auto it = b.gradients.rbegin(); it != b.gradients.rend(); ++it) {
      plan.gradients[*it].offset = at;
      at += plan.gradients[*it].count * es;
    }
  }
  plan.storage_bytes = at;
  return plan;
}

GradientBucketer::GradientBucketer(BucketPlan plan, std::shared_ptr<Communicator> communicator)
    : plan_(std::move(plan)), comm_(std::move(communicator)) {
  STEPGRAPH_CHECK(comm_ != nullptr, InvalidArgument, "GradientBucketer: no communicator given");
  STEPGRAPH_CHECK(!plan_.buckets.empty(), InvalidArgument, "GradientBucketer: the plan has no buckets");
  for (std::size_t k = 0; k < plan_.buckets.size(); ++k)
    bucket_events_.push_back(comm_->backend().create_event(comm_->device()));
  done_ = comm_->backend().create_event(comm_->device());
}

void GradientBucketer::begin(StreamRef, const Buffer& storage) {
  STEPGRAPH_CHECK(!active_, InvalidState,
                  "GradientBucketer::begin on rank {}: the previous step was not finished; call finish() first",
                  comm_->rank());
  STEPGRAPH_CHECK(storage.valid() && storage.size() >= plan_.storage_bytes, InvalidArgument,
                  "GradientBucketer::begin on rank {}: the storage buffer has {} bytes; the plan needs {}",
                  comm_->rank(), storage.valid() ? storage.size() : 0, plan_.storage_bytes);
  storage_ = &storage;
  missing_.clear();
  for (const auto& b : plan_.buckets) missing_.push_back(b.gradients.size());
  is_ready_.assign(plan_.gradients.size(), false);
  launched_ = 0;
  active_ = true;
}

void GradientBucketer::ready(StreamRef stream, std::size_t gradient) {
  STEPGRAPH_CHECK(active_, InvalidState, "GradientBucketer::ready on rank {}: call begin() first", comm_->rank());
  STEPGRAPH_CHECK(gradient < plan_.gradients.size(), InvalidArgument,
                  "GradientBucketer::ready on rank {}: gradient {} does not exist (the plan has {})", comm_->rank(),
                  gradient, plan_.gradients.size());
  STEPGRAPH_CHECK(!is_ready_[gradient], InvalidState,
                  "GradientBucketer::ready on rank {}: gradient {} ('{}') was already marked ready in this step",
                  comm_->rank(), gradient, plan_.gradients[gradient].name);
  is_ready_[gradient] = true;
  --missing_[plan_.gradients[gradient].bucket];
  launch_ready_buckets(stream);
}

void GradientBucketer::launch_ready_buckets(StreamRef stream) {
  // In bucket order, so that every rank launches the same sequence.
  while (launched_ < plan_.buckets.size() && missing_[launched_] == 0) {
    const auto& b = plan_.buckets[launched_];
    auto& ev = bucket_events_[launched_];
    stream.record(ev);
    comm_->stream().wait(ev);
    comm_->all_reduce(comm_->stream(), *storage_, b.offset, b.count, b.dtype, plan_.reduce,
                      fmt::format("allreduce bucket {}", launched_));
    ++launched_;
  }
}

void GradientBucketer::finish(StreamRef stream) {
  STEPGRAPH_CHECK(active_, InvalidState, "GradientBucketer::finish on rank {}: call begin() first", comm_->rank());
  if (launched_ < plan_.buckets.size()) {
    std::vector<std::string> names;
    for (std::size_t g = 0; g < is_ready_.size(); ++g)
      if (!is_ready_[g]) names.push_back(plan_.gradients[g].name);
    active_ = false;
    throw InvalidState(
        fmt::format("GradientBucketer::finish on rank {}: gradients never marked ready: {}; call ready() after each "
                    "gradient's last writer",
                    comm_->rank(), fmt::join(names, ", ")));
  }
  comm_->stream().record(done_);
  stream.wait(done_);
  active_ = false;
}

}  // namespace stepgraph::collectives
