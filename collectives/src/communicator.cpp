// The calls every communicator shares: argument checks, the order rule, the
// eager/captured rule, the fork onto the communication stream.
#include <stepgraph/collectives/communicator.h>

#include <stepgraph/core/log.h>

namespace stepgraph::collectives {

namespace {
std::atomic<std::uint64_t> g_next_id{1};

std::string_view graph_op_name(CollectiveKind k) noexcept {
  switch (k) {
    case CollectiveKind::kAllReduce:
      return "allreduce";
    case CollectiveKind::kBroadcast:
      return "broadcast";
    case CollectiveKind::kAllGather:
      return "allgather";
    case CollectiveKind::kReduceScatter:
      return "reduce_scatter";
  }
  return "?";
}

bool has_reduction(CollectiveKind k) noexcept {
  return k == CollectiveKind::kAllReduce || k == CollectiveKind::kReduceScatter;
}
}  // namespace

std::string_view to_string(CollectiveKind k) noexcept {
  switch (k) {
    case CollectiveKind::kAllReduce:
      return "all_reduce";
    case CollectiveKind::kBroadcast:
      return "broadcast";
    case CollectiveKind::kAllGather:
      return "all_gather";
    case CollectiveKind::kReduceScatter:
      return "reduce_scatter";
  }
  return "?";
}

std::string describe(const CollectiveSignature& s) {
  std::string out(to_string(s.kind));
  if (has_reduction(s.kind)) out += fmt::format(" {}", runtime::to_string(s.reduce));
  out += fmt::format(" {} x{}", runtime::to_string(s.dtype), s.count);
  if (s.kind == CollectiveKind::kBroadcast) out += fmt::format(" root {}", s.root);
  if (!s.name.empty()) out += fmt::format(" '{}'", s.name);
  return out;
}

Communicator::Communicator(std::shared_ptr<runtime::Backend> backend, int device, int rank, int world_size,
                           CommunicatorOptions options)
    : backend_(std::move(backend)),
      device_(device),
      rank_(rank),
      world_size_(world_size),
      id_(g_next_id.fetch_add(1)),
      options_(options) {
  STEPGRAPH_CHECK(backend_ != nullptr, InvalidArgument, "Communicator: no backend given");
  STEPGRAPH_CHECK(world_size_ >= 1 && rank_ >= 0 && rank_ < world_size_, InvalidArgument,
                  "Communicator: rank {} of a world of {} is out of range", rank_, world_size_);
  STEPGRAPH_CHECK(options_.timeout.count() > 0, InvalidArgument,
                  "Communicator: the timeout must be positive (got {} ms)", options_.timeout.count());
  stream_ = backend_->create_stream(device_, runtime::StreamOptions{options_.stream_priority});
  fork_ = backend_->create_event(device_);
  join_ = backend_->create_event(device_);
}

Communicator::~Communicator() = default;

void Communicator::all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                              ReduceOp op) {
  all_reduce(stream, buffer, offset, count, type, op, {});
}

std::byte* Communicator::checked(const char* what, const char* role, const Buffer& buffer, std::size_t offset,
                                 std::size_t bytes, DType type) const {
  STEPGRAPH_CHECK(buffer.valid(), InvalidArgument, "{} on rank {} of communicator {}: the {} buffer handle is empty",
                  what, rank_, id_, role);
  STEPGRAPH_CHECK(buffer.device() == device_, InvalidArgument,
                  "{} on rank {} of communicator {}: the {} buffer #{} lives on {} but this rank's device is {}; "
                  "give a buffer of device {}",
                  what, rank_, id_, role, buffer.id(),
                  buffer.device() < 0 ? std::string("pinned host memory") : fmt::format("device {}", buffer.device()),
                  device_, device_);
  STEPGRAPH_CHECK(offset % runtime::dtype_size(type) == 0, InvalidArgument,
                  "{} on rank {} of communicator {}: {} offset {} is not a multiple of the {} element size {}", what,
                  rank_, id_, role, offset, runtime::to_string(type), runtime::dtype_size(type));
  STEPGRAPH_CHECK(offset <= buffer.size() && bytes <= buffer.size() - offset, InvalidArgument,
                  "{} on rank {} of communicator {}: {} bytes of {} from byte {} do not fit the {} buffer #{} of {} "
                  "bytes; give a smaller count or a larger buffer",
                  what, rank_, id_, bytes, runtime::to_string(type), offset, role, buffer.id(), buffer.size());
  return static_cast<std::byte*>(buffer.data()) + offset;
}

