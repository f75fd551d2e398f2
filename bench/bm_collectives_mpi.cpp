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
//   BM_Mpi_Overlap/<mode>
//       a data-parallel backward of kOverlapLayers layers (issue 16, item 7):
//       layer l's host kernel spins for a calibrated time, then writes its
//       gradient (g_layer_bytes, default 1 MiB; --overlap_layer_bytes=N),
//       captured once and replayed. Modes, in this order:
//         comm     the layers' bucket AllReduces alone (one bucket per layer);
//         compute  the layers' kernels alone;
//         overlap  kernel l, then bucket l's AllReduce on the communication
//                  stream (GradientBucketer) while kernel l+1 runs;
//         serial   every kernel, then one AllReduce of every gradient.
//       The spin is set (by rank 0, broadcast) so that compute takes what
//       comm took, the case where overlap matters most; then
//       overlap / max(compute, comm) and overlap / serial are printed.
//       Run it across the shaped two-namespace link with
//       scripts/multinode.sh --bench.
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

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <stepgraph/collectives/bucketer.h>
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

// --- BM_Mpi_Overlap ----------------------------------------------------------

constexpr int kOverlapLayers = 8;
std::size_t g_layer_bytes = std::size_t{1} << 20;
std::int64_t g_spin_per_layer = 0;  // set after the comm mode, from rank 0's time
double g_spins_per_us = 0;          // calibrated at start (rank 0, broadcast)
double g_mode_us[4] = {0, 0, 0, 0};
const char* const kModes[4] = {"comm", "compute", "overlap", "serial"};

void layer_backward_host(float* grad, std::int64_t count, std::int64_t spin, float value) {
  float x = value;
  for (std::int64_t i = 0; i < spin; ++i) x = x * 0.999999f + 1e-7f;
  for (std::int64_t i = 0; i < count; ++i) grad[i] = x;
}

rt::Kernel<float*, std::int64_t, std::int64_t, float> layer_backward() {
  return {"bm.layer_backward", layer_backward_host, nullptr};
}

double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

/// The spin loop's speed in this thread's CPU time (not wall time: other
/// processes on the machine must not make the compute look slower).
double spins_per_us() {
  std::int64_t spin = 1 << 16;
  for (;;) {
    float g = 0;
    const double t0 = thread_cpu_us();
    layer_backward_host(&g, 1, spin, 1.0f);
    const double us = thread_cpu_us() - t0;
    benchmark::DoNotOptimize(g);
    if (us > 20000) return static_cast<double>(spin) / us;
    spin *= 2;
  }
}

