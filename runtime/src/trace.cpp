// TraceRecorder (trace.h): spans kept in memory, written as Chrome trace
// events.
#include <stepgraph/runtime/trace.h>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <stepgraph/core/error.h>

#include "trace_launch.h"

namespace stepgraph::runtime {

std::shared_ptr<TraceRecorder> TraceRecorder::create() {
  return std::shared_ptr<TraceRecorder>(new TraceRecorder());
}

TraceRecorder::TraceRecorder() : origin_(Clock::now()) {}

int TraceRecorder::track(std::string_view name) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < tracks_.size(); ++i)
    if (tracks_[i] == name) return static_cast<int>(i);
  tracks_.emplace_back(name);
  return static_cast<int>(tracks_.size()) - 1;
}

void TraceRecorder::name_this_thread(std::string_view name) {
  const int t = track(name);
  std::lock_guard lock(mutex_);
  threads_[std::this_thread::get_id()] = t;
}

int TraceRecorder::thread_track() {
  {
    std::lock_guard lock(mutex_);
    if (auto it = threads_.find(std::this_thread::get_id()); it != threads_.end()) return it->second;
  }
  int n = 0;
  {
    std::lock_guard lock(mutex_);
    n = ++callers_;
  }
  const int t = track(fmt::format("caller thread {}", n));
  std::lock_guard lock(mutex_);
  threads_[std::this_thread::get_id()] = t;
  return t;
}

void TraceRecorder::span(int track, std::string name, std::string_view category, Clock::time_point begin,
                         Clock::time_point end, Args args) {
  std::lock_guard lock(mutex_);
  spans_.push_back(Span{track, std::move(name), std::string(category), begin, std::max(begin, end), std::move(args)});
}

std::size_t TraceRecorder::span_count() const {
  std::lock_guard lock(mutex_);
  return spans_.size();
}

// Note [Trace lanes]
// Chrome's format draws the spans of one thread as a stack: they must nest.
// Graph nodes of parallel branches overlap without nesting, so node spans
// that overlap an earlier node span of their track move to a lane track
// "<track> (parallel k)"; on a serial stream every node stays on the track,
// nested in its replay span.
std::string TraceRecorder::to_json() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names = tracks_;
  std::vector<std::size_t> order(spans_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return spans_[a].begin != spans_[b].begin ? spans_[a].begin < spans_[b].begin : spans_[a].end > spans_[b].end;
  });
  // lanes[track] = end of the last node span per lane; lane_track[track][k] = its track index
  std::map<int, std::vector<Clock::time_point>> lane_end;
  std::map<int, std::vector<int>> lane_track;
  std::vector<int> tid(spans_.size());
  for (std::size_t i : order) {
    const Span& s = spans_[i];
    tid[i] = s.track;
    if (s.category != "node") continue;
    auto& ends = lane_end[s.track];
    auto& tracks = lane_track[s.track];
    std::size_t k = 0;
    while (k < ends.size() && ends[k] > s.begin) ++k;
    if (k == ends.size()) {
      ends.push_back(s.end);
      tracks.push_back(k == 0 ? s.track : static_cast<int>(names.size()));
      if (k > 0) names.push_back(fmt::format("{} (parallel {})", names[static_cast<std::size_t>(s.track)], k));
    } else {
      ends[k] = s.end;
    }
    tid[i] = tracks[k];
  }
  auto us = [&](Clock::time_point t) { return std::chrono::duration<double, std::micro>(t - origin_).count(); };
  nlohmann::json events = nlohmann::json::array();
  events.push_back({{"ph", "M"}, {"pid", 1}, {"tid", 0}, {"name", "process_name"}, {"args", {{"name", "stepgraph"}}}});
  for (std::size_t t = 0; t < names.size(); ++t) {
    events.push_back(
        {{"ph", "M"}, {"pid", 1}, {"tid", t + 1}, {"name", "thread_name"}, {"args", {{"name", names[t]}}}});
    events.push_back(
        {{"ph", "M"}, {"pid", 1}, {"tid", t + 1}, {"name", "thread_sort_index"}, {"args", {{"sort_index", t}}}});
  }
  for (std::size_t i : order) {
    const Span& s = spans_[i];
    nlohmann::json args = nlohmann::json::object();
    for (const auto& [k, v] : s.args) args[k] = v;
    events.push_back({{"ph", "X"},
                      {"pid", 1},
                      {"tid", tid[i] + 1},
                      {"name", s.name},
                      {"cat", s.category},
                      {"ts", us(s.begin)},
                      {"dur", us(s.end) - us(s.begin)},
                      {"args", args}});
  }
  return nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump();
}

void TraceRecorder::write(const std::string& path) const {
  std::ofstream f(path);
  STEPGRAPH_CHECK(f.good(), InvalidArgument, "TraceRecorder::write: cannot open '{}' for writing", path);
  f << to_json() << '\n';
  f.close();
  STEPGRAPH_CHECK(f.good(), InvalidArgument, "TraceRecorder::write: writing '{}' failed", path);
}

}  // namespace stepgraph::runtime

namespace stepgraph::runtime::detail {
namespace {
thread_local std::shared_ptr<const LaunchTrace> tls_launch_trace;
}
std::shared_ptr<const LaunchTrace> current_launch_trace() noexcept {
  return tls_launch_trace;
}
ScopedLaunchTrace::ScopedLaunchTrace(std::shared_ptr<const LaunchTrace> t) : previous_(std::move(tls_launch_trace)) {
  tls_launch_trace = std::move(t);
}
ScopedLaunchTrace::~ScopedLaunchTrace() {
  tls_launch_trace = std::move(previous_);
}
}  // namespace stepgraph::runtime::detail
