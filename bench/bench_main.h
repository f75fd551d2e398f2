// bench_main.h — what the benchmark binaries' main()s and collective
// benchmarks share: JSON output by default, and the nccl-tests bandwidth
// counters.
// Not thread-safe: called from a benchmark's own thread. No CUDA calls.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

namespace sgbench {

/// Initialises Google Benchmark with `argv`, adding
/// --benchmark_out=<default_json> (JSON) unless the caller gave
/// --benchmark_out=..., registers through `register_all`, runs and shuts
/// down (bench/ convention: results are kept as JSON).
inline int run_with_json_default(int argc, char** argv, const std::string& default_json, void (*register_all)()) {
  std::vector<char*> args(argv, argv + argc);
  std::string out_flag = "--benchmark_out=" + default_json, fmt_flag = "--benchmark_out_format=json";
  bool has_out = false;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]).rfind("--benchmark_out=", 0) == 0) has_out = true;
  if (!has_out) {
    args.push_back(out_flag.data());
    args.push_back(fmt_flag.data());
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

/// nccl-tests' counters for an AllReduce of `bytes` per rank over `ranks`
/// (GB/s = 1e9 B/s): algbw = S / t, busbw = algbw * 2(n-1)/n.
inline void set_allreduce_bandwidth(benchmark::State& state, int ranks, std::size_t bytes) {
  const double gb = static_cast<double>(bytes) / 1e9;
  const double factor = 2.0 * (ranks - 1) / ranks;
  state.counters["algbw"] = benchmark::Counter(gb, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw"] = benchmark::Counter(gb * factor, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ranks"] = ranks;
  state.counters["bytes"] = static_cast<double>(bytes);
}

}  // namespace sgbench
