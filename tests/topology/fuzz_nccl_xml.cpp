// Fuzz target for the NCCL-XML reader: any input must give a Topology (and
// a cost matrix) or an InvalidArgument, never a crash, hang or other error.
//
// libFuzzer (clang): fuzz_nccl_xml -max_total_time=20 fuzz_corpus/
// Standalone (other compilers): fuzz_nccl_xml SECONDS fuzz_corpus/ runs the
// same entry point on byte-level mutations of the corpus for SECONDS.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <stepgraph/core/error.h>
#include <stepgraph/core/log.h>
#include <stepgraph/topology/cost_matrix.h>
#include <stepgraph/topology/topology.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    stepgraph::log::set_level(stepgraph::log::Level::kOff);
    return true;
  }();
  (void)quiet;
  // Only the NCCL reader: inputs that look like hwloc XML go to libhwloc,
  // whose own parser is not ours to fuzz here.
  std::string text(reinterpret_cast<const char*>(data), size);
  if (text.find("<topology") != std::string::npos) return 0;
  try {
    const auto t = stepgraph::topology::Topology::parse(text, "fuzz");
    const auto m = stepgraph::topology::CostMatrix::build(t);
    (void)m.to_nvidia_smi();
    (void)t.to_json();
    (void)t.to_nccl_xml();
  } catch (const stepgraph::InvalidArgument&) {
  }
  return 0;
}

#if defined(STEPGRAPH_FUZZ_STANDALONE)
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SECONDS CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const double seconds = std::atof(argv[1]);
  std::vector<std::string> corpus;
  for (const auto& e : std::filesystem::directory_iterator(argv[2])) {
    std::ifstream in(e.path(), std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    corpus.push_back(ss.str());
  }
  if (corpus.empty()) return 2;
  std::mt19937_64 rng(12345);
  const char* tokens[] = {"<",
                          ">",
                          "/>",
                          "\"",
                          "=",
                          "<pci busid=\"0000:00:00.0\">",
                          "</pci>",
                          "<gpu>",
                          "<nvlink target=\"x\" count=\"-1\"/>",
                          "<cpu numaid=\"7\">",
                          "</cpu>",
                          "0x",
                          "class=\"0x060400\"",
                          "link_width=\"99999999999\"",
                          "&amp;",
                          "\0"};
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long runs = 0;
  while (std::chrono::steady_clock::now() < end) {
    std::string s = corpus[rng() % corpus.size()];
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < edits && !s.empty(); ++i) {
      const std::size_t pos = rng() % s.size();
      switch (rng() % 4) {
        case 0:
          s[pos] = static_cast<char>(rng());
          break;
        case 1:
          s.erase(pos, rng() % 64);
          break;
        case 2:
          s.insert(pos, tokens[rng() % (sizeof tokens / sizeof tokens[0])]);
          break;
        default:
          s = s.substr(0, pos);
          break;
      }
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    ++runs;
  }
  std::printf("fuzz_nccl_xml: %ld inputs in %.0f s, no crash\n", runs, seconds);
  return 0;
}
#endif
