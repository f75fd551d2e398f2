// stepgraph/runtime/lowering.h — a placed StepGraph becomes one multi-stream
// backend graph, with the cross-device copies and event dependencies
// inserted (DESIGN.md 1.4, "A placed graph is lowered ...").
//
// Note [Lowering]
// IR nodes carry costs, not code, so the caller supplies a NodeEmitter that
// launches a node's real work on the stream it is given, declaring the
// buffers it touches (the resolved instances below). The lowering:
// * maps each *logical* device of the placement (an index into the
//   graphs::Platform) to a backend device through a DeviceMap. Several
//   logical devices may share one backend device (two logical devices on one
//   GPU): each logical device still has its own stream and its own arena, so
//   its buffer instances are separate memory and data moves between them by
//   copies, exactly as between two GPUs;
// * gives every byte range of every IR buffer a *home*: the logical device
//   where the range lives when a run starts (HomePolicy: by default the
//   device of the range's last writer, so that a run ends with every range
//   at home and needs no copy back; a range nobody writes lives with its
//   buffer's first user). It allocates one instance of the whole buffer on
//   every logical device that touches it or is home to part of it, from that
//   device's arena;
// * walks the nodes in one order consistent with the edges and with each
//   device's order of the placement; before a node on logical device d it
//   inserts, for every byte range the node reads whose latest version was
//   written on another logical device e, a copy e -> d after a wait on the
//   event recorded after the writing node, and a wait for every predecessor
//   (edge) placed on another logical device. The copy runs on the copy
//   stream of the pair e -> d (CopyStreams::kPerDevicePair, the default),
//   which d's stream then waits on, so it starts when its bytes are written
//   and overlaps d's other work, as the simulator's transfers do; or on d's
//   own stream right before the node (kConsumerStream). Waits already
//   implied by an earlier wait of the same stream are left out;
// * copies every range whose final version is not on its home back there at
//   the end (FinalCopies::kWriteBackToHome; never needed with the default
//   HomePolicy), so that the state after a run is the state a run starts
//   from: the executable can be launched again and again, as a training step
//   is;
// * captures all of it as ONE capture: the origin stream (logical device 0)
//   begins it and forks to the other streams through an event; every stream
//   is joined back to the origin before end_capture (CUDA Programming Guide,
//   "Creating a Graph Using Stream Capture", cross-stream dependencies).
// Why this is enough for a race-free graph: graphs::validate() guarantees that
// two nodes touching the same bytes, one writing, are ordered by a path of
// edges; every edge becomes stream order or an event wait, so a later writer
// of a range waits (transitively) for every copy that read the previous
// version, and a copy never overwrites an instance someone still reads.
// (A copy on a pair's stream is ordered only by its wait on the writer and
// by the reader's wait on it; that is enough: Note [Copy streams] in
// lowering.cpp.)
//
// Ownership: LoweredGraph owns everything it made: the arenas and buffer
// instances, the streams, the events, the Graph and its GraphExec; it keeps
// the Backend alive. Move-only.
// Thread-safety: a LoweredGraph is not synchronised; use it from one thread
// at a time (the backend it runs on is thread-safe).
// Capture: lower() runs a capture of its own and allocates memory: call it
// outside any capture. upload/read/run synchronise and may not be called
// during a capture either.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <stepgraph/graphs/graph.h>
#include <stepgraph/graphs/placement.h>
#include <stepgraph/runtime/backend.h>
#include <stepgraph/runtime/buffer.h>
#include <stepgraph/runtime/collectives_hook.h>

namespace stepgraph::runtime {

/// Logical device (index into the placement's Platform) -> backend device.
/// Several logical devices may map to one backend device.
/// Ownership: value type. Thread-safety: value. Capture: pure data.
class DeviceMap {
 public:
  DeviceMap() = default;
  explicit DeviceMap(std::vector<int> backend_device_of_logical)
      : backend_device_(std::move(backend_device_of_logical)) {}
  /// Logical device i on backend device i, for i < count.
  [[nodiscard]] static DeviceMap identity(int count);
  /// `count` logical devices, all on backend device `backend_device`.
  [[nodiscard]] static DeviceMap shared(int count, int backend_device);

  [[nodiscard]] int logical_count() const noexcept { return static_cast<int>(backend_device_.size()); }
  /// The backend device of `logical`; InvalidArgument if it has no mapping.
  [[nodiscard]] int backend_device(int logical) const;
  [[nodiscard]] const std::vector<int>& backend_devices() const noexcept { return backend_device_; }

 private:
  std::vector<int> backend_device_;
};

/// One IR access of a node, resolved to the buffer instance the node must use
/// on its logical device.
struct ResolvedAccess {
  graphs::BufferId buffer = 0;
  const Buffer* instance = nullptr;  ///< owned by the LoweredGraph; outlives the graph
  std::size_t offset = 0;            ///< bytes, into `instance` (same as the IR access)
  std::size_t bytes = 0;
  graphs::AccessMode mode = graphs::AccessMode::kRead;

