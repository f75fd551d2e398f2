// stepgraph/core/log.h — the one logger.
//
// Levels and a subsystem mask are checked before any formatting happens, as
// NCCL does with NCCL_DEBUG / NCCL_DEBUG_SUBSYS. The library prints nothing
// to stdout; log lines go to stderr (or the sink set with set_log_sink).
//
// Thread-safety: every function here is thread-safe.
// Capture: safe to call during stream capture (makes no CUDA call).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace stepgraph::log {

enum class Level : int { kTrace = 0, kDebug = 1, kInfo = 2, kWarn = 3, kError = 4, kOff = 5 };

enum class Subsystem : std::uint32_t {
  kCore = 1u << 0,
  kTopology = 1u << 1,
  kGraphs = 1u << 2,
  kRuntime = 1u << 3,
  kCapture = 1u << 4,
  kMemory = 1u << 5,
  kCollectives = 1u << 6,
  kExecutor = 1u << 7,
  kTools = 1u << 8,
  kAll = 0xffffffffu,
};

/// Level from STEPGRAPH_LOG_LEVEL (trace|debug|info|warn|error|off; default
/// warn) and mask from STEPGRAPH_LOG_SUBSYS (comma list, or "all").
[[nodiscard]] bool enabled(Level level, Subsystem subsystem) noexcept;
void set_level(Level level) noexcept;
[[nodiscard]] Level level() noexcept;
void set_subsystems(std::uint32_t mask) noexcept;

using Sink = std::function<void(Level, Subsystem, std::string_view)>;
/// Replaces the sink (stderr by default); pass nullptr to restore it.
void set_sink(Sink sink);

void write(Level level, Subsystem subsystem, std::string_view message);

[[nodiscard]] std::string_view to_string(Level level) noexcept;
[[nodiscard]] std::string_view to_string(Subsystem subsystem) noexcept;

}  // namespace stepgraph::log

#define STEPGRAPH_LOG(lvl, subsys, ...)                                                               \
  do {                                                                                                \
    if (::stepgraph::log::enabled(::stepgraph::log::Level::lvl, ::stepgraph::log::Subsystem::subsys)) \
      ::stepgraph::log::write(::stepgraph::log::Level::lvl, ::stepgraph::log::Subsystem::subsys,      \
                              ::fmt::format(__VA_ARGS__));                                            \
  } while (0)

#define STEPGRAPH_WARN(subsys, ...) STEPGRAPH_LOG(kWarn, subsys, __VA_ARGS__)
#define STEPGRAPH_INFO(subsys, ...) STEPGRAPH_LOG(kInfo, subsys, __VA_ARGS__)
#define STEPGRAPH_DEBUG(subsys, ...) STEPGRAPH_LOG(kDebug, subsys, __VA_ARGS__)