void Communicator::all_reduce(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                              ReduceOp op, std::string name) {
  Call c;
  c.signature = {CollectiveKind::kAllReduce, op, type, count, -1, std::move(name)};
  c.send_bytes = c.recv_bytes = count * runtime::dtype_size(type);
  c.send = c.recv = checked("all_reduce", "in-place", buffer, offset, c.send_bytes, type);
  enqueue(stream, std::move(c), {runtime::read_write(buffer, offset, c.send_bytes)});
}

void Communicator::broadcast(StreamRef stream, const Buffer& buffer, std::size_t offset, std::size_t count, DType type,
                             int root) {
  STEPGRAPH_CHECK(root >= 0 && root < world_size_, InvalidArgument,
                  "broadcast on rank {} of communicator {}: root {} is not a rank (world size {})", rank_, id_, root,
                  world_size_);
  Call c;
  c.signature = {CollectiveKind::kBroadcast, ReduceOp::kSum, type, count, root, {}};
  c.send_bytes = c.recv_bytes = count * runtime::dtype_size(type);
  c.send = c.recv = checked("broadcast", "in-place", buffer, offset, c.send_bytes, type);
  enqueue(stream, std::move(c), {runtime::read_write(buffer, offset, c.send_bytes)});
}

void Communicator::all_gather(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                              std::size_t recv_offset, std::size_t count, DType type) {
  Call c;
  c.signature = {CollectiveKind::kAllGather, ReduceOp::kSum, type, count, -1, {}};
  c.send_bytes = count * runtime::dtype_size(type);
  c.recv_bytes = c.send_bytes * static_cast<std::size_t>(world_size_);
  c.send = checked("all_gather", "send", send, send_offset, c.send_bytes, type);
  c.recv = checked("all_gather", "receive", recv, recv_offset, c.recv_bytes, type);
  check_overlap("all_gather", c, static_cast<std::size_t>(rank_) * c.send_bytes);
  enqueue(stream, std::move(c),
          {runtime::read(send, send_offset, c.send_bytes), runtime::write(recv, recv_offset, c.recv_bytes)});
}

void Communicator::reduce_scatter(StreamRef stream, const Buffer& send, std::size_t send_offset, const Buffer& recv,
                                  std::size_t recv_offset, std::size_t count, DType type, ReduceOp op) {
  Call c;
  c.signature = {CollectiveKind::kReduceScatter, op, type, count, -1, {}};
  c.recv_bytes = count * runtime::dtype_size(type);
  c.send_bytes = c.recv_bytes * static_cast<std::size_t>(world_size_);
  c.send = checked("reduce_scatter", "send", send, send_offset, c.send_bytes, type);
  c.recv = checked("reduce_scatter", "receive", recv, recv_offset, c.recv_bytes, type);
  check_overlap("reduce_scatter", c, static_cast<std::size_t>(rank_) * c.recv_bytes);
  enqueue(stream, std::move(c),
          {runtime::read(send, send_offset, c.send_bytes), runtime::write(recv, recv_offset, c.recv_bytes)});
}

