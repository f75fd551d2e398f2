#include "cli.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>

#include <stepgraph/core/error.h>

namespace stepgraph::tools {

std::vector<CommandEntry>& commands() {
  static std::vector<CommandEntry> all;
  return all;
}

void write_output(const std::string& option, const std::string& path, const std::string& text) {
  std::ofstream f(path);
  STEPGRAPH_CHECK(f.good(), InvalidArgument, "{}: cannot open '{}' for writing", option, path);
  f << text;
  STEPGRAPH_CHECK(f.good(), InvalidArgument, "{}: writing '{}' failed", option, path);
}

Cli::Cli() : app_{"stepgraph: capture each training step into a graph and replay it"} {
  app_.require_subcommand(1);
  auto& cmds = commands();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& c : cmds) {
    CLI::App* sub = app_.add_subcommand(c.name, c.help);
    runners_.emplace_back(sub, c.setup(*sub));
  }
}

std::optional<int> Cli::parse(int argc, const char* const* argv) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app_.exit(e);
  }
  return std::nullopt;
}

std::string Cli::parsed() const {
  for (const auto& [sub, run] : runners_)
    if (sub->parsed()) return sub->get_name();
  return "";
}

int Cli::run() {
  try {
    for (auto& [sub, run] : runners_)
      if (sub->parsed()) return run();
  } catch (const stepgraph::Error& e) {
    std::fprintf(stderr, "stepgraph: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stepgraph: unexpected error: %s\n", e.what());
    return 3;
  }
  return 1;
}

int run_cli(int argc, const char* const* argv) {
  Cli cli;
  if (auto rc = cli.parse(argc, argv)) return *rc;
  return cli.run();
}

}  // namespace stepgraph::tools
