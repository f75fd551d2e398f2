// The `stepgraph` command-line program: `stepgraph <command> [options]`.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <memory>

#include <stepgraph/core/error.h>

#include "command.h"

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
}  // namespace stepgraph::tools

int main(int argc, char** argv) {
  using namespace stepgraph::tools;
  CLI::App app{"stepgraph: capture each training step into a graph and replay it"};
  app.require_subcommand(1);
  auto& cmds = commands();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, Runner>> runners;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    runners.emplace_back(sub, c.setup(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : runners)
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
