// bm_collectives_mpi: our MPI AllReduce against raw MPI_Allreduce on the
// same buffers in the same run (issue 16, item 7). Run under mpirun:
//
//   mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 build/bench/bm_collectives_mpi
//
//   BM_Mpi_OurAllReduce/<bytes>
//       make_mpi_communicator on a 1-device host backend (workers unbound),
//       float32 sum of <bytes> bytes in place: the call enqueued eagerly on
//       the communicator's stream, then the stream synchronised (the
//       progress thread's signature exchange and MPI_Iallreduce included).
//   BM_Mpi_RawAllReduce/<bytes>
//       MPI_Allreduce(MPI_IN_PLACE, ..., MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD)
//       on a malloc'd buffer of the same size, from the benchmark's thread.
// The two alternate size by size (ours, raw, ours, raw, ...). Every rank runs
// exactly the same benchmarks with fixed iteration counts (no estimation
// runs), so the collectives pair up across ranks; each benchmark starts with
// one untimed call and an MPI_Barrier. Times are rank 0's wall clock; only
// rank 0 reports (the others use a reporter that prints nothing).
// Counters as bm_collectives (GB/s = 1e9 B/s, nccl-tests' definitions):
// algbw = S / t, busbw = algbw * 2(n-1)/n, t the wall time (UseRealTime:
// our caller thread sleeps while the progress thread works).
//
// JSON goes to bm_collectives_mpi.json (rank 0) unless --benchmark_out is
// given.
#include <benchmark/benchmark.h>

#include <mpi.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/collectives/mpi.h>
#include <stepgraph/runtime/backend.h>

#include "bench_main.h"

namespace rt = stepgraph::runtime;
namespace sc = stepgraph::collectives;

namespace {

int g_world = 1;
std::shared_ptr<rt::Backend> g_backend;
std::shared_ptr<sc::Communicator> g_comm;

void BM_Mpi_OurAllReduce(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t count = bytes / sizeof(float);
  rt::Buffer buf = g_backend->allocate(0, bytes);
  auto& c = *g_comm;
  c.stream().memset(buf.slice(), 0);                                                 // zeros: no denormals
  c.all_reduce(c.stream(), buf, 0, count, rt::DType::kFloat32, rt::ReduceOp::kSum);  // untimed
  c.stream().synchronize();
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    c.all_reduce(c.stream(), buf, 0, count, rt::DType::kFloat32, rt::ReduceOp::kSum);
    c.stream().synchronize();
  }
  c.check();
  sgbench::set_allreduce_bandwidth(state, g_world, bytes);
}

void BM_Mpi_RawAllReduce(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const int count = static_cast<int>(bytes / sizeof(float));
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::malloc(bytes)), &std::free);
  if (!buf) {
    state.SkipWithError("malloc failed");
    return;
  }
  std::memset(buf.get(), 0, bytes);
  MPI_Allreduce(MPI_IN_PLACE, buf.get(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);  // untimed
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    const int rc = MPI_Allreduce(MPI_IN_PLACE, buf.get(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      state.SkipWithError("MPI_Allreduce failed");
      break;
    }
  }
  sgbench::set_allreduce_bandwidth(state, g_world, bytes);
}

/// Raw MPI_Iallreduce + MPI_Wait from the benchmark's thread: separates the
/// non-blocking algorithm's cost (what ours runs on) from our own.
void BM_Mpi_RawIallreduce(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const int count = static_cast<int>(bytes / sizeof(float));
  std::vector<float> buf(bytes / sizeof(float), 0.0f);
  MPI_Request req;
  MPI_Iallreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);  // untimed
  MPI_Wait(&req, MPI_STATUS_IGNORE);
  MPI_Barrier(MPI_COMM_WORLD);
  for (auto _ : state) {
    MPI_Iallreduce(MPI_IN_PLACE, buf.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
  sgbench::set_allreduce_bandwidth(state, g_world, bytes);
}

/// Ours and raw alternate size by size, with the same fixed iteration
/// counts on every rank (the collectives must pair up).
void register_all() {
  const std::vector<std::int64_t> sizes{8,       64,      512,     4 << 10,  32 << 10, 256 << 10, 1 << 20,
                                        2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20};
  for (const std::int64_t s : sizes) {
    const std::int64_t iterations = s >= (8 << 20) ? 10 : (s >= (1 << 20) ? 50 : 200);
    benchmark::RegisterBenchmark("BM_Mpi_OurAllReduce", BM_Mpi_OurAllReduce)
        ->Arg(s)
        ->Iterations(iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("BM_Mpi_RawAllReduce", BM_Mpi_RawAllReduce)
        ->Arg(s)
        ->Iterations(iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("BM_Mpi_RawIallreduce", BM_Mpi_RawIallreduce)
        ->Arg(s)
        ->Iterations(iterations)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
}

/// The reporter of ranks other than 0: runs everything, prints nothing.
class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  int code = 0;
  try {
    sc::MpiSession session(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    {
      rt::BackendOptions o;
      o.host_devices = 1;
      o.bind_workers = false;
      g_backend = rt::Backend::create(rt::BackendKind::kHost, o);
      g_comm = sc::make_mpi_communicator(g_backend, 0);  // collective: every rank, same order
    }
    benchmark::AddCustomContext("hardware_threads", std::to_string(std::thread::hardware_concurrency()));
    benchmark::AddCustomContext("mpi_ranks", std::to_string(g_world));
    {
      std::array<char, MPI_MAX_LIBRARY_VERSION_STRING> lib{};
      int len = 0;
      MPI_Get_library_version(lib.data(), &len);
      std::string v(lib.data(), static_cast<std::size_t>(len));
      if (const auto nl = v.find('\n'); nl != std::string::npos) v.resize(nl);
      benchmark::AddCustomContext("mpi_library", v);
    }
    std::vector<char*> args(argv, argv + argc);
    std::string out_flag = "--benchmark_out=bm_collectives_mpi.json", fmt_flag = "--benchmark_out_format=json";
    bool has_out = false;
    for (int i = 1; i < argc; ++i)
      if (std::string(argv[i]).rfind("--benchmark_out=", 0) == 0) has_out = true;
    if (!has_out && rank == 0) {
      args.push_back(out_flag.data());
      args.push_back(fmt_flag.data());
    }
    int n = static_cast<int>(args.size());
    benchmark::Initialize(&n, args.data());
    register_all();
    if (rank == 0) {
      benchmark::RunSpecifiedBenchmarks();
    } else {
      // A display reporter only: a file reporter without --benchmark_out
      // makes Google Benchmark exit with an error on this rank.
      NullReporter display;
      benchmark::RunSpecifiedBenchmarks(&display);
    }
    benchmark::Shutdown();
    g_comm.reset();  // before the MpiSession ends
    g_backend.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bm_collectives_mpi: %s\n", e.what());
    code = 1;
  }
  return code;
}
