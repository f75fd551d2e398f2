// runtime/src/trace_launch.h — how a traced replay reaches the backend that
// runs it (Note [Replay traces], trace.h). Private to the runtime module.
//
// The executor sets the calling thread's LaunchTrace around
// GraphExec::launch; the host backend takes it into the graph run it
// enqueues, and its scheduler records each node (and the replay) on the
// LaunchTrace's track, and adds each collective node's time to its
// communicator's counter (metrics on). A launch with neither carries a null
// pointer: the scheduler's cost is one test per node.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <stepgraph/runtime/metrics.h>

#include <stepgraph/runtime/trace.h>

namespace stepgraph::runtime::detail {

struct LaunchTrace {
  std::shared_ptr<TraceRecorder> recorder;  // null: not traced (metrics only)
  int track = 0;                            // the device stream's track
  std::int64_t step = -1;                   // the executor's step number
  /// By node index: the counter of seconds of the collective node's
  /// communicator (stepgraph_collective_seconds_total), null elsewhere.
  std::shared_ptr<const std::vector<Counter*>> collective_seconds;
};

/// The LaunchTrace of the launch the calling thread is making (null: none).
[[nodiscard]] std::shared_ptr<const LaunchTrace> current_launch_trace() noexcept;

/// Sets the calling thread's LaunchTrace for its lifetime. Not copyable.
class ScopedLaunchTrace {
 public:
  explicit ScopedLaunchTrace(std::shared_ptr<const LaunchTrace> t);
  ScopedLaunchTrace(const ScopedLaunchTrace&) = delete;
  ScopedLaunchTrace& operator=(const ScopedLaunchTrace&) = delete;
  ~ScopedLaunchTrace();

 private:
  std::shared_ptr<const LaunchTrace> previous_;
};

}  // namespace stepgraph::runtime::detail
