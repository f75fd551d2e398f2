// stepgraph/runtime/trace.h — traces of real replays in the Chrome trace
// event format (JSON; Perfetto and chrome://tracing open it).
//
// Note [Replay traces]
// What a traced StepExecutor (ExecutorOptions::trace) records:
//   - host backend, the device stream's track ("host device D stream"): per
//     replay one span "replay <step>" (category "replay"), and inside it one
//     span per graph node as it actually ran, from its worker's clock
//     (category "node"; a node of a parallel branch that overlaps another
//     goes to a lane track "host device D stream (parallel k)");
//   - both backends, "<backend> device D stream (events)": per replay a span
//     from two events recorded around the launch (category
//     "replay_events"), placed on the host clock through a reference event
//     recorded once on the idle stream (a few microseconds off). On cuda
//     this is the per-replay span (the device reports no per-node times;
//     Nsight Systems shows the kernels, and the NVTX ranges around capture,
//     instantiate and each replay);
//   - the executor's thread ("executor thread") and the callers' threads
//     ("caller thread N"): acquire, launch (warm-up, capture, instantiate,
//     replay), completion, callbacks (category "executor").
// Timestamps are microseconds of std::chrono::steady_clock since the
// recorder was created.
//
// Ownership: shared (the executor and the host backend's workers hold it
// while a traced replay runs). Thread-safety: every member is thread-safe;
// span() takes a mutex (tracing is for inspection runs, not for measuring
// the last per cent). Capture: no CUDA calls; safe during capture.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace stepgraph::runtime {

class TraceRecorder {
 public:
  using Clock = std::chrono::steady_clock;
  /// Arguments shown with a span (`"args"` of the event).
  using Args = std::vector<std::pair<std::string, std::int64_t>>;

  [[nodiscard]] static std::shared_ptr<TraceRecorder> create();
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  /// The track called `name` (a "thread" of the trace), created on first use.
  [[nodiscard]] int track(std::string_view name);
  /// The calling thread's track: its registered name, else "caller thread N".
  [[nodiscard]] int thread_track();
  /// Names the calling thread's track (the executor's thread does).
  void name_this_thread(std::string_view name);

  /// A complete span [begin, end] on `track`.
  void span(int track, std::string name, std::string_view category, Clock::time_point begin, Clock::time_point end,
            Args args = {});

  [[nodiscard]] std::size_t span_count() const;
  /// The trace as JSON: {"traceEvents": [...], "displayTimeUnit": "ms"}.
  [[nodiscard]] std::string to_json() const;
  /// Writes to_json() to `path`; InvalidArgument naming it if it cannot.
  void write(const std::string& path) const;

 private:
  TraceRecorder();
  struct Span {
    int track;
    std::string name;
    std::string category;
    Clock::time_point begin, end;
    Args args;
  };
  mutable std::mutex mutex_;
  Clock::time_point origin_;
  std::vector<std::string> tracks_;
  std::map<std::thread::id, int> threads_;
  std::vector<Span> spans_;
  int callers_ = 0;
};

}  // namespace stepgraph::runtime