void BM_Mpi_Overlap(benchmark::State& state) {
  const int mode = static_cast<int>(state.range(0));
  const std::size_t count = g_layer_bytes / sizeof(float), total = count * kOverlapLayers;
  auto comm = sc::make_mpi_communicator(g_backend, 0);  // collective: every rank runs this benchmark
  std::vector<sc::GradientSpec> grads;
  for (int l = kOverlapLayers - 1; l >= 0; --l)  // backward: the last layer's gradient first
    grads.push_back({.name = "layer" + std::to_string(l), .count = count});
  sc::BucketOptions bo;
  bo.first_bucket_cap_bytes = g_layer_bytes;
  bo.bucket_cap_bytes = g_layer_bytes;
  sc::GradientBucketer bucketer(sc::plan_buckets(grads, bo), comm);
  rt::Buffer storage = g_backend->allocate(0, bucketer.plan().storage_bytes);
  rt::Stream stream = g_backend->create_stream(0);
  const std::int64_t spin = mode == 0 ? 0 : g_spin_per_layer;
  auto step = [&] {
    if (mode == 3) {
      for (std::size_t g = 0; g < grads.size(); ++g) {
        const std::size_t off = bucketer.plan().gradients[g].offset;
        rt::launch(stream, layer_backward(), {.accesses = {rt::write(storage, off, g_layer_bytes)}},
                   storage.data<float>() + off / sizeof(float), static_cast<std::int64_t>(count), spin, 1.0f);
      }
      comm->all_reduce(stream, storage, 0, total, rt::DType::kFloat32, rt::ReduceOp::kAverage, "all gradients");
      return;
    }
    if (mode != 1) bucketer.begin(stream, storage);
    for (std::size_t g = 0; g < grads.size(); ++g) {
      const std::size_t off = bucketer.plan().gradients[g].offset;
      if (mode != 0)
        rt::launch(stream, layer_backward(), {.accesses = {rt::write(storage, off, g_layer_bytes)}},
                   storage.data<float>() + off / sizeof(float), static_cast<std::int64_t>(count), spin, 1.0f);
      if (mode != 1) bucketer.ready(stream, g);
    }
    if (mode != 1) bucketer.finish(stream);
  };
  rt::GraphExec exec = [&] {
    rt::CaptureSession session(stream);
    step();
    return session.end().instantiate();
  }();
  exec.launch(stream);  // untimed
  stream.synchronize();
  MPI_Barrier(MPI_COMM_WORLD);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    exec.launch(stream);
    stream.synchronize();
  }
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                    static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
  comm->check();
  g_mode_us[mode] = us;
  if (mode == 0) {
    // Compute as long as communication (rank 0's measure, for every rank).
    double per_layer_us = us / kOverlapLayers;
    MPI_Bcast(&per_layer_us, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    g_spin_per_layer = static_cast<std::int64_t>(per_layer_us * g_spins_per_us);
  }
  state.counters["layers"] = kOverlapLayers;
  state.counters["gradient_bytes"] = static_cast<double>(total * sizeof(float));
  state.SetLabel(kModes[mode]);
}

/// Ours and raw alternate size by size, with the same fixed iteration
/// counts on every rank (the collectives must pair up).
void register_overlap() {
  for (int mode = 0; mode < 4; ++mode)
    benchmark::RegisterBenchmark("BM_Mpi_Overlap", BM_Mpi_Overlap)
        ->Arg(mode)
        ->Iterations(10)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

/// Rank 0, after the overlap modes ran: the ratios of issue 16's targets.
void print_overlap() {
  const double comm = g_mode_us[0], compute = g_mode_us[1], overlap = g_mode_us[2], serial = g_mode_us[3];
  if (comm <= 0 || compute <= 0 || overlap <= 0 || serial <= 0) return;
  std::printf(
      "overlap: comm %.2f ms, compute %.2f ms, overlap %.2f ms, serial %.2f ms; overlap / max(compute, comm) = "
      "%.3f, overlap / serial = %.3f (%.0f%% faster)\n",
      comm / 1e3, compute / 1e3, overlap / 1e3, serial / 1e3, overlap / std::max(compute, comm), overlap / serial,
      (1.0 - overlap / serial) * 100.0);
}

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
    // --overlap_layer_bytes=N: BM_Mpi_Overlap's gradient per layer.
    for (auto it = args.begin(); it != args.end();) {
      const std::string a(*it);
      if (a.rfind("--overlap_layer_bytes=", 0) == 0) {
        g_layer_bytes = std::stoull(a.substr(a.find('=') + 1));
        it = args.erase(it);
      } else {
        ++it;
      }
    }
    g_spins_per_us = rank == 0 ? spins_per_us() : 0;
    MPI_Bcast(&g_spins_per_us, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    int n = static_cast<int>(args.size());
    benchmark::Initialize(&n, args.data());
    register_all();
    register_overlap();
    if (rank == 0) {
      benchmark::RunSpecifiedBenchmarks();
    } else {
      // A display reporter only: a file reporter without --benchmark_out
      // makes Google Benchmark exit with an error on this rank.
      NullReporter display;
      benchmark::RunSpecifiedBenchmarks(&display);
    }
    if (rank == 0) print_overlap();
    benchmark::Shutdown();
    g_comm.reset();  // before the MpiSession ends
    g_backend.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bm_collectives_mpi: %s\n", e.what());
    code = 1;
  }
  return code;
}
