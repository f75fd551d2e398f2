// tools/command.h — how a subcommand of `stepgraph` registers itself.
//
// In cmd_foo.cpp:
//   static stepgraph::tools::Command foo{"foo", "what foo does", [](CLI::App& app) {
//     auto opts = std::make_shared<FooOptions>();
//     app.add_option("--n", opts->n, "...");
//     return [opts]() -> int { return run_foo(*opts); };   // exit code
//   }};
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace stepgraph::tools {

using Runner = std::function<int()>;
using Setup = std::function<Runner(CLI::App&)>;

struct CommandEntry {
  std::string name;
  std::string help;
  Setup setup;
};

std::vector<CommandEntry>& commands();

/// Writes `text` to `path` (the value of `option`, for the message);
/// InvalidArgument naming the option when the file cannot be written.
void write_output(const std::string& option, const std::string& path, const std::string& text);

/// Registers a subcommand at static-initialisation time.
struct Command {
  Command(std::string name, std::string help, Setup setup) {
    commands().push_back(CommandEntry{std::move(name), std::move(help), std::move(setup)});
  }
};

}  // namespace stepgraph::tools
