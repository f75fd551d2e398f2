// fuzz/fuzz_common.h — what every fuzz target shares.
//
// Note [What a fuzz target asserts]: an input may be rejected only with
// stepgraph::InvalidArgument (a typed error naming what is wrong). Any other
// exception escapes LLVMFuzzerTestOneInput and libFuzzer reports it as a
// crash (std::terminate), as do ASan/UBSan reports and SG_FUZZ_ASSERT: an
// accepted input that breaks a property that should hold (a round trip that
// changes the value, a dump that does not load) is a bug too.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <stepgraph/core/log.h>

namespace stepgraph::fuzz {

/// Logging off (our loggers print warnings about odd inputs); once.
inline void quiet() {
  static const bool done = [] {
    log::set_level(log::Level::kOff);
    return true;
  }();
  (void)done;
}

[[noreturn]] inline void fail(const char* what, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n%s\n", file, line, what, detail.c_str());
  std::abort();
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace stepgraph::fuzz

/// Aborts (a libFuzzer crash) with `detail` when `cond` is false.
#define SG_FUZZ_ASSERT(cond, detail) ((cond) ? (void)0 : ::stepgraph::fuzz::fail(#cond, __FILE__, __LINE__, (detail)))