  /// The device-visible address of the range (instance->data() + offset).
  [[nodiscard]] void* data() const;
  template <class T>
  [[nodiscard]] T* data() const {
    return static_cast<T*>(data());
  }
  /// The range as a launch declaration (read, write or read_write).
  [[nodiscard]] BufferAccess declare() const;
};

/// What the emitter is given for one node. Valid during the emitter call only.
struct NodeLaunch {
  graphs::NodeId node = 0;
  const graphs::Node* ir = nullptr;  ///< the IR node (name, kind, accesses)
  StreamRef stream;                  ///< the logical device's stream, capturing
  int logical_device = 0;
  int backend_device = 0;
  /// One per IR access of the node, in the node's order.
  std::vector<ResolvedAccess> accesses;

  /// Every access as a launch declaration, in order.
  [[nodiscard]] std::vector<BufferAccess> declarations() const;
};

/// Launches the node's real work on `launch.stream` (one or more launches,
/// copies, memsets), each declaring what it touches. Called during the
/// capture: it must only enqueue work (no synchronisation, no allocation).
using NodeEmitter = std::function<void(const NodeLaunch& launch)>;

/// What to do with a collective (gang) node: the lowering does not run
/// collectives itself (that is the collectives module's job).
enum class CollectiveLowering : std::uint8_t {
  kReject,               ///< InvalidArgument naming the node
  kOnLogicalDeviceZero,  ///< emit it like a kernel on logical device 0
  /// A real AllReduce on every logical device, through
  /// LoweringOptions::communicators (rank d on logical device d); rank d
  /// reduces the d-th of count equal groups of the node's accesses
  /// (Note [Collectives in a lowered graph] in lowering.cpp).
  kCommunicators,
};

/// Where each byte range lives when a run starts (and, with
/// FinalCopies::kWriteBackToHome, when it ends).
enum class HomePolicy : std::uint8_t {
  kLastWriter,  ///< the device that writes the range last in a run: no write-back copies
  kFirstUse,    ///< the device of the buffer's first user: inputs need no copy; results are written back
};

enum class FinalCopies : std::uint8_t {
  kWriteBackToHome,  ///< final versions copied to each buffer's home; replayable
  kLeaveInPlace,     ///< no copies at the end; read() finds each range where it is
};

/// Debug only: what the node reading through a skipped copy is given.
enum class SkippedCopyAccess : std::uint8_t {
  kRemoteInstance,  ///< the writer's instance: a launch declaring it touches another device's memory
  kLocalInstance,   ///< its own (stale) instance: the launch is legal, the result wrong
};

/// Which stream performs an inserted copy (Note [Copy streams] in lowering.cpp).
enum class CopyStreams : std::uint8_t {
  /// One copy stream per ordered pair of logical devices that exchange data
  /// (src -> dst, made on dst's backend device; cudaMemcpyAsync between
  /// peers may be issued on either device's stream). A copy waits only for
  /// the node that wrote its bytes and for the copies before it on the same
  /// pair, and the reading node's stream waits for the copy: the copy starts
  /// as soon as its bytes exist and overlaps the destination's compute (a
  /// copy engine beside the SMs), which is what the simulator assumes.
  kPerDevicePair,
  /// On the destination's own stream, right before the node that reads it:
  /// the copy also waits for everything before it on that stream, so copies
  /// and compute of one device run one after the other.
  kConsumerStream,
};

struct LoweringOptions {
  CollectiveLowering collectives = CollectiveLowering::kReject;
  /// kCommunicators: one per logical device (e.g. collectives::make_in_process_group).
  std::vector<std::shared_ptr<CollectiveOps>> communicators;
  DType collective_dtype = DType::kFloat32;
  ReduceOp collective_reduce = ReduceOp::kSum;
  CopyStreams copy_streams = CopyStreams::kPerDevicePair;
  HomePolicy homes = HomePolicy::kLastWriter;
  FinalCopies final_copies = FinalCopies::kWriteBackToHome;
  /// Debug only, for tests that prove copies are needed: leave out the
  /// inserted copy with this index (LoweredGraph::copies() order; only copies
  /// feeding a node can be skipped).
  std::optional<std::size_t> skip_copy_for_test;
  SkippedCopyAccess skipped_copy_access = SkippedCopyAccess::kRemoteInstance;
  /// Arena alignment of each buffer instance.
  std::size_t alignment = 256;
  /// lower() validates the graph first; the race check is what makes the
  /// lowering correct (Note [Lowering]). kSkip only for graphs already
  /// validated with it.
  graphs::RaceCheck races = graphs::RaceCheck::kCheck;
};

enum class CopyReason : std::uint8_t {
  kInput,      ///< feeds `before_node`
  kWriteBack,  ///< final version back to the buffer's home
};

/// A copy the lowering inserted.
struct InsertedCopy {
  graphs::BufferId buffer = 0;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  int src_logical = 0;
  int dst_logical = 0;
  CopyReason reason = CopyReason::kInput;
  graphs::NodeId before_node = graphs::kNoNode;  ///< kNoNode for write-backs
  bool skipped = false;                          ///< left out by skip_copy_for_test
};

/// A byte range of a buffer and the logical device it is on.
struct PlacedRange {
  std::size_t offset = 0;
  std::size_t bytes = 0;
  int logical = 0;
};

/// Per logical device counts.
struct LoweredDeviceStats {
  int logical = 0;
  int backend_device = 0;
  std::size_t nodes = 0;      ///< IR nodes emitted on this device
  std::size_t copies_in = 0;  ///< copies into this device's instances (on its stream or its pairs' copy streams)
  std::size_t bytes_in = 0;
  /// Cross-stream waits made by this device's stream and by the copy
  /// streams into it (not counting the capture's fork and join).
  std::size_t event_waits = 0;
  std::size_t instances = 0;  ///< buffer instances on this device
  std::size_t arena_bytes = 0;
};

namespace detail {
struct LoweredState;
}  // namespace detail

/// The lowered graph: a captured, instantiated multi-stream graph and what
/// it uses. Obtainable only from lower() / lower_single_device().
class LoweredGraph {
 public:
  LoweredGraph();
  explicit LoweredGraph(std::unique_ptr<detail::LoweredState> state);
  LoweredGraph(LoweredGraph&& other) noexcept;
  LoweredGraph& operator=(LoweredGraph&& other) noexcept;
  LoweredGraph(const LoweredGraph&) = delete;
  LoweredGraph& operator=(const LoweredGraph&) = delete;
  /// Waits for launched runs to finish (errors are logged, not thrown).
  ~LoweredGraph();

  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }

