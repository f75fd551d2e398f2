#include <stepgraph/core/log.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>

namespace stepgraph::log {
namespace {

Level parse_level(const char* text) {
  if (text == nullptr) return Level::kWarn;
  std::string s(text);
  if (s == "trace") return Level::kTrace;
  if (s == "debug") return Level::kDebug;
  if (s == "info") return Level::kInfo;
  if (s == "warn") return Level::kWarn;
  if (s == "error") return Level::kError;
  if (s == "off") return Level::kOff;
  std::fprintf(stderr, "stepgraph: STEPGRAPH_LOG_LEVEL=%s is not one of trace|debug|info|warn|error|off; using warn\n",
               text);
  return Level::kWarn;
}

std::uint32_t parse_mask(const char* text) {
  if (text == nullptr) return static_cast<std::uint32_t>(Subsystem::kAll);
  std::uint32_t mask = 0;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    for (std::uint32_t bit = 1; bit != 0 && bit <= static_cast<std::uint32_t>(Subsystem::kTools); bit <<= 1) {
      if (to_string(static_cast<Subsystem>(bit)) == item) mask |= bit;
    }
    if (item == "all") mask = static_cast<std::uint32_t>(Subsystem::kAll);
  }
  return mask;
}

std::atomic<int> g_level{static_cast<int>(parse_level(std::getenv("STEPGRAPH_LOG_LEVEL")))};
std::atomic<std::uint32_t> g_mask{parse_mask(std::getenv("STEPGRAPH_LOG_SUBSYS"))};
std::mutex g_sink_mutex;
Sink g_sink;

}  // namespace

bool enabled(Level lvl, Subsystem subsystem) noexcept {
  return static_cast<int>(lvl) >= g_level.load(std::memory_order_relaxed) &&
         (g_mask.load(std::memory_order_relaxed) & static_cast<std::uint32_t>(subsystem)) != 0;
}
void set_level(Level lvl) noexcept {
  g_level.store(static_cast<int>(lvl));
}
Level level() noexcept {
  return static_cast<Level>(g_level.load());
}
void set_subsystems(std::uint32_t mask) noexcept {
  g_mask.store(mask);
}

void set_sink(Sink sink) {
  std::lock_guard lock(g_sink_mutex);
  g_sink = std::move(sink);
}

void write(Level lvl, Subsystem subsystem, std::string_view message) {
  std::lock_guard lock(g_sink_mutex);
  if (g_sink) {
    g_sink(lvl, subsystem, message);
    return;
  }
  std::fprintf(stderr, "[stepgraph %s %s] %.*s\n", to_string(lvl).data(), to_string(subsystem).data(),
               static_cast<int>(message.size()), message.data());
}

std::string_view to_string(Level lvl) noexcept {
  switch (lvl) {
    case Level::kTrace:
      return "trace";
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
    case Level::kOff:
      return "off";
  }
  return "?";
}

std::string_view to_string(Subsystem subsystem) noexcept {
  switch (subsystem) {
    case Subsystem::kCore:
      return "core";
    case Subsystem::kTopology:
      return "topology";
    case Subsystem::kGraphs:
      return "graphs";
    case Subsystem::kRuntime:
      return "runtime";
    case Subsystem::kCapture:
      return "capture";
    case Subsystem::kMemory:
      return "memory";
    case Subsystem::kCollectives:
      return "collectives";
    case Subsystem::kExecutor:
      return "executor";
    case Subsystem::kTools:
      return "tools";
    case Subsystem::kAll:
      return "all";
  }
  return "?";
}

}  // namespace stepgraph::log
