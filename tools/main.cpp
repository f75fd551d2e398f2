// The `stepgraph` command-line program: `stepgraph <command> [options]`
// (tools/cli.h; each subcommand in its cmd_*.cpp).
#include "cli.h"

int main(int argc, char** argv) {
  return stepgraph::tools::run_cli(argc, argv);
}