  /// Writes `bytes` (the whole buffer) into the instances of its homes (each
  /// range into its home's), and waits. The lowering assumes a run starts
  /// with every range on its home. InvalidArgument for a bad id or size.
  void upload(graphs::BufferId buffer, std::span<const std::byte> bytes);
  /// Sets every byte of the buffer (at its homes) to `value`, and waits.
  void fill(graphs::BufferId buffer, unsigned char value);
  /// The buffer's contents after the runs so far: each range read from the
  /// instance that holds its latest version. Waits for the runs.
  [[nodiscard]] std::vector<std::byte> read(graphs::BufferId buffer);

  /// Launches the executable once on the origin stream; returns at once.
  void launch();
  /// Waits for every launched run; DeviceFault if a device faulted.
  void synchronize();
  /// launch() then synchronize().
  void run();

  [[nodiscard]] const Graph& graph() const;
  [[nodiscard]] GraphInfo info() const;
  [[nodiscard]] const std::vector<InsertedCopy>& copies() const;
  [[nodiscard]] const std::vector<LoweredDeviceStats>& device_stats() const;
  /// Cross-device event waits in total.
  [[nodiscard]] std::size_t event_waits() const;
  /// Where the buffer's ranges live when a run starts, in offset order.
  [[nodiscard]] const std::vector<PlacedRange>& homes(graphs::BufferId buffer) const;
  /// The instance of `buffer` on `logical`, or null if that device has none.
  [[nodiscard]] const Buffer* instance(int logical, graphs::BufferId buffer) const;
  /// The stream of a logical device (the origin is logical device 0's).
  [[nodiscard]] StreamRef stream(int logical) const;
  /// The copy streams made (CopyStreams::kPerDevicePair: one per ordered
  /// pair of logical devices a copy crosses; kConsumerStream: none).
  [[nodiscard]] std::size_t copy_stream_count() const;
  [[nodiscard]] const DeviceMap& device_map() const;
  /// The order the IR nodes were emitted in.
  [[nodiscard]] const std::vector<graphs::NodeId>& emission_order() const;

 private:
  detail::LoweredState& state() const;
  std::unique_ptr<detail::LoweredState> state_;
};

/// Lowers `graph` placed by `placement` onto `backend`.
/// Throws InvalidArgument, naming the node or field, for: a raw CUDA graph
/// (origin; it carries no buffers), an invalid graph (graphs::validate), a
/// placement of another size (unplaced nodes), a node whose device is out of
/// the map or missing from its device's order, a device order that
/// contradicts the edges, a collective with CollectiveLowering::kReject, a
/// backend device the backend does not have, an empty emitter. A launch the
/// backend refuses propagates (the capture is ended and discarded).
[[nodiscard]] LoweredGraph lower(const graphs::StepGraph& graph, const graphs::Placement& placement,
                                 std::shared_ptr<Backend> backend, const DeviceMap& devices, NodeEmitter emitter,
                                 const LoweringOptions& options = {});

/// The reference lowering: every node on one logical device (on
/// `backend_device`), in topological order; no copies, no cross-device waits.
[[nodiscard]] LoweredGraph lower_single_device(const graphs::StepGraph& graph, std::shared_ptr<Backend> backend,
                                               int backend_device, NodeEmitter emitter,
                                               const LoweringOptions& options = {});

}  // namespace stepgraph::runtime