void Communicator::check_overlap(const char* what, const Call& c, std::size_t in_place_at) const {
  // The two ranges may be disjoint, or in place as NCCL defines it (this
  // rank's slice of the larger buffer is the smaller one); nothing else.
  const bool gather = c.signature.kind == CollectiveKind::kAllGather;
  const std::byte* big = gather ? c.recv : c.send;
  const std::byte* small = gather ? c.send : c.recv;
  const std::size_t big_bytes = gather ? c.recv_bytes : c.send_bytes;
  const std::size_t small_bytes = gather ? c.send_bytes : c.recv_bytes;
  const bool disjoint = small + small_bytes <= big || big + big_bytes <= small;
  STEPGRAPH_CHECK(disjoint || small == big + in_place_at, InvalidArgument,
                  "{} on rank {} of communicator {}: the send and receive ranges overlap but not in place (the "
                  "smaller must be this rank's slice, at byte {} of the larger); give disjoint ranges",
                  what, rank_, id_, in_place_at);
}

void Communicator::enqueue(StreamRef stream, Call call, std::vector<runtime::BufferAccess> accesses) {
  // Formatted only when a check fails (STEPGRAPH_CHECK evaluates its
  // message arguments then): not on every call.
  const auto what = [&call] { return describe(call.signature); };
  STEPGRAPH_CHECK(stream.valid(), InvalidArgument, "{} on rank {} of communicator {}: the stream handle is empty",
                  what(), rank_, id_);
  STEPGRAPH_CHECK(stream.device() == device_, InvalidArgument,
                  "{} on rank {} of communicator {}: the stream is on device {} but this rank's device is {}", what(),
                  rank_, id_, stream.device(), device_);
  if (impl_aborted() || impl_error()) check();
  STEPGRAPH_CHECK(!aborted(), collectives::CommunicatorAborted,
                  "{} on rank {} of communicator {}: the communicator was aborted; make a new one", what(), rank_, id_);
  std::lock_guard lock(mutex_);
  const bool capturing = stream.capture_status() != runtime::CaptureStatus::kNone;
  STEPGRAPH_CHECK(capturing || !captured_, InvalidState,
                  "{} on rank {} of communicator {}: an eager collective on a communicator whose collectives were "
                  "captured; eager and captured collectives must not be mixed on one communicator (NCCL deadlocks; "
                  "Note [Eager and captured collectives]): run eager steps on a communicator of their own",
                  what(), rank_, id_);
  runtime::CollectiveCall out;
  out.name = call.signature.name;
  out.info.op = std::string(graph_op_name(call.signature.kind));
  if (has_reduction(call.signature.kind)) out.info.reduce = std::string(runtime::to_string(call.signature.reduce));
  out.info.dtype = std::string(runtime::to_string(call.signature.dtype));
  out.info.count = call.signature.count;
  out.info.communicator = id_;
  out.info.rank = rank_;
  out.info.world_size = world_size_;
  out.info.root = call.signature.root;
  out.bytes = call.send_bytes;
  out.accesses = std::move(accesses);
  implement(call, out);
  const StreamRef comm = stream_.ref();
  if (stream == comm) {
    comm.collective(std::move(out));
  } else {
    // Fork onto the communication stream and join back (Note [One order on
    // every rank]). The events are reused: a wait binds to the latest record
    // before it.
    stream.record(fork_);
    comm.wait(fork_);
    comm.collective(std::move(out));
    comm.record(join_);
    stream.wait(join_);
  }
  if (capturing) captured_ = true;
  calls_.fetch_add(1);
}

std::optional<std::string> Communicator::async_error() {
  return impl_error();
}

void Communicator::check() {
  if (auto e = impl_error()) throw_impl_error(*e);
}

void Communicator::abort(const std::string& reason) {
  if (impl_aborted()) return;
  STEPGRAPH_WARN(kRuntime, "communicator {} rank {} ({}) aborted: {}", id_, rank_, impl_name(), reason);
  impl_abort(reason);
}

bool Communicator::aborted() const {
  return impl_aborted();
}

}  // namespace stepgraph::collectives
