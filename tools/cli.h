// tools/cli.h — the `stepgraph` command line as a class: main() calls
// run_cli(); fuzz/fuzz_cli.cpp parses and runs command lines in process.
//
// Nothing here calls exit(): a parse error, --help or a missing subcommand
// prints what CLI11 prints and returns its exit code, so that a caller (the
// fuzz target) keeps running after it.
//
// Thread-safety: none; one Cli per thread. The subcommand registry
// (command.h) is filled at static-initialisation time and sorted here.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "command.h"

namespace stepgraph::tools {

/// The `stepgraph` application with every registered subcommand.
class Cli {
 public:
  Cli();
  Cli(const Cli&) = delete;
  Cli& operator=(const Cli&) = delete;

  /// Parses `argv` (argv[0] is the program name). std::nullopt when one
  /// subcommand was parsed and is ready to run(); otherwise (a parse error,
  /// --help, no subcommand) prints as CLI11 does and returns its exit code.
  [[nodiscard]] std::optional<int> parse(int argc, const char* const* argv);
  /// The parsed subcommand's name ("" before a successful parse()).
  [[nodiscard]] std::string parsed() const;
  /// Runs the parsed subcommand: its exit code; 2 after a stepgraph::Error,
  /// 3 after another exception (the message on stderr); 1 if none was parsed.
  int run();

 private:
  CLI::App app_;
  std::vector<std::pair<CLI::App*, Runner>> runners_;
};

/// Cli::parse() then Cli::run(): what main() returns.
int run_cli(int argc, const char* const* argv);

}  // namespace stepgraph::tools
