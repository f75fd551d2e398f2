// Fuzz target: the command line of every `stepgraph` subcommand, through
// the same entry point as main() (tools/cli.h), in process.
//
// Input: one argument per line (argv[0] is "stepgraph"). Every input is
// parsed; a parse error or --help must return an exit code (CLI11 prints;
// nothing may call exit()). A parsed command line is also run when it is
// safe to run here (Note [CLI sandbox]): its exit code may be anything, but
// it must not crash, and no exception may escape Cli::run().
//
// Note [CLI sandbox]: a fuzzed command line may name any file to read or
// write (--dump, --out, --dot, --trace, --placement-out). So a line is run
// only when each of its arguments is an option name (`--name`, `--name=V`,
// `-x`), a number of magnitude at most kMaxNumber (sizes: a 10^9-node graph
// is not a bug), a keyword the subcommands take, or one of the file names in
// fuzz/cli_files/ or out.json, out.xml, out.dot; those names are rewritten to a private temporary
// directory holding fresh copies of those files (restored after each run).
// STEPGRAPH_TOPO_FILE points there too, so no run discovers this machine's
// topology except `stepgraph info`. `demo` (a training run per input) is
// parsed, never run.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"
#include "fuzz_common.h"

namespace {

namespace fs = std::filesystem;

constexpr double kMaxNumber = 16;
constexpr std::size_t kMaxArgs = 64;

struct SandboxFile {
  std::string content;
  fs::file_time_type written;
};

class Sandbox {
 public:
  Sandbox() {
    std::string templ = (fs::temp_directory_path() / "sg_fuzz_cli_XXXXXX").string();
    SG_FUZZ_ASSERT(::mkdtemp(templ.data()) != nullptr, "mkdtemp");
    dir_ = templ;
    for (const auto& e : fs::directory_iterator(STEPGRAPH_FUZZ_SEEDS_DIR)) {
      std::ifstream in(e.path(), std::ios::binary);
      std::ostringstream ss;
      ss << in.rdbuf();
      files_[e.path().filename().string()] = SandboxFile{ss.str(), {}};
    }
    for (auto& [name, f] : files_) write(name, f);
    ::setenv("STEPGRAPH_TOPO_FILE", (dir_ / "nccl.xml").c_str(), 1);
  }
  ~Sandbox() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  /// The argument rewritten into the sandbox, or "" when it is not safe.
  [[nodiscard]] std::string safe(const std::string& arg) const {
    static const std::set<std::string> keywords{"demo",        "env",    "graph",     "info", "place",      "topo",
                                                "transformer", "random", "forkjoin",  "heft", "heft-blind", "rr",
                                                "greedy",      "gpus",   "gpus+numa", "numa", "auto",       "host",
                                                "cuda",        "true",   "false"};
    if (arg.rfind("--", 0) == 0) {
      const auto eq = arg.find('=');
      const std::string name = arg.substr(0, eq);
      if (name.find_first_not_of("-abcdefghijklmnopqrstuvwxyz") != std::string::npos) return "";
      if (eq == std::string::npos) return arg;
      const std::string value = safe_value(arg.substr(eq + 1), keywords);
      return value.empty() ? "" : name + "=" + value;
    }
    if (arg.size() == 2 && arg[0] == '-' && arg[1] >= 'a' && arg[1] <= 'z') return arg;
    return safe_value(arg, keywords);
  }

  /// Puts back every file a run changed or removed, and removes new ones.
  void restore() {
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string name = e.path().filename().string();
      if (!files_.count(name)) fs::remove_all(e.path());
    }
    for (auto& [name, f] : files_) {
      std::error_code ec;
      if (fs::last_write_time(dir_ / name, ec) != f.written || ec || fs::file_size(dir_ / name, ec) != f.content.size())
        write(name, f);
    }
  }

 private:
  std::string safe_value(const std::string& v, const std::set<std::string>& keywords) const {
    static const std::set<std::string> outputs{"out.json", "out.xml", "out.dot"};
    if (keywords.count(v)) return v;
    if (files_.count(v) || outputs.count(v)) return (dir_ / v).string();
    if (v.empty() || v.size() > 24 || v.find_first_not_of("0123456789+-.eE") != std::string::npos) return "";
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    return (end == v.c_str() + v.size() && d >= -kMaxNumber && d <= kMaxNumber) ? v : "";
  }
  void write(const std::string& name, SandboxFile& f) {
    std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << f.content;
    f.written = fs::last_write_time(dir_ / name);
  }

  fs::path dir_;
  std::map<std::string, SandboxFile> files_;
};

std::vector<std::string> split_lines(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"stepgraph"};
  std::string cur;
  for (std::size_t i = 0; i < size && args.size() <= kMaxArgs; ++i) {
    if (data[i] == '\n') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (!cur.empty() && args.size() <= kMaxArgs) args.push_back(cur);
  return args;
}

int parse_and_maybe_run(const std::vector<std::string>& args, bool run) {
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  stepgraph::tools::Cli cli;
  if (auto rc = cli.parse(static_cast<int>(argv.size()), argv.data())) return *rc;
  if (!run || cli.parsed() == "demo") return 0;
  return cli.run();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  stepgraph::fuzz::quiet();
  static Sandbox sandbox;
  const std::vector<std::string> args = split_lines(data, size);
  std::vector<std::string> rewritten{args[0]};
  for (std::size_t i = 1; i < args.size(); ++i) {
    rewritten.push_back(sandbox.safe(args[i]));
    if (rewritten.back().empty()) {
      (void)parse_and_maybe_run(args, false);
      return 0;
    }
  }
  (void)parse_and_maybe_run(rewritten, true);
  sandbox.restore();
  return 0;
}
