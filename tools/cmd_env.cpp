// `stepgraph env`: every STEPGRAPH_* parameter declared by the linked
// modules, its default, its current value and what it does.
#include <cstdio>

#include <stepgraph/core/env.h>

#include "command.h"

namespace {
stepgraph::tools::Command env_cmd{"env", "list the STEPGRAPH_* environment parameters", [](CLI::App&) {
                                    return []() -> int {
                                      for (const auto& p : stepgraph::env::declared()) {
                                        std::printf("%-32s default=%-10s %s%s\n", p.name.c_str(),
                                                    p.default_value.c_str(), p.help.c_str(),
                                                    p.current ? (" [set: " + *p.current + "]").c_str() : "");
                                      }
                                      return 0;
                                    };
                                  }};
}  // namespace
